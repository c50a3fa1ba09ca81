//! Loading, compiling and evaluating together, from YAML as users write it.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::budget::inflight::MemoryInFlight;
use crate::budget::{Stores, Tiered, decide as decide_call};
use crate::compile::resource_rules::NoCluster;
use crate::load::{compile_set, parse_text, read_paths};
use crate::testing::{FakeShared, block_on};

/// The budgets production runs: memory, beside a shared store.
pub(crate) type SidecarBudgets = Tiered<FakeShared>;

pub(crate) fn budgets() -> SidecarBudgets {
    Tiered::new(Some(FakeShared::default()))
}

pub(crate) fn set(yaml: &str) -> PolicySet {
    let (loaded, problems) = parse_text("test.yaml", yaml);
    assert!(problems.is_empty(), "{}", Problems(problems));
    compile_set(&loaded).unwrap_or_else(|p| panic!("{}", Problems(p)))
}

pub(crate) fn problems(yaml: &str) -> String {
    let (loaded, mut problems) = parse_text("test.yaml", yaml);
    if let Err(mut p) = compile_set(&loaded) {
        problems.append(&mut p);
    }
    assert!(!problems.is_empty(), "expected problems");
    Problems(problems).to_string()
}

fn call<'a>(tool: &'a str, args: &'a Value) -> ToolCall<'a> {
    ToolCall::new(tool, args)
}

/// Decides with fresh in-flight counts and no cluster knowledge.
pub(crate) fn run(
    s: &PolicySet,
    call: &ToolCall<'_>,
    counter: &SidecarBudgets,
    now: Instant,
) -> Decision {
    let in_flight = MemoryInFlight::default();
    let stores = Stores {
        budgets: counter,
        in_flight: &in_flight,
        view: &NoCluster,
    };
    block_on(decide_call(s, call, stores, now, SystemTime::now()))
}

fn decide(s: &PolicySet, tool: &str, args: Value) -> Decision {
    run(s, &call(tool, &args), &budgets(), Instant::now())
}

const CLONE_CAP: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: clone-cap, namespace: vms}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: reads
      tools: ["*_list", "*_get", pods_log]
      action: Allow
    - name: no-kube-system-reads
      tools: ["*"]
      action: Deny
      message: Ask a cluster admin instead.
      arguments:
        - {pointer: /namespace, operator: Equals, value: kube-system}
    - name: clone
      tools: [vm_clone]
      action: Allow
      arguments:
        - {pointer: /name, operator: Matches, value: "golden-.*"}
      rateLimits:
        - {requests: 3, window: 1m, key: {arguments: [/namespace]}}
    - name: delete
      tools: [resources_delete]
      action: Deny
      denyWith: JsonRpcError
"#;

