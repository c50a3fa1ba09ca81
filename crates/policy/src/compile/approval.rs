//! `approval:` on a `RequireApproval` rule, checked: how long an approval
//! lives, how long a call waits for one, and who must give it.
//!
//! The bounds are there because each of them is state somebody keeps: a
//! held call keeps a connection open (`holdFor` at most ten minutes), a
//! pending approval is an object in the cluster or an entry in the sidecar
//! (`timeout` at most seven days), and `minApprovals` is a count of people
//! an operator must find.

use std::time::Duration;

use crate::duration;
use crate::problem::Problem;
use crate::spec::{ApprovalArguments, ApprovalNotify, ApprovalSettings, SecretKeyRef};

/// How long an approval stays valid when the rule does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest an approval may stay valid.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a call may be held waiting for a decision.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(10 * 60);
/// The most distinct approvers a rule may ask for.
pub(crate) const MAX_APPROVALS: i64 = 10;
/// Users or groups listed as approvers, at most (each).
pub(crate) const APPROVERS: usize = 64;
/// How long a final approval object is kept when the rule does not say.
///
/// A day: long enough that the people who decided (and whoever audits
/// them the next morning) still find the object with `kubectl get mtca`,
/// short enough that a busy rule's objects do not pile up in etcd. The
/// audit log and the Events keep the record past it.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The longest a final approval object may be kept.
pub const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a rule's approvals are notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The receiver, `http://` or `https://`.
    pub url: String,
    /// Where the signing key is.
    pub secret: NotifySecret,
}

/// Where a rule's signing key is: named here, read by whoever may read it
/// (the controller for a Secret, the sidecar for a file). The key itself is
/// never part of a compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySecret {
    /// A key of a Secret in the policy's namespace.
    Secret(SecretKeyRef),
    /// A file on the sidecar's disk (policy files).
    File(std::path::PathBuf),
}

/// A rule's approval settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// How long the approval (pending or approved) stays valid.
    pub timeout: Duration,
    /// How long the call waits for a decision before it is answered.
    pub hold_for: Duration,
    /// Distinct people who must approve.
    pub min_approvals: u32,
    /// Users allowed to approve; with `groups` empty too, RBAC alone decides.
    pub users: Vec<String>,
    /// Groups allowed to approve.
    pub groups: Vec<String>,
    /// Whether the approval carries only a digest of the arguments.
    pub digest_arguments: bool,
    /// The rule's own notification webhook, if it has one.
    pub notify: Option<Notify>,
    /// How long a final approval object is kept before it is deleted.
    pub retention: Duration,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            timeout: DEFAULT_TIMEOUT,
            hold_for: Duration::ZERO,
            min_approvals: 1,
            users: Vec::new(),
            groups: Vec::new(),
            digest_arguments: false,
            notify: None,
            retention: DEFAULT_RETENTION,
        }
    }
}

