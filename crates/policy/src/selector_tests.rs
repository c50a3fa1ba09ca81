//! `toolSelector` end to end in the engine, with kubernetes-mcp-server
//! 0.0.67's own description of its tools: rules that name tools by what
//! they do keep covering tools the server adds, and fail closed on what it
//! does not state.

use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::budget::inflight::MemoryInFlight;
use crate::budget::{Stores, Tiered, decide};
use crate::compile::resource_rules::NoCluster;
use crate::resources::ToolMeta;
use crate::testing::{FakeShared, block_on, kms_meta, problems, set};

/// Reads allowed, writes capped, destructive denied.
const BASELINE: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: by-behaviour}
spec:
  defaultAction: Deny
  hideDenied: true
  rules:
    - name: destructive
      toolSelector: {destructive: true}
      action: Deny
    - name: reads
      toolSelector: {readOnly: true}
      action: Allow
    - name: writes
      toolSelector: {readOnly: false, destructive: false}
      action: Allow
      rateLimits: [{requests: 2, window: 1h}]
"#;

/// A policy named `p` with `defaultAction` and one rule per line of `rules`.
fn policy(default_action: &str, rules: &[&str]) -> String {
    let mut doc = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: {default_action}\n  rules:\n"
    );
    for rule in rules {
        doc.push_str(&format!("    - {rule}\n"));
    }
    doc
}

fn decide_with(
    s: &PolicySet,
    tool: &str,
    meta: Option<&ToolMeta>,
    budgets: &Tiered<FakeShared>,
) -> Decision {
    let args = json!({"namespace": "vms"});
    let mut call = ToolCall::new(tool, &args);
    call.meta = meta;
    let stores = Stores {
        budgets,
        in_flight: &MemoryInFlight::default(),
        view: &NoCluster,
    };
    block_on(decide(s, &call, stores, Instant::now(), SystemTime::now()))
}

fn outcome(d: &Decision) -> (Effect, Reason, Option<&str>) {
    (d.effect, d.reason, d.rule.as_deref())
}

#[test]
fn reads_are_allowed_writes_capped_and_destructive_tools_denied() {
    let s = set(BASELINE);
    let budgets = Tiered::new(Some(FakeShared::default()));
    let d = |tool: &str| decide_with(&s, tool, Some(&kms_meta(tool)), &budgets);
    for read in ["pods_list", "resources_get", "vm_guest_info"] {
        assert_eq!(
            outcome(&d(read)),
            (Effect::Allowed, Reason::Rule, Some("reads")),
            "{read}"
        );
    }
    // vm_clone says readOnlyHint false, destructiveHint true.
    for destructive in ["vm_clone", "pods_delete", "resources_create_or_update"] {
        assert_eq!(
            outcome(&d(destructive)),
            (Effect::Denied, Reason::Rule, Some("destructive")),
            "{destructive}"
        );
    }
    // pods_run: a write that destroys nothing, twice an hour.
    for _ in 0..2 {
        assert_eq!(
            outcome(&d("pods_run")),
            (Effect::Allowed, Reason::Rule, Some("writes"))
        );
    }
    assert_eq!(
        outcome(&d("pods_run")),
        (Effect::Denied, Reason::RateLimit, Some("writes"))
    );
}

#[test]
fn a_tool_the_server_adds_is_covered_by_the_rule_that_fits_it() {
    let s = set(BASELINE);
    let budgets = Tiered::new(Some(FakeShared::default()));
    let added = |annotations: Value| {
        ToolMeta::from_tool(&json!({"name": "new_tool", "annotations": annotations}))
    };
    let d = |meta: &ToolMeta| outcome(&decide_with(&s, "new_tool", Some(meta), &budgets)).0;
    assert_eq!(d(&added(json!({"readOnlyHint": true}))), Effect::Allowed);
    assert_eq!(
        d(&added(
            json!({"readOnlyHint": false, "destructiveHint": true})
        )),
        Effect::Denied
    );
    // No hints: the specification's defaults, destructive.
    assert_eq!(d(&added(json!({}))), Effect::Denied);
    assert!(s.hides("new_tool", Some(&added(json!({}))), None));
    assert!(!s.hides("pods_list", Some(&kms_meta("pods_list")), None));
}