#[test]
fn the_decision_order_is_deny_then_conditions_then_limits_then_allow_then_default() {
    let s = set(CLONE_CAP);
    let counter = budgets();
    let now = Instant::now();
    let run = |tool: &str, args: Value| run(&s, &call(tool, &args), &counter, now);

    let d = run("pods_list", json!({"namespace": "vms"}));
    assert_eq!(
        (d.effect, d.reason, d.rule.as_deref()),
        (Effect::Allowed, Reason::Rule, Some("reads"))
    );

    // An explicit Deny outranks an earlier Allow naming the same tool.
    let d = run("pods_list", json!({"namespace": "kube-system"}));
    assert_eq!(
        (d.effect, d.reason, d.rule.as_deref()),
        (Effect::Denied, Reason::Rule, Some("no-kube-system-reads"))
    );
    assert_eq!(
        d.message.as_deref(),
        Some(
            "Denied by tollgate policy \"vms/clone-cap\", rule \"no-kube-system-reads\": tool \"pods_list\" is denied. Ask a cluster admin instead."
        )
    );

    // Conditions of the Allow rule.
    let d = run("vm_clone", json!({"namespace": "vms", "name": "prod-db"}));
    assert_eq!(
        (d.effect, d.reason, d.rule.as_deref()),
        (Effect::Denied, Reason::Arguments, Some("clone"))
    );
    assert!(
        d.message
            .as_deref()
            .unwrap()
            .contains("argument /name must match \"golden-.*\" (got \"prod-db\")")
    );

    // Rate limits, per namespace.
    for _ in 0..3 {
        assert_eq!(
            run("vm_clone", json!({"namespace": "vms", "name": "golden-a"})).effect,
            Effect::Allowed
        );
    }
    let d = run("vm_clone", json!({"namespace": "vms", "name": "golden-a"}));
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
    assert_eq!(d.retry_after, Some(Duration::from_secs(60)));
    assert!(
        d.message
            .as_deref()
            .unwrap()
            .contains("rate limit of 3 per 1m reached; retry after 1m"),
        "{:?}",
        d.message
    );
    assert_eq!(
        run(
            "vm_clone",
            json!({"namespace": "other", "name": "golden-a"})
        )
        .effect,
        Effect::Allowed
    );

    // Default.
    let d = run("pods_exec", json!({}));
    assert_eq!(
        (d.effect, d.reason, d.rule),
        (Effect::Denied, Reason::Default, None)
    );

    // Per-rule delivery.
    assert_eq!(
        run("resources_delete", json!({})).deny_with,
        spec::DenyWith::JsonRpcError
    );
    assert_eq!(
        run("pods_exec", json!({})).deny_with,
        spec::DenyWith::ToolError
    );
}

#[test]
fn a_call_denied_for_its_arguments_spends_no_budget() {
    let s = set(CLONE_CAP);
    let counter = budgets();
    let now = Instant::now();
    let bad = json!({"namespace": "vms", "name": "nope"});
    for _ in 0..10 {
        assert_eq!(
            run(&s, &call("vm_clone", &bad), &counter, now).reason,
            Reason::Arguments
        );
    }
    let good = json!({"namespace": "vms", "name": "golden-x"});
    for _ in 0..3 {
        assert_eq!(
            run(&s, &call("vm_clone", &good), &counter, now).effect,
            Effect::Allowed
        );
    }
}

#[test]
fn a_later_allow_rule_can_accept_what_an_earlier_one_refused() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - {name: dev, tools: [scale], action: Allow, arguments: [{pointer: /namespace, operator: Equals, value: dev}]}
    - {name: prod-small, tools: [scale], action: Allow, arguments: [{pointer: /replicas, operator: Lte, value: 3}]}
"#);
    assert_eq!(
        decide(&s, "scale", json!({"namespace": "dev", "replicas": 50}))
            .rule
            .as_deref(),
        Some("dev")
    );
    assert_eq!(
        decide(&s, "scale", json!({"namespace": "prod", "replicas": 2}))
            .rule
            .as_deref(),
        Some("prod-small")
    );
    let d = decide(&s, "scale", json!({"namespace": "prod", "replicas": 9}));
    // Explained by the first Allow rule's first failing condition.
    assert_eq!(
        (d.reason, d.rule.as_deref()),
        (Reason::Arguments, Some("dev"))
    );
}

#[test]
fn policies_combine_and_deny_wins() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: baseline}
spec:
  defaultAction: Allow
  rules:
    - {name: no-deletes, tools: ["*_delete"], action: Deny}
---
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: team}
spec:
  defaultAction: Deny
  rules:
    - {name: reads, tools: ["*_list", "*_delete"], action: Allow}
"#);
    assert_eq!(decide(&s, "pods_list", json!({})).effect, Effect::Allowed);
    let d = decide(&s, "pods_delete", json!({}));
    assert_eq!(
        (d.effect, d.policy.as_deref(), d.rule.as_deref()),
        (Effect::Denied, Some("baseline"), Some("no-deletes"))
    );
    let d = decide(&s, "vm_clone", json!({}));
    assert_eq!(
        (d.effect, d.policy.as_deref(), d.reason),
        (Effect::Denied, Some("team"), Reason::Default)
    );
}

#[test]
fn a_limit_in_one_policy_is_not_spent_when_another_denies() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: a-limits}
spec:
  defaultAction: Allow
  rules:
    - {name: cap, tools: [t], action: Allow, rateLimits: [{requests: 2, window: 1h}]}
