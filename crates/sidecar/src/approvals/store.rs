//! The approvals a sidecar keeps in file mode: one table, bounded, keyed by
//! id and by fingerprint, with every transition an approval may make.
//!
//! Synchronous and clock-free (every operation is given `now`), so each
//! rule of the lifecycle is a unit test: a fingerprint has at most one live
//! approval (retries reuse it); an approval lets one call through, once;
//! `Rejected` and `Expired` are final; `minApprovals` counts distinct
//! deciders; the requester never approves its own call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use tollgate_policy::Fingerprint;
use tollgate_policy::compile::approval::Approval;

/// Approvals kept at most; past it new requests are refused (fail closed)
/// until some expire.
pub(crate) const CAPACITY: usize = 1024;
/// How long a final approval stays listed (and answers retries with its
/// outcome) after it became final.
const KEEP_FINAL: Duration = Duration::from_secs(15 * 60);

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Phase {
    /// Waiting for people.
    Pending,
    /// Approved by enough people; the next identical call goes through.
    Approved,
    /// Refused by a person; final.
    Rejected,
    /// Not decided (or not used) in time; final.
    Expired,
    /// Let one call through; final.
    Used,
}

impl Phase {
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Phase::Rejected | Phase::Expired | Phase::Used)
    }
}

/// One person's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Vote {
    /// Who decided (as they named themselves to the admin listener).
    pub by: String,
    /// When, in seconds since the epoch.
    pub at: u64,
    /// Their words, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The call an approval is for, as a person reads it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Call {
    pub policy: String,
    pub rule: String,
    pub tool: String,
    /// The arguments, or `null` when the rule shows only their digest.
    pub arguments: Value,
    pub arguments_sha256: String,
    /// `subject:…`, `session:…` or `anonymous`.
    pub caller: String,
}

/// One approval, as the admin listener shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub id: String,
    pub phase: Phase,
    #[serde(flatten)]
    pub call: Call,
    pub fingerprint: String,
    pub min_approvals: u32,
    pub approvals: Vec<Vote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Vote>,
    pub created_at: u64,
    pub expires_at: u64,
    #[serde(skip)]
    pub(crate) created: SystemTime,
    #[serde(skip)]
    pub(crate) expires: SystemTime,
    /// When it became final, for [`KEEP_FINAL`].
    #[serde(skip)]
    pub(crate) finished: Option<SystemTime>,
    /// The requester's verified subject: never an approver of this call.
    #[serde(skip)]
    pub(crate) requester: Option<String>,
    #[serde(skip)]
    pub(crate) settings: Arc<Approval>,
    /// The tool's metric label (bounded; see the catalog).
    #[serde(skip)]
    pub(crate) tool_label: String,
}

/// What a new approval is made of.
pub(crate) struct Request {
    pub fingerprint: Fingerprint,
    pub call: Call,
    pub requester: Option<String>,
    pub settings: Arc<Approval>,
    pub tool_label: String,
}

/// What a call finds for its fingerprint.
#[derive(Debug)]
pub(crate) enum Found {
    /// A new pending approval was created for it.
    Created(Record),
    /// An approval is pending already (a retry): nothing new was created.
    Pending(Record),
    /// An approval was given and is now taken by this call: it must be
    /// [`finish`](Store::finish)ed (used or given back).
    Taken(Record),
    /// A person rejected this call; final.
    Rejected(Record),
    /// The table is full.
    Full,
}

/// A decision on an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approve,
    Reject,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecideError {
    #[error("no approval {0:?} (it may have been removed after it became final)")]
    NotFound(String),
    #[error("approval {id:?} is {phase:?}, which is final")]
    Final { id: String, phase: Phase },
    #[error("approval {0:?} is approved already")]
    Approved(String),
    #[error("{by:?} asked for this call and cannot approve it; another person must")]
    SelfApproval { by: String },
    #[error("{by:?} approved already; minApprovals counts distinct people")]
    Twice { by: String },
    #[error(
        "{by:?} is not among the approvers of rule {rule:?} (users {users:?}, groups {groups:?})"
    )]
    NotAnApprover {
        by: String,
        rule: String,
        users: Vec<String>,
        groups: Vec<String>,
    },
    #[error("name who decides: a non-empty `by`")]
    NoName,
}

/// What changed with a decision, for metrics and notifications.
#[derive(Debug)]
pub(crate) struct Decided {
    pub record: Record,
    /// Whether this decision made it final or approved (not one more vote
    /// of several needed).
    pub settled: bool,
}

/// The table.
#[derive(Default)]
pub(crate) struct Store {
    by_id: HashMap<String, Record>,
    /// The one live (not `Expired`/`Used`) approval of each fingerprint.
    by_fingerprint: HashMap<Fingerprint, String>,
    next: u64,
}

