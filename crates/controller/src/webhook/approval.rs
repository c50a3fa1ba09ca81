//! Deciding a held tool call with `kubectl`, guarded by the apiserver.
//!
//! A person writes `status.decision` (`kubectl patch mtca NAME
//! --subresource=status --type=merge -p '{"status":{"decision":{"verdict":"Approve"}}}'`);
//! the apiserver sends the update here before storing it. This module
//! checks the person (the caller asks the apiserver whether they hold the
//! `approve` verb; they may not be the requester; a rule's listed approvers
//! narrow it further; `minApprovals` counts distinct people) and answers
//! with a patch that replaces the decision by a vote under the name the
//! apiserver authenticated — nobody types their own name, so nobody can
//! type another's.
//!
//! A mutating webhook, not only a validating one, because recording who
//! decided means changing the object: a validating webhook could only check
//! a vote a person wrote about themselves. It refuses like a validating one.
//!
//! Every other status change is one of the few a sidecar makes (set
//! `Pending` on a new object, `Approved` → `Used` when it lets the call
//! through, `Expired` once `expiresAt` has passed) or is refused: votes
//! never appear, vanish or change except through a decision, and a final
//! phase never changes. The spec never changes after creation.
//!
//! Pure: the object before and after, the person and whether RBAC lets
//! them approve, and the time, in; a new status or a refusal out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use tollgate_policy::approval_crd::{
    ApprovalDecision, ApprovalPhase, ApprovalVerdict, ApprovalVote, McpToolCallApproval,
    McpToolCallApprovalStatus,
};

/// The condition set once an approval has an answer.
pub(crate) const DECIDED: &str = "Decided";

/// Who sends the update, as the apiserver authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Person {
    pub user: String,
    pub groups: Vec<String>,
}

/// What an update asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// A person decides: check them, then [`record`] it.
    Decision(ApprovalDecision),
    /// A change a sidecar makes (or none): allowed as it is.
    Allowed,
}

/// Why an update is refused, in words for the person who sent it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Refusal {
    #[error("the spec of an McpToolCallApproval never changes after it is created")]
    SpecChanged,
    #[error(
        "write only status.decision to decide (the webhook records who decided); leave the rest of the status as it is"
    )]
    Mixed,
    #[error("approval {name:?} is {phase:?}, which is final")]
    Final { name: String, phase: ApprovalPhase },
    #[error("approval {name:?} expired at {at}; the agent must ask again")]
    Expired { name: String, at: String },
    #[error("approval {0:?} is approved already")]
    Approved(String),
    #[error(
        "{user:?} may not decide tool calls here: RBAC must grant the verb `approve` on mcptoolcallapprovals.tollgate.dev in namespace {namespace:?}"
    )]
    NoVerb { user: String, namespace: String },
    #[error("{0:?} asked for this call and cannot approve it; another person must")]
    SelfApproval(String),
    #[error("{0:?} approved already; minApprovals counts distinct people")]
    Twice(String),
    #[error(
        "{user:?} is not among the approvers rule {rule:?} names (users {users:?}, groups {groups:?})"
    )]
    NotAnApprover {
        user: String,
        rule: String,
        users: Vec<String>,
        groups: Vec<String>,
    },
    #[error(
        "status may not go from {from:?} to {to:?} with these votes: people decide through status.decision, and only the webhook records votes"
    )]
    Transition {
        from: Option<ApprovalPhase>,
        to: Option<ApprovalPhase>,
    },
    #[error("phase Expired before expiresAt ({0})")]
    NotExpired(String),
    #[error("spec.expiresAt {0:?} is not an RFC 3339 time")]
    BadExpiry(String),
}

fn is_final(p: Option<ApprovalPhase>) -> bool {
    matches!(
        p,
        Some(ApprovalPhase::Rejected | ApprovalPhase::Expired | ApprovalPhase::Used)
    )
}

fn expires(a: &McpToolCallApproval) -> Result<Timestamp, Refusal> {
    a.spec
        .expires_at
        .parse()
        .map_err(|_| Refusal::BadExpiry(a.spec.expires_at.clone()))
}