---
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: b-guard}
spec:
  defaultAction: Allow
  rules:
    - {name: only-x, tools: [t], action: Allow, arguments: [{pointer: /x, operator: Exists}]}
"#);
    let counter = budgets();
    let now = Instant::now();
    let (without, with) = (json!({}), json!({"x": 1}));
    for _ in 0..5 {
        assert_eq!(
            run(&s, &call("t", &without), &counter, now)
                .policy
                .as_deref(),
            Some("b-guard")
        );
    }
    assert_eq!(
        run(&s, &call("t", &with), &counter, now).effect,
        Effect::Allowed
    );
    assert_eq!(
        run(&s, &call("t", &with), &counter, now).effect,
        Effect::Allowed
    );
    let d = run(&s, &call("t", &with), &counter, now);
    assert_eq!(
        (d.effect, d.reason, d.policy.as_deref()),
        (Effect::Denied, Reason::RateLimit, Some("a-limits"))
    );
}

#[test]
fn audit_mode_records_but_never_blocks() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: watch}
spec:
  mode: Audit
  defaultAction: Deny
  hideDenied: true
  rules:
    - {name: reads, tools: ["*_list"], action: Allow, rateLimits: [{requests: 1, window: 1m}]}
"#);
    let counter = budgets();
    let now = Instant::now();
    let args = json!({});
    let d = run(&s, &call("pods_delete", &args), &counter, now);
    assert_eq!(
        (d.effect, d.reason, d.policy.as_deref()),
        (Effect::Audited, Reason::Default, Some("watch"))
    );
    assert!(d.forwards());
    assert_eq!(
        run(&s, &call("pods_list", &args), &counter, now).effect,
        Effect::Allowed
    );
    let d = run(&s, &call("pods_list", &args), &counter, now);
    assert_eq!((d.effect, d.reason), (Effect::Audited, Reason::RateLimit));
    // An Audit policy hides nothing: hiding is blocking.
    assert!(!s.hides("pods_delete", None, None));
}

#[test]
fn hide_denied_hides_exactly_the_tools_denied_whatever_the_arguments() {
    let s = set(CLONE_CAP);
    assert!(!s.hides("pods_list", None, None), "allowed by a rule");
    assert!(
        !s.hides("vm_clone", None, None),
        "allowed for some arguments"
    );
    assert!(
        s.hides("resources_delete", None, None),
        "unconditional Deny"
    );
    assert!(
        s.hides("pods_exec", None, None),
        "no Allow rule and default Deny"
    );
    // `no-kube-system-reads` matches every tool but has a condition.
    let open = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Allow
  hideDenied: false
  rules:
    - {name: d, tools: [x], action: Deny}
"#);
    assert!(!open.hides("x", None, None), "hideDenied is off");
}

#[test]
fn no_policies_allow_everything_and_name_no_policy() {
    let s = PolicySet::default();
    let d = decide(&s, "anything", json!({}));
    assert_eq!((d.effect, d.policy), (Effect::Allowed, None));
}

#[test]
fn keys_split_budgets_by_argument_value_and_session() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - name: t
      tools: [t]
      action: Allow
      rateLimits:
        - {requests: 1, window: 1m, key: {arguments: [/ns], session: true}}
"#);
    let counter = budgets();
    let now = Instant::now();
    let run = |args: Value, session: Option<&str>| {
        run(
            &s,
            &ToolCall {
                tool: "t",
                arguments: &args,
                session,
                meta: None,
                subject: None,
                payloads: None,
                approved: false,
            },
            &counter,
            now,
        )
        .effect
    };
    assert_eq!(run(json!({"ns": "a"}), Some("s1")), Effect::Allowed);
    assert_eq!(run(json!({"ns": "a"}), Some("s1")), Effect::Denied);
    assert_eq!(run(json!({"ns": "a"}), Some("s2")), Effect::Allowed);
    assert_eq!(run(json!({"ns": "b"}), Some("s1")), Effect::Allowed);
    assert_eq!(run(json!({}), None), Effect::Allowed);
    assert_eq!(
        run(json!({}), None),
        Effect::Denied,
        "no namespace and no session share one budget"
    );
    // 5 and 5.0 are the same key.
    assert_eq!(run(json!({"ns": 5}), Some("s1")), Effect::Allowed);
    assert_eq!(run(json!({"ns": 5.0}), Some("s1")), Effect::Denied);
}

