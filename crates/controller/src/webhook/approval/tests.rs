use super::*;
use serde_json::json;

fn approval(phase: Option<&str>, votes: &[&str], min: i64) -> McpToolCallApproval {
    let mut v = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "McpToolCallApproval",
        "metadata": {"name": "a", "namespace": "team", "generation": 1},
        "spec": {
            "policy": "team/p", "rule": "r", "pod": "kms-0", "tool": "vm_clone",
            "argumentsSha256": "00", "caller": "subject:bot", "requester": "bot",
            "fingerprint": "0123456789abcdef0123456789abcdef", "minApprovals": min,
            "approvers": {"groups": ["vm-admins"]},
            "expiresAt": "2030-01-01T00:00:00Z"
        },
        "status": {"approvals": votes.iter().map(|u| json!({"user": u, "time": "2029-01-01T00:00:00Z"})).collect::<Vec<_>>()}
    });
    if let Some(p) = phase {
        v["status"]["phase"] = json!(p);
    }
    serde_json::from_value(v).unwrap()
}

fn admin(user: &str) -> Person {
    Person {
        user: user.into(),
        groups: vec!["vm-admins".into()],
    }
}

fn now() -> Timestamp {
    "2029-06-01T00:00:00Z".parse().unwrap()
}

fn approve() -> ApprovalDecision {
    ApprovalDecision {
        verdict: ApprovalVerdict::Approve,
        reason: None,
    }
}

#[test]
fn a_decision_becomes_a_vote_under_the_authenticated_name() {
    let old = approval(Some("Pending"), &[], 1);
    let mut new = old.clone();
    new.status.as_mut().unwrap().decision = Some(approve());
    assert_eq!(
        read(&old, &new, Some("status"), now()),
        Ok(Change::Decision(approve()))
    );
    let s = record(&old, &approve(), &admin("ann"), true, now()).unwrap();
    assert_eq!(s.phase, Some(ApprovalPhase::Approved));
    assert_eq!(s.approvals[0].user, "ann");
    assert_eq!(s.decision, None);
    assert_eq!(s.summary.as_deref(), Some("1/1"));
    assert_eq!(s.conditions[0].reason, "Approved");
}

#[test]
fn people_are_checked_before_their_vote_counts() {
    let old = approval(Some("Pending"), &["ann"], 2);
    let r = |p: &Person, may| record(&old, &approve(), p, may, now());
    assert!(matches!(
        r(&admin("bob"), false),
        Err(Refusal::NoVerb { .. })
    ));
    assert_eq!(
        r(&admin("bot"), true),
        Err(Refusal::SelfApproval("bot".into()))
    );
    assert_eq!(r(&admin("ann"), true), Err(Refusal::Twice("ann".into())));
    let outsider = Person {
        user: "eve".into(),
        groups: vec!["developers".into()],
    };
    assert!(matches!(
        r(&outsider, true),
        Err(Refusal::NotAnApprover { .. })
    ));
    let two = r(&admin("bob"), true).unwrap();
    assert_eq!(two.phase, Some(ApprovalPhase::Approved));
    assert_eq!(two.summary.as_deref(), Some("2/2"));
}

#[test]
fn one_of_two_votes_leaves_it_pending() {
    let old = approval(Some("Pending"), &[], 2);
    let s = record(&old, &approve(), &admin("ann"), true, now()).unwrap();
    assert_eq!(s.phase, Some(ApprovalPhase::Pending));
    assert!(s.conditions.is_empty());
}

#[test]
fn final_phases_and_expiry_refuse_decisions() {
    let reject = ApprovalDecision {
        verdict: ApprovalVerdict::Reject,
        reason: Some("no".into()),
    };
    for phase in ["Rejected", "Expired", "Used"] {
        let old = approval(Some(phase), &[], 1);
        assert!(matches!(
            record(&old, &reject, &admin("ann"), true, now()),
            Err(Refusal::Final { .. })
        ));
    }
    let old = approval(Some("Pending"), &[], 1);
    let late: Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
    assert!(matches!(
        record(&old, &approve(), &admin("ann"), true, late),
        Err(Refusal::Expired { .. })
    ));
    let rejected = record(&old, &reject, &admin("ann"), true, now()).unwrap();
    assert_eq!(rejected.phase, Some(ApprovalPhase::Rejected));
    assert_eq!(rejected.rejection.unwrap().reason.as_deref(), Some("no"));
}

#[test]
fn only_a_sidecars_transitions_pass_without_a_decision() {
    let with = |phase: Option<&str>, votes: &[&str]| approval(phase, votes, 1);
    let ok =
        |old: &McpToolCallApproval, new: &McpToolCallApproval, t| read(old, new, Some("status"), t);
    assert_eq!(
        ok(&with(None, &[]), &with(Some("Pending"), &[]), now()),
        Ok(Change::Allowed)
    );
    assert_eq!(
        ok(
            &with(Some("Approved"), &["ann"]),
            &with(Some("Used"), &["ann"]),
            now()
        ),
        Ok(Change::Allowed)
    );
    // Forging a vote, approving without one, reviving a final phase.
    for (old, new) in [
        (with(Some("Pending"), &[]), with(Some("Pending"), &["ann"])),
        (with(Some("Pending"), &[]), with(Some("Approved"), &[])),
        (
            with(Some("Used"), &["ann"]),
            with(Some("Approved"), &["ann"]),
        ),
        (with(Some("Rejected"), &[]), with(Some("Pending"), &[])),
    ] {
        assert!(
            matches!(ok(&old, &new, now()), Err(Refusal::Transition { .. })),
            "{old:?} -> {new:?}"
        );
    }
    let pending = with(Some("Pending"), &[]);
    let expired = with(Some("Expired"), &[]);
    assert!(matches!(
        ok(&pending, &expired, now()),
        Err(Refusal::NotExpired(_))
    ));
    let late: Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
    assert_eq!(ok(&pending, &expired, late), Ok(Change::Allowed));
    // A decision may not smuggle other changes in.
    let mut mixed = with(Some("Approved"), &[]);
    mixed.status.as_mut().unwrap().decision = Some(approve());
    assert_eq!(ok(&pending, &mixed, now()), Err(Refusal::Mixed));
    // The spec is fixed.
    let mut moved = pending.clone();
    moved.spec.requester = None;
    assert_eq!(
        read(&pending, &moved, None, now()),
        Err(Refusal::SpecChanged)
    );
}