pub(crate) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The approval for `req`'s fingerprint: taken if approved, reused if
    /// pending, created if there is none (or only a final one).
    pub(crate) fn request(&mut self, req: Request, now: SystemTime) -> (Found, Vec<Record>) {
        let expired = self.expire(now);
        if let Some(id) = self.by_fingerprint.get(&req.fingerprint).cloned()
            && let Some(r) = self.by_id.get_mut(&id)
        {
            match r.phase {
                Phase::Pending => return (Found::Pending(r.clone()), expired),
                Phase::Approved => {
                    r.phase = Phase::Used;
                    return (Found::Taken(r.clone()), expired);
                }
                Phase::Rejected => return (Found::Rejected(r.clone()), expired),
                // A taken approval whose call is still being decided: a
                // concurrent identical call waits like for a pending one.
                Phase::Used if r.finished.is_none() => {
                    return (Found::Pending(r.clone()), expired);
                }
                Phase::Expired | Phase::Used => {}
            }
        }
        if self.by_id.len() >= CAPACITY {
            return (Found::Full, expired);
        }
        self.next += 1;
        let id = format!("{}-{}", &req.fingerprint.as_str()[..12], self.next);
        let record = Record {
            id: id.clone(),
            phase: Phase::Pending,
            call: req.call,
            fingerprint: req.fingerprint.to_string(),
            min_approvals: req.settings.min_approvals,
            approvals: Vec::new(),
            rejection: None,
            created_at: epoch(now),
            expires_at: epoch(now + req.settings.timeout),
            created: now,
            expires: now + req.settings.timeout,
            finished: None,
            requester: req.requester,
            settings: req.settings,
            tool_label: req.tool_label,
        };
        self.by_fingerprint.insert(req.fingerprint, id.clone());
        self.by_id.insert(id, record.clone());
        (Found::Created(record), expired)
    }

    /// Settles a [`Found::Taken`] approval: `used` when its call went
    /// through, else it is approved again for the next identical call
    /// (a budget refused it; the person's approval still stands).
    pub(crate) fn finish(&mut self, id: &str, used: bool, now: SystemTime) {
        if let Some(r) = self.by_id.get_mut(id)
            && r.phase == Phase::Used
            && r.finished.is_none()
        {
            if used {
                r.finished = Some(now);
            } else {
                r.phase = Phase::Approved;
            }
        }
    }

    /// One person's decision on approval `id`.
    pub(crate) fn decide(
        &mut self,
        id: &str,
        by: &str,
        groups: &[String],
        verdict: Verdict,
        reason: Option<String>,
        now: SystemTime,
    ) -> Result<Decided, DecideError> {
        let _ = self.expire(now);
        if by.trim().is_empty() {
            return Err(DecideError::NoName);
        }
        let r = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if r.phase.is_final() {
            return Err(DecideError::Final {
                id: id.to_owned(),
                phase: r.phase,
            });
        }
        if verdict == Verdict::Approve {
            if r.phase == Phase::Approved {
                return Err(DecideError::Approved(id.to_owned()));
            }
            if r.requester.as_deref() == Some(by) {
                return Err(DecideError::SelfApproval { by: by.to_owned() });
            }
            if !r.settings.lists(by, groups) {
                return Err(DecideError::NotAnApprover {
                    by: by.to_owned(),
                    rule: r.call.rule.clone(),
                    users: r.settings.users.clone(),
                    groups: r.settings.groups.clone(),
                });
            }
            if r.approvals.iter().any(|v| v.by == by) {
                return Err(DecideError::Twice { by: by.to_owned() });
            }
        }
        let vote = Vote {
            by: by.to_owned(),
            at: epoch(now),
            reason,
        };
        let settled = match verdict {
            Verdict::Approve => {
                r.approvals.push(vote);
                let enough = r.approvals.len() >= r.min_approvals as usize;
                if enough {
                    r.phase = Phase::Approved;
                }
                enough
            }
            Verdict::Reject => {
                r.rejection = Some(vote);
                r.phase = Phase::Rejected;
                r.finished = Some(now);
                true
            }
        };
        Ok(Decided {
            record: r.clone(),
            settled,
        })
    }

    /// Marks overdue approvals `Expired` and forgets final ones kept long
    /// enough; returns those that expired now.
    pub(crate) fn expire(&mut self, now: SystemTime) -> Vec<Record> {
        let mut expired = Vec::new();
        for r in self.by_id.values_mut() {
            if matches!(r.phase, Phase::Pending | Phase::Approved) && r.expires <= now {
                r.phase = Phase::Expired;
                r.finished = Some(now);
                expired.push(r.clone());
            }
        }
        let stale: Vec<String> = self
            .by_id
            .values()
            .filter(|r| r.finished.is_some_and(|f| f + KEEP_FINAL <= now))
            .map(|r| r.id.clone())
            .collect();
        for id in stale {
            if let Some(r) = self.by_id.remove(&id)
                && let Some(fp) = Fingerprint::parse(&r.fingerprint)
                && self.by_fingerprint.get(&fp) == Some(&id)
            {
                self.by_fingerprint.remove(&fp);
            }
        }
        expired
    }

    /// Every approval kept, newest first.
    pub(crate) fn list(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self.by_id.values().cloned().collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        all
    }

    /// One approval.
    pub(crate) fn get(&self, id: &str) -> Option<Record> {
        self.by_id.get(id).cloned()
    }

    /// Approvals waiting for people.
    pub(crate) fn pending(&self) -> usize {
        self.by_id
            .values()
            .filter(|r| r.phase == Phase::Pending)
            .count()
    }
}

#[cfg(test)]
pub(super) mod tests;