#[test]
fn several_limits_on_one_rule_all_apply() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - name: t
      tools: [t]
      action: Allow
      rateLimits: [{requests: 2, window: 1m}, {requests: 3, window: 1d}]
"#);
    let counter = budgets();
    let t0 = Instant::now();
    let args = json!({});
    let at = |secs: u64| {
        run(
            &s,
            &call("t", &args),
            &counter,
            t0 + Duration::from_secs(secs),
        )
    };
    assert_eq!(at(0).effect, Effect::Allowed);
    assert_eq!(at(1).effect, Effect::Allowed);
    let d = at(2);
    assert!(d.message.unwrap().contains("2 per 1m"));
    assert_eq!(at(61).effect, Effect::Allowed);
    let d = at(122);
    assert_eq!(d.effect, Effect::Denied);
    assert!(
        d.message.as_deref().unwrap().contains("3 per 1d"),
        "{:?}",
        d.message
    );
    assert_eq!(d.retry_after, Some(Duration::from_secs(86_400 - 122)));
}

#[test]
fn strict_loading_names_file_path_and_fix() {
    let cases = [
        (
            "spec: {defaultAction: Deny, rulez: []}",
            "unknown field `rulez`",
        ),
        (
            "spec: {defaultAction: deny}",
            "spec.defaultAction: unknown variant `deny`, expected `Allow` or `Deny`",
        ),
        (
            "spec: {}",
            "missing field `defaultAction`: add `defaultAction: Deny`",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow}, {name: a, tools: [z], action: Allow}]}",
            "spec.rules[1].name: rule name \"a\" is used twice",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, arguments: [{pointer: /n, operator: Matches, value: '(x'}]}]}",
            "spec.rules[0].arguments[0].value: \"(x\" is not a valid regex",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, rateLimits: [{requests: 30, window: 1 minute}]}]}",
            "spec.rules[0].rateLimits[0].window: \"1 minute\" is not a duration; write whole numbers with a unit",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, rateLimits: [{requests: 0, window: 1m}]}]}",
            "spec.rules[0].rateLimits[0].requests: 0 admits nothing",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, rateLimits: [{requests: -5, window: 1m}]}]}",
            "-5 admits nothing",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Deny, rateLimits: [{requests: 5, window: 1m}]}]}",
            "spec.rules[0].rateLimits: rate limits apply to calls a rule allows",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [], action: Allow}]}",
            "list at least one tool",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: ['[x'], action: Allow}]}",
            "is not a valid glob",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: 'a b', tools: [x], action: Allow}]}",
            "not a valid rule name",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, rateLimit: []}]}",
            "spec.rules[0].rateLimit: unknown field `rateLimit`; did you mean `rateLimits`?",
        ),
        (
            "spec: {defaultAction: Deny, mode: enforce}",
            "unknown variant `enforce`, expected `Enforce` or `Audit`",
        ),
        (
            "spec: {defaultAction: Deny, selector: {matchExpressions: [{key: app, operator: Equals, values: [x]}]}}",
            "spec.selector: not a valid label selector",
        ),
        (
            "spec: {defaultAction: Deny, rules: [{name: a, tools: [x], action: Allow, rateLimits: [{requests: 5, window: 1m}, {requests: 9, window: 60s}]}]}",
            "spec.rules[0].rateLimits[1]: another limit of this rule has the same window and key",
        ),
    ];
    for (spec, want) in cases {
        let yaml = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\n{spec}\n"
        );
        let got = problems(&yaml);
        assert!(got.starts_with("test.yaml: "), "{got}");
        assert!(got.contains(want), "for {spec}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn policies_need_kubernetes_names() {
    let doc = |metadata: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {metadata}\nspec: {{defaultAction: Deny}}\n"
        )
    };
    assert!(
        problems(&doc("{namespace: vms}")).contains("metadata.name: metadata.name is required")
    );
    assert!(problems(&doc("{name: a/b}")).contains("\"a/b\" is not a valid Kubernetes name"));
    assert!(problems(&doc("{name: Caps}")).contains("not a valid Kubernetes name"));
    assert!(
        problems(&doc("{name: ok, namespace: a.b}"))
            .contains("metadata.namespace: \"a.b\" is not a valid Kubernetes name")
    );
    assert_eq!(
        set(&doc("{name: ok.v2, namespace: team-a}")).policies()[0]
            .name
            .as_ref(),
        "team-a/ok.v2"
    );
    for bad in ["a..b", "a-.b", "-a", "a.", "a_b"] {
        assert!(
            problems(&doc(&format!("{{name: \"{bad}\"}}")))
                .contains("is not a valid Kubernetes name"),
            "{bad}"
        );
    }
    assert!(
        problems(&doc("{name: ok, namespace: \"\"}")).contains("must not be empty; leave it out")
    );
}

