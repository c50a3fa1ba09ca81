//! The budget half of the decision sequence, on policies as users write
//! them: local and shared limits admitted together, a shared admission taken
//! back when a local limit refuses, and each shared limit's `onStoreError`
//! while the store is down. (In-flight slots given back when a rate limit
//! refuses: `resource_tests`, on the same sequence.)

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::inflight::MemoryInFlight;
use super::ratelimit::MAX_BUCKETS_PER_CALLER;
use super::{Stores, Tiered, decide};
use crate::compile::resource_rules::NoCluster;
use crate::evaluate::{Decision, Effect, PolicySet, Reason, ToolCall};
use crate::load::{compile_set, parse_text};
use crate::testing::{FakeShared, block_on};

fn set(yaml: &str) -> PolicySet {
    let (loaded, problems) = parse_text("test.yaml", yaml);
    assert!(problems.is_empty(), "{problems:?}");
    compile_set(&loaded).unwrap_or_else(|p| panic!("{p:?}"))
}

/// One call to `tool` through the production sequence.
fn call(set: &PolicySet, budgets: &Tiered<FakeShared>, in_flight: &MemoryInFlight) -> Decision {
    let args = json!({"namespace": "vms", "name": "golden", "targetName": "copy"});
    let stores = Stores {
        budgets,
        in_flight,
        view: &NoCluster,
    };
    block_on(decide(
        set,
        &ToolCall::new("vm_clone", &args),
        stores,
        Instant::now(),
        SystemTime::now(),
    ))
}

fn policy(limits: &str) -> PolicySet {
    set(&format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: p, namespace: vms}}
spec:
  defaultAction: Deny
  rules:
    - name: clones
      tools: [vm_clone]
      action: Allow
      rateLimits:
{limits}
"#
    ))
}

#[test]
fn a_shared_admission_is_taken_back_when_a_local_limit_refuses() {
    let set = policy(
        "        - {requests: 100, window: 1h, scope: Shared}\n        - {requests: 2, window: 1m}",
    );
    let budgets = Tiered::new(Some(FakeShared::default()));
    let in_flight = MemoryInFlight::default();
    for _ in 0..2 {
        assert_eq!(call(&set, &budgets, &in_flight).effect, Effect::Allowed);
    }
    let shared = budgets.shared.as_ref().expect("shared store");
    assert!(shared.released.lock().unwrap().is_empty());

    let refused = call(&set, &budgets, &in_flight);
    assert_eq!(
        (refused.effect, refused.reason),
        (Effect::Denied, Reason::RateLimit)
    );
    assert!(
        refused.message.as_deref().unwrap().contains("2 per 1m"),
        "the local limit refused: {refused:?}"
    );
    let released = shared.released.lock().unwrap();
    assert_eq!(released.len(), 1, "one release for the refused call");
    let (what, last) = &released[0];
    assert_eq!(what.len(), 1, "only the shared acquisition: {what:?}");
    assert_eq!(what[0].1, 1);
    assert_eq!(*last, 3, "the third admission is the one taken back");
}

#[test]
fn a_full_shared_limit_refuses_before_any_local_budget_is_spent() {
    let set = policy(
        "        - {requests: 1, window: 1m, scope: Shared}\n        - {requests: 5, window: 1h}",
    );
    let budgets = Tiered::new(Some(FakeShared::default()));
    let in_flight = MemoryInFlight::default();
    assert_eq!(call(&set, &budgets, &in_flight).effect, Effect::Allowed);
    let refused = call(&set, &budgets, &in_flight);
    assert_eq!(refused.reason, Reason::RateLimit);
    assert!(refused.message.as_deref().unwrap().contains("1 per 1m"));
    assert!(refused.retry_after.is_some());
    // The local limit of 5 spent only one unit: four more pass once the
    // shared store admits again.
    assert_eq!(budgets.local().buckets(), 1);
}

#[test]
fn while_the_store_is_down_each_shared_limit_follows_its_on_store_error() {
    // One LocalFallback limit, one Deny limit: the Deny one refuses.
    let mixed = policy(
        "        - {requests: 3, window: 1m, scope: Shared, onStoreError: LocalFallback}\n        - {requests: 50, window: 1h, scope: Shared, onStoreError: Deny}",
    );
    let budgets = Tiered::new(Some(FakeShared::default()));
    budgets
        .shared
        .as_ref()
        .unwrap()
        .down
        .store(true, Ordering::SeqCst);
    let in_flight = MemoryInFlight::default();
    let d = call(&mixed, &budgets, &in_flight);
    assert_eq!((d.effect, d.reason), (Effect::Denied, Reason::RateLimit));
    assert!(
        d.message.as_deref().unwrap().contains("50 per 1h")
            && d.message.as_deref().unwrap().contains("onStoreError: Deny"),
        "{d:?}"
    );
    assert_eq!(
        budgets.local().buckets(),
        0,
        "a refused call counts nowhere"
    );

    // Only LocalFallback limits: counted in memory, exactly.
    let fallback =
        policy("        - {requests: 3, window: 1m, scope: Shared, onStoreError: LocalFallback}");
    let effects: Vec<Effect> = (0..5)
        .map(|_| call(&fallback, &budgets, &in_flight).effect)
        .collect();
    assert_eq!(
        effects,
        [
            Effect::Allowed,
            Effect::Allowed,
            Effect::Allowed,
            Effect::Denied,
            Effect::Denied
        ]
    );

    // Without any shared store configured, shared limits act as if it were down.
    let none: Tiered<FakeShared> = Tiered::new(None);
    let d = call(&mixed, &none, &in_flight);
    assert_eq!(d.reason, Reason::RateLimit);
}

/// The decision sequence charges new buckets to the call's caller: a
/// session spraying namespaces is refused new ones at its share, and
/// another session, or a caller with a subject, still gets its own.
#[test]
fn a_caller_spraying_keys_through_decide_locks_out_only_itself() {
    let set = policy("        - {requests: 1, window: 1h, key: {arguments: [/namespace]}}");
    let budgets: Tiered<FakeShared> = Tiered::new(None);
    let in_flight = MemoryInFlight::default();
    let decide_as = |namespace: &str, session: Option<&str>, subject: Option<&str>| {
        let args = json!({"namespace": namespace, "name": "golden", "targetName": "copy"});
        let call = ToolCall {
            session,
            subject,
            ..ToolCall::new("vm_clone", &args)
        };
        let stores = Stores {
            budgets: &budgets,
            in_flight: &in_flight,
            view: &NoCluster,
        };
        block_on(decide(
            &set,
            &call,
            stores,
            Instant::now(),
            SystemTime::now(),
        ))
    };
    for i in 0..MAX_BUCKETS_PER_CALLER {
        let d = decide_as(&format!("ns-{i}"), Some("hostile"), None);
        assert_eq!(d.effect, Effect::Allowed);
    }
    let refused = decide_as("ns-fresh", Some("hostile"), None);
    assert_eq!(refused.reason, Reason::RateLimit);
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("too many distinct"),
        "{refused:?}"
    );
    // The same session under a verified subject is that subject's call.
    assert_eq!(
        decide_as("ns-fresh", Some("hostile"), Some("alice")).effect,
        Effect::Allowed
    );
    assert_eq!(
        decide_as("ns-other", Some("honest"), None).effect,
        Effect::Allowed
    );
    assert_eq!(budgets.local().stats().refused_caller, 1);
}
