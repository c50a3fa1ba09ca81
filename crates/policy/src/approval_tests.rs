//! `RequireApproval` in the engine: which calls wait for a person, what they
//! spend (nothing, until let through), and what an approval is bound to.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::evaluate::approval::{Caller, arguments_digest, caller_of};
use crate::tests::{budgets, problems, run, set};

/// The kubevirt example's shape: golden clones capped, others need a person.
const CLONES: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: clones, namespace: vms}
spec:
  defaultAction: Deny
  rules:
    - name: no-kube-system
      tools: ["*"]
      action: Deny
      arguments:
        - {pointer: /namespace, operator: Equals, value: kube-system}
    - name: golden
      tools: [vm_clone]
      action: Allow
      arguments:
        - {pointer: /name, operator: Matches, value: "golden-.*"}
      rateLimits:
        - {requests: 30, window: 1m}
    - name: others
      tools: [vm_clone]
      action: RequireApproval
      approval: {timeout: 30m, holdFor: 1m, minApprovals: 2, approvers: {groups: [vm-admins]}}
      rateLimits:
        - {requests: 1, window: 1m}
"#;

fn clone_args(name: &str) -> Value {
    json!({"namespace": "vms", "name": name, "targetName": "copy"})
}

#[test]
fn a_require_approval_rule_holds_the_call_and_spends_nothing_until_approved() {
    let s = set(CLONES);
    let b = budgets();
    let now = Instant::now();
    let args = clone_args("web-1");
    // The limit admits one call a minute; waiting calls must not use it up.
    for _ in 0..3 {
        let d = run(&s, &ToolCall::new("vm_clone", &args), &b, now);
        assert_eq!(d.effect, Effect::ApprovalRequired);
        assert_eq!(d.reason, Reason::Approval);
        assert_eq!(d.rule.as_deref(), Some("others"));
        assert!(!d.forwards());
        let a = d.approval.as_deref().expect("approval settings");
        assert_eq!(a.min_approvals, 2);
        assert_eq!(a.hold_for, Duration::from_secs(60));
        assert_eq!(a.timeout, Duration::from_secs(1800));
    }
    let approved = ToolCall {
        approved: true,
        ..ToolCall::new("vm_clone", &args)
    };
    let d = run(&s, &approved, &b, now);
    assert_eq!(d.effect, Effect::Allowed, "{d:?}");
    assert_eq!(d.rule.as_deref(), Some("others"));
    // Let through, the call spent the rule's budget: a second approved call
    // in the same minute is refused by the limit, not queued.
    let d = run(&s, &approved, &b, now);
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
}

#[test]
fn deny_rules_and_allow_rules_come_before_approval() {
    let s = set(CLONES);
    let b = budgets();
    let golden = clone_args("golden-1");
    let d = run(&s, &ToolCall::new("vm_clone", &golden), &b, Instant::now());
    assert_eq!(
        (d.effect, d.rule.as_deref()),
        (Effect::Allowed, Some("golden"))
    );
    let system = json!({"namespace": "kube-system", "name": "web", "targetName": "x"});
    for approved in [false, true] {
        let call = ToolCall {
            approved,
            ..ToolCall::new("vm_clone", &system)
        };
        let d = run(&s, &call, &b, Instant::now());
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Denied, Some("no-kube-system")),
            "an approval never lifts a Deny rule"
        );
    }
}

#[test]
fn an_audit_policy_asks_for_no_approval() {
    let s = set(&CLONES.replace("defaultAction: Deny", "mode: Audit\n  defaultAction: Deny"));
    let args = clone_args("web-1");
    let d = run(
        &s,
        &ToolCall::new("vm_clone", &args),
        &budgets(),
        Instant::now(),
    );
    assert!(d.forwards(), "{d:?}");
    assert_ne!(d.effect, Effect::ApprovalRequired);
}

#[test]
fn approval_defaults_and_bounds_are_checked() {
    let yaml = |approval: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p}}\nspec:\n  defaultAction: Deny\n  rules:\n    - name: r\n      tools: [t]\n      action: RequireApproval\n{approval}"
        )
    };
    let s = set(&yaml(""));
    let d = run(
        &s,
        &ToolCall::new("t", &Value::Null),
        &budgets(),
        Instant::now(),
    );
    let a = d.approval.expect("defaults");
    assert_eq!(a.timeout, Duration::from_secs(15 * 60));
    assert_eq!(a.hold_for, Duration::ZERO);
    assert_eq!(a.min_approvals, 1);
    assert!(!a.digest_arguments);
    assert!(
        a.lists("anyone", &[]),
        "no approvers listed: RBAC alone decides"
    );

    for (settings, expected) in [
        ("      approval: {holdFor: 20m, timeout: 1h}", "at most 10m"),
        (
            "      approval: {holdFor: 5m, timeout: 1m}",
            "longer than the approval's timeout",
        ),
        ("      approval: {timeout: 8d}", "at most 7d"),
        ("      approval: {minApprovals: 0}", "not between 1 and 10"),
        ("      approval: {timeout: soon}", "not a duration"),
        (
            "      approval: {approvers: {users: [\"\"]}}",
            "cannot be empty",
        ),
    ] {
        let text = problems(&yaml(settings));
        assert!(text.contains(expected), "{settings}: {text}");
    }
    let on_allow = yaml("      approval: {minApprovals: 2}").replace("RequireApproval", "Allow");
    assert!(problems(&on_allow).contains("action: RequireApproval"));
}