#[test]
fn list_sizes_are_bounded_like_the_crd() {
    let limits: Vec<String> = (1..=17)
        .map(|i| format!("{{requests: 5, window: {i}m}}"))
        .collect();
    let yaml = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n    - {{name: a, tools: [x], action: Allow, rateLimits: [{}]}}\n",
        limits.join(", ")
    );
    assert!(
        problems(&yaml)
            .contains("spec.rules[0].rateLimits: 17 rate limits; at most 16 are allowed"),
        "{}",
        problems(&yaml)
    );
}

#[test]
fn null_is_a_value_to_compare_with() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - {name: a, tools: [t], action: Allow, arguments: [{pointer: /x, operator: Equals, value: null}]}
"#);
    assert_eq!(decide(&s, "t", json!({"x": null})).effect, Effect::Allowed);
    assert_eq!(decide(&s, "t", json!({"x": 1})).effect, Effect::Denied);
}

#[test]
fn limits_keep_their_budget_when_reordered_or_tightened() {
    let counter = budgets();
    let now = Instant::now();
    let args = json!({"a": 1, "b": 2});
    let before = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - name: t
      tools: [t]
      action: Allow
      rateLimits: [{requests: 2, window: 1m, key: {arguments: [/a, /b]}}]
"#);
    for _ in 0..2 {
        assert_eq!(
            run(&before, &call("t", &args), &counter, now).effect,
            Effect::Allowed
        );
    }
    // A new limit in front, the key pointers swapped, the count raised by one.
    let after = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - name: t
      tools: [t]
      action: Allow
      rateLimits: [{requests: 100, window: 1d}, {requests: 3, window: 1m, key: {arguments: [/b, /a]}}]
"#);
    assert_eq!(
        run(&after, &call("t", &args), &counter, now).effect,
        Effect::Allowed
    );
    assert_eq!(
        run(&after, &call("t", &args), &counter, now).reason,
        Reason::RateLimit
    );
}

#[test]
fn a_policy_wide_deny_with_covers_default_denials() {
    let s = set(r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  denyWith: JsonRpcError
  rules:
    - {name: a, tools: [a], action: Deny}
    - {name: b, tools: [b], action: Deny, denyWith: ToolError}
"#);
    assert_eq!(
        decide(&s, "zzz", json!({})).deny_with,
        spec::DenyWith::JsonRpcError
    );
    assert_eq!(
        decide(&s, "a", json!({})).deny_with,
        spec::DenyWith::JsonRpcError
    );
    assert_eq!(
        decide(&s, "b", json!({})).deny_with,
        spec::DenyWith::ToolError
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let got = problems(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p}
spec:
  defaultAction: Deny
  rules:
    - {name: a, tools: [x], action: Allow, rateLimits: [{requests: 0, window: 1x}]}
    - {name: a, tools: ['{'], action: Allow}
---
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: q}
spec:
  defaultAction: deny
  rules:
    - {name: b, tools: [x], action: Permit, argument: [], arguments: [{pointer: ns, operator: Exists}]}
"#,
    );
    for want in [
        "test.yaml (document 1, policy \"p\"): spec.rules[0].rateLimits[0].requests",
        "spec.rules[0].rateLimits[0].window",
        "spec.rules[1].name",
        "spec.rules[1].tools[0]",
        "test.yaml (document 2): spec.defaultAction: unknown variant `deny`",
        "test.yaml (document 2): spec.rules[0].action: unknown variant `Permit`",
        "test.yaml (document 2): spec.rules[0].argument: unknown field `argument`; did you mean `arguments`?",
        "test.yaml (document 2): spec.rules[0].arguments[0].pointer: \"ns\" is not a JSON pointer",
    ] {
        assert!(got.contains(want), "missing {want:?} in\n{got}");
    }
}