#[test]
fn a_tool_the_server_did_not_list_fails_closed() {
    let s = set(BASELINE);
    let budgets = Tiered::new(Some(FakeShared::default()));
    // The Deny rule cannot rule it out, so it denies.
    let d = decide_with(&s, "pods_list", None, &budgets);
    assert_eq!(
        outcome(&d),
        (Effect::Denied, Reason::Rule, Some("destructive"))
    );
    // An Allow rule alone cannot allow it, whatever the default.
    let s = set(&policy(
        "Allow",
        &[
            "{name: reads, toolSelector: {readOnly: true}, action: Allow, rateLimits: [{requests: 5, window: 1m}]}",
        ],
    ));
    let d = decide_with(&s, "unlisted", None, &budgets);
    assert_eq!(
        outcome(&d),
        (Effect::Denied, Reason::Arguments, Some("reads"))
    );
    assert!(
        d.message.as_deref().unwrap().contains("does not list"),
        "{d:?}"
    );
    // Listed and not read-only: not the rule's business, the default allows.
    let d = decide_with(&s, "pods_delete", Some(&kms_meta("pods_delete")), &budgets);
    assert_eq!(outcome(&d), (Effect::Allowed, Reason::Default, None));
}

#[test]
fn rbac_verbs_select_what_a_tool_does_in_kubernetes() {
    let s = set(&policy(
        "Allow",
        &[
            "{name: changes, toolSelector: {rbacVerbs: [create, update, patch, delete]}, action: Deny}",
        ],
    ));
    let budgets = Tiered::new(Some(FakeShared::default()));
    let d = |tool: &str| outcome(&decide_with(&s, tool, Some(&kms_meta(tool)), &budgets)).0;
    assert_eq!(d("pods_list"), Effect::Allowed);
    assert_eq!(d("configuration_view"), Effect::Allowed);
    assert_eq!(d("vm_clone"), Effect::Denied);
    assert_eq!(d("resources_scale"), Effect::Denied);
    // A server that states no verbs: unknown, so the Deny rule holds.
    let silent = ToolMeta::from_tool(&json!({"name": "x", "annotations": {"readOnlyHint": true}}));
    assert_eq!(
        decide_with(&s, "x", Some(&silent), &budgets).effect,
        Effect::Denied
    );
}

#[test]
fn tools_and_a_selector_together_narrow_each_other() {
    let s = set(&policy(
        "Allow",
        &[
            r#"{name: vm-destructive, tools: ["vm_*"], toolSelector: {destructive: true}, action: Deny}"#,
        ],
    ));
    let budgets = Tiered::new(Some(FakeShared::default()));
    let d = |tool: &str| outcome(&decide_with(&s, tool, Some(&kms_meta(tool)), &budgets)).0;
    assert_eq!(d("vm_clone"), Effect::Denied);
    assert_eq!(d("vm_guest_info"), Effect::Allowed);
    assert_eq!(d("pods_delete"), Effect::Allowed);
}

#[test]
fn selector_rules_need_the_catalogue_before_deciding() {
    let s = set(BASELINE);
    assert!(s.needs_any_catalog() && s.needs_catalog("anything"));
    let names_only = set(&policy("Deny", &["{name: r, tools: [x], action: Allow}"]));
    assert!(!names_only.needs_any_catalog());
}

#[test]
fn selectors_are_checked() {
    let doc = |rule: &str| policy("Deny", &[rule]);
    for (rule, want) in [
        (
            "{name: r, toolSelector: {}, action: Deny}",
            "spec.rules[0].toolSelector: an empty toolSelector selects every tool",
        ),
        (
            "{name: r, toolSelector: {readOnly: true, destructive: false}, action: Allow}",
            "spec.rules[0].toolSelector.destructive: `destructive` describes tools that change things",
        ),
        (
            "{name: r, toolSelector: {rbacVerbs: [DELETE]}, action: Deny}",
            "spec.rules[0].toolSelector.rbacVerbs[0]: \"DELETE\" is not a Kubernetes verb",
        ),
        (
            "{name: r, action: Deny}",
            "spec.rules[0].tools: list at least one tool name or glob",
        ),
    ] {
        let got = problems(&doc(rule));
        assert!(got.contains(want), "{rule}\n{got}");
    }
}