#[test]
fn listed_approvers_are_users_or_group_members() {
    let s = set(CLONES);
    let args = clone_args("web");
    let d = run(
        &s,
        &ToolCall::new("vm_clone", &args),
        &budgets(),
        Instant::now(),
    );
    let a = d.approval.expect("settings");
    assert!(a.lists("ann", &["vm-admins".to_owned()]));
    assert!(!a.lists("bob", &["developers".to_owned()]));
}

#[test]
fn a_fingerprint_binds_tool_arguments_caller_pod_and_rule() {
    let args = json!({"namespace": "vms", "name": "web", "n": 5});
    let base = ToolCall {
        subject: Some("agent-a"),
        session: Some("s1"),
        ..ToolCall::new("vm_clone", &args)
    };
    let fp = |call: &ToolCall<'_>, pod: Option<&str>, rule: &str| {
        fingerprint("vms/clones", rule, call, pod)
    };
    let mine = fp(&base, Some("pod-1"), "others");
    assert_eq!(Fingerprint::parse(mine.as_str()), Some(mine.clone()));

    // The same call, spelled differently or in another session of the same
    // verified caller, is the same call.
    let reordered = json!({"n": 5.0, "name": "web", "namespace": "vms"});
    let same = ToolCall {
        session: Some("s2"),
        ..ToolCall {
            arguments: &reordered,
            ..base
        }
    };
    assert_eq!(fp(&same, Some("pod-1"), "others"), mine);

    let other_args = json!({"namespace": "vms", "name": "web", "n": 6});
    let differs = [
        fp(
            &ToolCall {
                arguments: &other_args,
                ..base
            },
            Some("pod-1"),
            "others",
        ),
        fp(
            &ToolCall {
                subject: Some("agent-b"),
                ..base
            },
            Some("pod-1"),
            "others",
        ),
        fp(
            &ToolCall {
                tool: "vm_start",
                ..base
            },
            Some("pod-1"),
            "others",
        ),
        fp(&base, Some("pod-2"), "others"),
        fp(&base, None, "others"),
        fp(&base, Some("pod-1"), "golden"),
    ];
    for (i, other) in differs.iter().enumerate() {
        assert_ne!(*other, mine, "variant {i} must not share the approval");
    }
}

#[test]
fn without_a_verified_identity_the_session_is_the_caller() {
    let args = json!({});
    let in_session = |s| ToolCall {
        session: s,
        ..ToolCall::new("t", &args)
    };
    assert_eq!(
        caller_of(&in_session(Some("s1"))),
        Caller::Session("s1".into())
    );
    assert_eq!(caller_of(&in_session(None)), Caller::Anonymous);
    assert_eq!(caller_of(&in_session(None)).subject(), None);
    assert_ne!(
        fingerprint("p", "r", &in_session(Some("s1")), None),
        fingerprint("p", "r", &in_session(Some("s2")), None)
    );
}

#[test]
fn fingerprints_are_refused_unless_well_formed() {
    for text in ["", "abc", &"G".repeat(32), &"A".repeat(32), &"a".repeat(33)] {
        assert_eq!(Fingerprint::parse(text), None, "{text:?}");
    }
    let d = arguments_digest(&json!({"b": 1, "a": [1.0]}));
    assert_eq!(d, arguments_digest(&json!({"a": [1], "b": 1})));
    assert_eq!(d.len(), 64);
}

#[test]
fn a_rules_own_webhook_is_checked_and_names_its_key_never_holds_it() {
    let with = |notify: Value, retention: Option<&str>| {
        let mut approval = json!({"notify": notify});
        if let Some(r) = retention {
            approval["retention"] = json!(r);
        }
        let spec = json!({"defaultAction": "Deny", "rules": [
            {"name": "r", "tools": ["x"], "action": "RequireApproval", "approval": approval}]});
        crate::parse::parse_spec(spec).and_then(|s| crate::compile("ns/p", &s))
    };
    let ok = with(
        json!({"url": "https://hooks.example/tollgate", "secretRef": {"name": "hook", "key": "hmac"}}),
        Some("2h"),
    )
    .unwrap();
    let a = ok.rules()[0].approval.clone().unwrap();
    assert_eq!(
        a.notify,
        Some(crate::compile::approval::Notify {
            url: "https://hooks.example/tollgate".into(),
            secret: crate::compile::approval::NotifySecret::Secret(crate::spec::SecretKeyRef {
                name: "hook".into(),
                key: "hmac".into()
            }),
        })
    );
    assert_eq!(a.retention, Duration::from_secs(7200));
    let default = with(
        json!({"url": "http://127.0.0.1:9/h", "secretFile": "/k"}),
        None,
    )
    .unwrap();
    assert_eq!(
        default.rules()[0].approval.as_ref().unwrap().retention,
        crate::compile::approval::DEFAULT_RETENTION
    );
    for (notify, retention, says) in [
        (
            json!({"url": "ftp://x/h", "secretFile": "/k"}),
            None,
            "is not an http:// or https:// URL",
        ),
        (
            json!({"url": "https://x/h"}),
            None,
            "exactly one of secretRef",
        ),
        (
            json!({"url": "https://x/h", "secretFile": "/k", "secretRef": {"name": "a", "key": "b"}}),
            None,
            "exactly one of secretRef",
        ),
        (
            json!({"url": "https://x/h", "secretFile": "/k"}),
            Some("31d"),
            "between 1s and 30d",
        ),
    ] {
        let p = with(notify.clone(), retention).unwrap_err();
        assert!(
            p.iter().any(|p| p.to_string().contains(says)),
            "{notify} {retention:?}: {p:?}"
        );
    }
}