impl Approval {
    /// Whether `user` (a member of `groups`) is among the listed approvers;
    /// true for everyone when no approvers are listed.
    pub fn lists(&self, user: &str, groups: &[String]) -> bool {
        (self.users.is_empty() && self.groups.is_empty())
            || self.users.iter().any(|u| u == user)
            || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// Checks `settings` (absent: the defaults) of the rule at `path`.
pub(crate) fn compile(
    settings: Option<&ApprovalSettings>,
    path: &str,
) -> Result<Approval, Vec<Problem>> {
    let Some(s) = settings else {
        return Ok(Approval::default());
    };
    let mut problems = Vec::new();
    let at = |field: &str| format!("{path}.approval.{field}");
    let timeout = match s.timeout.as_deref().map(duration::parse) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(t)) if t <= MAX_TIMEOUT => t,
        Some(Ok(_)) => {
            problems.push(Problem::at(
                at("timeout"),
                "an approval may stay valid for at most 7d",
            ));
            DEFAULT_TIMEOUT
        }
        Some(Err(e)) => {
            problems.push(Problem::at(at("timeout"), e.to_string()));
            DEFAULT_TIMEOUT
        }
    };
    let hold_for = match s.hold_for.as_deref() {
        None | Some("0") => Duration::ZERO,
        Some(text) => match duration::parse(text) {
            Ok(h) if h > MAX_HOLD => {
                problems.push(Problem::at(
                    at("holdFor"),
                    "a call may be held for at most 10m (it keeps the agent's connection open); use a shorter holdFor and let the agent retry",
                ));
                Duration::ZERO
            }
            Ok(h) if h > timeout => {
                problems.push(Problem::at(
                    at("holdFor"),
                    format!(
                        "holdFor {text:?} is longer than the approval's timeout ({}); the call could wait for an approval that has expired",
                        duration::Human(timeout)
                    ),
                ));
                Duration::ZERO
            }
            Ok(h) => h,
            Err(e) => {
                problems.push(Problem::at(at("holdFor"), e.to_string()));
                Duration::ZERO
            }
        },
    };
    let min_approvals = match s.min_approvals {
        None => 1,
        Some(n) if (1..=MAX_APPROVALS).contains(&n) => n as u32,
        Some(n) => {
            problems.push(Problem::at(
                at("minApprovals"),
                format!("{n} is not between 1 and {MAX_APPROVALS}"),
            ));
            1
        }
    };
    let approvers = s.approvers.clone().unwrap_or_default();
    for (list, name) in [(&approvers.users, "users"), (&approvers.groups, "groups")] {
        if list.len() > APPROVERS {
            problems.push(Problem::at(
                at(&format!("approvers.{name}")),
                format!(
                    "{} {name}; at most {APPROVERS} are allowed. Use a group.",
                    list.len()
                ),
            ));
        }
        if let Some(j) = list.iter().position(String::is_empty) {
            problems.push(Problem::at(
                at(&format!("approvers.{name}[{j}]")),
                "an approver cannot be empty",
            ));
        }
    }
    let notify = s
        .notify
        .as_ref()
        .and_then(|n| notify(n, &at("notify"), &mut problems));
    let retention = match s.retention.as_deref().map(duration::parse) {
        None => DEFAULT_RETENTION,
        Some(Ok(r)) if !r.is_zero() && r <= MAX_RETENTION => r,
        Some(Ok(_)) => {
            problems.push(Problem::at(
                at("retention"),
                "a final approval may be kept between 1s and 30d",
            ));
            DEFAULT_RETENTION
        }
        Some(Err(e)) => {
            problems.push(Problem::at(at("retention"), e.to_string()));
            DEFAULT_RETENTION
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Approval {
        timeout,
        hold_for,
        min_approvals,
        users: approvers.users,
        groups: approvers.groups,
        digest_arguments: s.arguments == Some(ApprovalArguments::Digest),
        notify,
        retention,
    })
}

/// Checks a rule's `notify`: an `http(s)://` URL with a host, and exactly
/// one place for the key.
fn notify(n: &ApprovalNotify, at: &str, problems: &mut Vec<Problem>) -> Option<Notify> {
    let rest = n
        .url
        .strip_prefix("https://")
        .or_else(|| n.url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let mut ok = true;
    if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        problems.push(Problem::at(
            format!("{at}.url"),
            format!("{:?} is not an http:// or https:// URL with a host", n.url),
        ));
        ok = false;
    }
    let secret = match (&n.secret_ref, &n.secret_file) {
        (Some(r), None) => Some(NotifySecret::Secret(r.clone())),
        (None, Some(f)) if !f.is_empty() => Some(NotifySecret::File(f.into())),
        _ => {
            problems.push(Problem::at(
                at,
                "notify needs exactly one of secretRef (a Secret in the policy's namespace) or secretFile (policy files): notifications are always signed",
            ));
            None
        }
    };
    Some(Notify {
        url: n.url.clone(),
        secret: secret?,
    })
    .filter(|_| ok)
}