#[test]
fn yaml_duplicate_keys_and_syntax_errors_are_refused() {
    let dup = "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n  defaultAction: Allow\n  defaultAction: Deny\n";
    assert!(
        problems(dup).contains("not valid YAML"),
        "{}",
        problems(dup)
    );
    let broken = "apiVersion: [\n";
    assert!(problems(broken).contains("not valid YAML"));
}

#[test]
fn files_directories_and_duplicate_policy_names() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: {name}}}\nspec: {{defaultAction: Deny}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), doc("one")).unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        format!("{}---\n{}", doc("two"), doc("three")),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    let (loaded, problems) = read_paths(&[dir.path().to_owned()]);
    assert!(problems.is_empty(), "{}", Problems(problems));
    let names: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["one", "two", "three"]);

    std::fs::write(dir.path().join("c.yaml"), doc("one")).unwrap();
    let err = Problems(read_paths(&[dir.path().to_owned()]).1).to_string();
    assert!(
        err.contains("c.yaml: metadata.name: policy \"one\" is also defined in"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = Problems(read_paths(&[empty.path().to_owned()]).1).to_string();
    assert!(err.contains("no .yaml, .yml or .json files"), "{err}");
    let err = Problems(read_paths(&[PathBuf::from("/nonexistent/p.yaml")]).1).to_string();
    assert!(err.contains("/nonexistent/p.yaml: cannot read"), "{err}");
}

#[test]
fn the_version_follows_content_not_layout() {
    let a = set(CLONE_CAP);
    let b = set(&CLONE_CAP.replace(
        "message: Ask a cluster admin instead.",
        "message:   Ask a cluster admin instead.",
    ));
    assert_eq!(a.version(), b.version());
    let c = set(&CLONE_CAP.replace("requests: 3", "requests: 4"));
    assert_ne!(a.version(), c.version());
}

/// Example directories hold Kubernetes objects of every kind (skipped when
/// loaded) and policy tests; the files with a policy in them must load.
fn is_policy(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.contains("kind: McpToolPolicy\n") || t.contains("kind: ClusterMcpToolPolicy\n")
    })
}

#[test]
fn the_shipped_examples_compile() {
    // The repository root, two levels above this crate.
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("examples"), root.join("docs/examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") && is_policy(&path) {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty());
    for f in files {
        if let Err(p) = load::load(std::slice::from_ref(&f)) {
            panic!("{}: {}", f.display(), Problems(p));
        }
    }
}

const PER_CALLER: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: agents, namespace: vms}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: no-ci-deletes
      tools: [pods_delete]
      subjects: ["system:serviceaccount:ci:*"]
      action: Deny
    - name: ops-deletes
      tools: [pods_delete]
      subjects: [ops-*]
      action: Allow
    - name: clones
      tools: [vm_clone]
      action: Allow
      rateLimits:
        - {requests: 1, window: 1m, key: {subject: true}}
"#;

fn as_caller<'a>(tool: &'a str, args: &'a Value, subject: Option<&'a str>) -> ToolCall<'a> {
    ToolCall {
        subject,
        ..ToolCall::new(tool, args)
    }
}

