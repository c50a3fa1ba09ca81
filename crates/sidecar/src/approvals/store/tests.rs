//! The lifecycle rules of [`Store`], one by one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use tollgate_policy::compile::approval::Approval;
use tollgate_policy::{Fingerprint, ToolCall, fingerprint};

use super::*;

pub(crate) fn settings(min: u32, users: &[&str]) -> Arc<Approval> {
    Arc::new(Approval {
        min_approvals: min,
        users: users.iter().map(|u| u.to_string()).collect(),
        timeout: Duration::from_secs(60),
        ..Approval::default()
    })
}

fn fp(name: &str) -> Fingerprint {
    let args = json!({ "name": name });
    fingerprint("p", "r", &ToolCall::new("vm_clone", &args), None)
}

pub(crate) fn req(name: &str, settings: Arc<Approval>) -> Request {
    Request {
        fingerprint: fp(name),
        call: Call {
            policy: "p".into(),
            rule: "r".into(),
            tool: "vm_clone".into(),
            arguments: json!({ "name": name }),
            arguments_sha256: String::new(),
            caller: "subject:agent".into(),
        },
        requester: Some("agent".into()),
        settings,
        tool_label: "vm_clone".into(),
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

fn id_of(found: &Found) -> String {
    match found {
        Found::Created(r) | Found::Pending(r) | Found::Taken(r) | Found::Rejected(r) => {
            r.id.clone()
        }
        Found::Full => panic!("full"),
    }
}

#[test]
fn retries_reuse_the_pending_approval() {
    let mut s = Store::default();
    let (first, _) = s.request(req("web", settings(1, &[])), t0());
    assert!(matches!(first, Found::Created(_)));
    for _ in 0..5 {
        let (again, _) = s.request(req("web", settings(1, &[])), t0());
        assert!(matches!(again, Found::Pending(_)), "{again:?}");
        assert_eq!(id_of(&again), id_of(&first));
    }
    let (other, _) = s.request(req("db", settings(1, &[])), t0());
    assert!(matches!(other, Found::Created(_)));
    assert_eq!(s.pending(), 2);
}

#[test]
fn an_approval_lets_one_call_through_once() {
    let mut s = Store::default();
    let id = id_of(&s.request(req("web", settings(1, &[])), t0()).0);
    let d = s
        .decide(&id, "ann", &[], Verdict::Approve, None, t0())
        .unwrap();
    assert!(d.settled);
    assert_eq!(d.record.phase, Phase::Approved);
    let (taken, _) = s.request(req("web", settings(1, &[])), t0());
    assert!(matches!(taken, Found::Taken(_)));
    // While the taken call is decided, an identical one does not ride on it.
    let (meanwhile, _) = s.request(req("web", settings(1, &[])), t0());
    assert!(matches!(meanwhile, Found::Pending(_)));
    s.finish(&id, true, t0());
    assert_eq!(s.get(&id).unwrap().phase, Phase::Used);
    // The next identical call needs a new approval.
    let (next, _) = s.request(req("web", settings(1, &[])), t0());
    assert!(matches!(next, Found::Created(_)));
    assert_ne!(id_of(&next), id);
}

#[test]
fn an_approval_whose_call_a_budget_refused_stands_for_the_retry() {
    let mut s = Store::default();
    let id = id_of(&s.request(req("web", settings(1, &[])), t0()).0);
    s.decide(&id, "ann", &[], Verdict::Approve, None, t0())
        .unwrap();
    assert!(matches!(
        s.request(req("web", settings(1, &[])), t0()).0,
        Found::Taken(_)
    ));
    s.finish(&id, false, t0());
    assert_eq!(s.get(&id).unwrap().phase, Phase::Approved);
    assert!(matches!(
        s.request(req("web", settings(1, &[])), t0()).0,
        Found::Taken(_)
    ));
}

#[test]
fn min_approvals_counts_distinct_people_and_never_the_requester() {
    let mut s = Store::default();
    let id = id_of(&s.request(req("web", settings(2, &[])), t0()).0);
    assert_eq!(
        s.decide(&id, "agent", &[], Verdict::Approve, None, t0())
            .unwrap_err(),
        DecideError::SelfApproval { by: "agent".into() }
    );
    let one = s
        .decide(&id, "ann", &[], Verdict::Approve, None, t0())
        .unwrap();
    assert!(!one.settled);
    assert_eq!(one.record.phase, Phase::Pending);
    assert_eq!(
        s.decide(&id, "ann", &[], Verdict::Approve, None, t0())
            .unwrap_err(),
        DecideError::Twice { by: "ann".into() }
    );
    assert!(matches!(
        s.request(req("web", settings(2, &[])), t0()).0,
        Found::Pending(_)
    ));
    let two = s
        .decide(&id, "bob", &[], Verdict::Approve, None, t0())
        .unwrap();
    assert!(two.settled);
    assert_eq!(two.record.phase, Phase::Approved);
}

#[test]
fn only_listed_approvers_decide_when_a_rule_lists_them() {
    let mut s = Store::default();
    let id = id_of(&s.request(req("web", settings(1, &["ann"])), t0()).0);
    assert!(matches!(
        s.decide(&id, "bob", &[], Verdict::Approve, None, t0()),
        Err(DecideError::NotAnApprover { .. })
    ));
    assert!(matches!(
        s.decide(&id, "", &[], Verdict::Approve, None, t0()),
        Err(DecideError::NoName)
    ));
    s.decide(&id, "ann", &[], Verdict::Approve, None, t0())
        .unwrap();
}

#[test]
fn rejection_and_expiry_are_final() {
    let mut s = Store::default();
    let id = id_of(&s.request(req("web", settings(1, &[])), t0()).0);
    s.decide(&id, "ann", &[], Verdict::Reject, Some("no".into()), t0())
        .unwrap();
    assert!(matches!(
        s.decide(&id, "bob", &[], Verdict::Approve, None, t0()),
        Err(DecideError::Final {
            phase: Phase::Rejected,
            ..
        })
    ));
    assert!(matches!(
        s.request(req("web", settings(1, &[])), t0()).0,
        Found::Rejected(_)
    ));

    let late = t0() + Duration::from_secs(61);
    let id = id_of(&s.request(req("db", settings(1, &[])), t0()).0);
    let (again, expired) = s.request(req("db", settings(1, &[])), late);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, id);
    assert!(matches!(again, Found::Created(_)), "{again:?}");
    assert!(matches!(
        s.decide(&id, "ann", &[], Verdict::Approve, None, late),
        Err(DecideError::Final {
            phase: Phase::Expired,
            ..
        })
    ));
    // An approved approval not used in time expires too.
    let id = id_of(&s.request(req("x", settings(1, &[])), t0()).0);
    s.decide(&id, "ann", &[], Verdict::Approve, None, t0())
        .unwrap();
    s.expire(late);
    assert_eq!(s.get(&id).unwrap().phase, Phase::Expired);
}

#[test]
fn a_full_table_refuses_new_approvals_and_final_ones_are_forgotten() {
    let mut s = Store::default();
    for i in 0..CAPACITY {
        let (f, _) = s.request(req(&format!("vm-{i}"), settings(1, &[])), t0());
        assert!(matches!(f, Found::Created(_)));
    }
    assert!(matches!(
        s.request(req("one-more", settings(1, &[])), t0()).0,
        Found::Full
    ));
    // Expired, then kept a while, then gone: room again.
    let much_later = t0() + Duration::from_secs(61) + KEEP_FINAL;
    s.expire(t0() + Duration::from_secs(61));
    assert!(matches!(
        s.request(req("one-more", settings(1, &[])), much_later).0,
        Found::Created(_)
    ));
    assert_eq!(s.list().len(), 1);
}