/// Reads an update of the object (`subresource` `None`) or of its status.
pub(crate) fn read(
    old: &McpToolCallApproval,
    new: &McpToolCallApproval,
    subresource: Option<&str>,
    now: Timestamp,
) -> Result<Change, Refusal> {
    if old.spec != new.spec {
        return Err(Refusal::SpecChanged);
    }
    if subresource != Some("status") {
        // The apiserver keeps the status of a main-resource update as it was.
        return Ok(Change::Allowed);
    }
    let before = old.status.clone().unwrap_or_default();
    let mut after = new.status.clone().unwrap_or_default();
    if let Some(decision) = after.decision.take() {
        if strip(after) != strip(before) {
            return Err(Refusal::Mixed);
        }
        return Ok(Change::Decision(decision));
    }
    let votes_kept = before.approvals == after.approvals && before.rejection == after.rejection;
    if before.phase == after.phase && votes_kept {
        return Ok(Change::Allowed);
    }
    use ApprovalPhase::*;
    let allowed = match (before.phase, after.phase) {
        (None, Some(Pending)) => votes_kept,
        (Some(Approved), Some(Used)) => votes_kept,
        (None | Some(Pending | Approved), Some(Expired)) if votes_kept => {
            let at = expires(old)?;
            if now < at {
                return Err(Refusal::NotExpired(old.spec.expires_at.clone()));
            }
            true
        }
        _ => false,
    };
    if allowed {
        Ok(Change::Allowed)
    } else {
        Err(Refusal::Transition {
            from: before.phase,
            to: after.phase,
        })
    }
}

/// The status without what a sidecar may freely rewrite (summary,
/// conditions), for comparing what a person changed.
fn strip(s: McpToolCallApprovalStatus) -> McpToolCallApprovalStatus {
    McpToolCallApprovalStatus {
        summary: None,
        conditions: Vec::new(),
        ..s
    }
}

/// The status after `person`'s `decision` on `old`; `may_approve` is the
/// apiserver's answer for the `approve` verb on this object.
pub(crate) fn record(
    old: &McpToolCallApproval,
    decision: &ApprovalDecision,
    person: &Person,
    may_approve: bool,
    now: Timestamp,
) -> Result<McpToolCallApprovalStatus, Refusal> {
    let name = old.metadata.name.clone().unwrap_or_default();
    let mut status = old.status.clone().unwrap_or_default();
    status.decision = None;
    let phase = status.phase.unwrap_or(ApprovalPhase::Pending);
    if is_final(Some(phase)) {
        return Err(Refusal::Final { name, phase });
    }
    if now >= expires(old)? {
        return Err(Refusal::Expired {
            name,
            at: old.spec.expires_at.clone(),
        });
    }
    if !may_approve {
        return Err(Refusal::NoVerb {
            user: person.user.clone(),
            namespace: old.metadata.namespace.clone().unwrap_or_default(),
        });
    }
    let vote = ApprovalVote {
        user: person.user.clone(),
        time: now.to_string(),
        reason: decision.reason.clone(),
    };
    let settled = match decision.verdict {
        ApprovalVerdict::Approve => {
            if phase == ApprovalPhase::Approved {
                return Err(Refusal::Approved(name));
            }
            if old.spec.requester.as_deref() == Some(person.user.as_str()) {
                return Err(Refusal::SelfApproval(person.user.clone()));
            }
            if let Some(listed) = &old.spec.approvers {
                let named = listed.users.contains(&person.user)
                    || person.groups.iter().any(|g| listed.groups.contains(g));
                if (!listed.users.is_empty() || !listed.groups.is_empty()) && !named {
                    return Err(Refusal::NotAnApprover {
                        user: person.user.clone(),
                        rule: old.spec.rule.clone(),
                        users: listed.users.clone(),
                        groups: listed.groups.clone(),
                    });
                }
            }
            if status.approvals.iter().any(|v| v.user == person.user) {
                return Err(Refusal::Twice(person.user.clone()));
            }
            status.approvals.push(vote);
            let enough = status.approvals.len() as i64 >= old.spec.min_approvals;
            if enough {
                status.phase = Some(ApprovalPhase::Approved);
            }
            enough.then_some(("Approved", "enough people approved"))
        }
        ApprovalVerdict::Reject => {
            status.rejection = Some(vote);
            status.phase = Some(ApprovalPhase::Rejected);
            Some(("Rejected", "a person rejected the call"))
        }
    };
    status.phase.get_or_insert(ApprovalPhase::Pending);
    status.summary = Some(format!(
        "{}/{}",
        status.approvals.len(),
        old.spec.min_approvals
    ));
    if let Some((reason, message)) = settled {
        status.conditions.retain(|c| c.type_ != DECIDED);
        status.conditions.push(Condition {
            type_: DECIDED.into(),
            status: "True".into(),
            reason: reason.into(),
            message: format!("{message} ({})", person.user),
            last_transition_time: Time(now),
            observed_generation: old.metadata.generation,
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests;