#[test]
fn subjects_restrict_rules_to_callers() {
    let s = set(PER_CALLER);
    let args = json!({});
    let d = |subject| {
        run(
            &s,
            &as_caller("pods_delete", &args, subject),
            &budgets(),
            Instant::now(),
        )
    };
    assert_eq!(d(Some("ops-alice")).effect, Effect::Allowed);
    let ci = d(Some("system:serviceaccount:ci:runner"));
    assert_eq!(
        (ci.effect, ci.rule.as_deref()),
        (Effect::Denied, Some("no-ci-deletes"))
    );
    // Neither rule is for a caller without a token: the Allow rule's
    // requirement fails, and the message says why.
    let anonymous = d(None);
    assert_eq!(
        (anonymous.effect, anonymous.reason),
        (Effect::Denied, Reason::Arguments)
    );
    assert!(
        anonymous
            .message
            .as_deref()
            .unwrap()
            .contains("carries no verified identity"),
        "{anonymous:?}"
    );
    let other = d(Some("dev-bob"));
    assert!(
        other
            .message
            .as_deref()
            .unwrap()
            .contains("\"dev-bob\" is not one of \"ops-*\""),
        "{other:?}"
    );
}

#[test]
fn a_subject_key_gives_each_caller_its_own_budget() {
    let s = set(PER_CALLER);
    let counter = budgets();
    let now = Instant::now();
    let args = json!({});
    let clone = |subject| run(&s, &as_caller("vm_clone", &args, subject), &counter, now).effect;
    assert_eq!(clone(Some("a")), Effect::Allowed);
    assert_eq!(clone(Some("a")), Effect::Denied);
    assert_eq!(clone(Some("b")), Effect::Allowed, "b has its own budget");
    assert_eq!(clone(None), Effect::Allowed, "anonymous callers share one");
    assert_eq!(clone(None), Effect::Denied);
}

#[test]
fn tools_list_hides_per_caller() {
    let s = set(PER_CALLER);
    assert!(!s.hides("pods_delete", None, Some("ops-alice")));
    assert!(s.hides("pods_delete", None, Some("system:serviceaccount:ci:runner")));
    assert!(
        s.hides("pods_delete", None, Some("dev-bob")),
        "no rule allows bob"
    );
    assert!(s.hides("pods_delete", None, None));
    assert!(!s.hides("vm_clone", None, None));
}

/// A policy named `p` (default Deny) with these rules (YAML list items).
fn with_rules(rules: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n{rules}"
    )
}

#[test]
fn store_settings_are_checked() {
    let p = problems(&with_rules(
        r#"
    - name: r
      tools: [t]
      action: Allow
      subjects: ["", "a["]
      rateLimits:
        - {requests: 1, window: 1m, onStoreError: LocalFallback}
"#,
    ));
    assert!(p.contains("rules[0].rateLimits[0].onStoreError"), "{p}");
    assert!(p.contains("scope: Shared"), "{p}");
    assert!(
        p.contains("rules[0].subjects[0]") && p.contains("cannot be empty"),
        "{p}"
    );
    assert!(p.contains("rules[0].subjects[1]"), "{p}");
    let p = problems(&with_rules(
        r#"
    - {name: r, tools: [t], action: Allow, rateLimits: [{requests: 1, window: 1h, scope: Everywhere}]}
"#,
    ));
    assert!(
        p.contains("rateLimits[0].scope") && p.contains("expected `Pod` or `Shared`"),
        "{p}"
    );
    let ok = set(&with_rules(
        r#"
    - name: r
      tools: [t]
      action: Allow
      rateLimits:
        - {requests: 5, window: 1m, scope: Shared, onStoreError: LocalFallback}
        - {requests: 50, window: 1h, scope: Shared}
        - {requests: 9, window: 1d}
"#,
    ));
    let limits: Vec<(bool, bool)> = ok.policies()[0].rules()[0]
        .limits
        .iter()
        .map(|l| (l.limit.shared, l.limit.local_fallback))
        .collect();
    assert_eq!(limits, [(true, true), (true, false), (false, false)]);
}
