//! What comes out of a decision: the call as the engine sees it, and the
//! verdict with everything metrics, logs and the client need.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::compile::approval::Approval;
use crate::resources::{Payloads, ToolMeta};
use crate::spec::DenyWith;

/// A tool call as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct ToolCall<'a> {
    /// `params.name`.
    pub tool: &'a str,
    /// `params.arguments`, or `Value::Null` when absent.
    pub arguments: &'a Value,
    /// The MCP session the upstream issued, if the call is in one.
    pub session: Option<&'a str>,
    /// What the upstream said about this tool in its own `tools/list`.
    pub meta: Option<&'a ToolMeta>,
    /// The caller, from a verified token (see `subjects` on rules).
    pub subject: Option<&'a str>,
    /// The call's manifests, read by the caller with
    /// [`PolicySet::read_payloads`](super::PolicySet::read_payloads) (the
    /// proxy does, so that it forwards exactly what was judged); `None` reads
    /// them during the evaluation.
    pub payloads: Option<&'a Payloads>,
    /// Whether the caller holds an approval of this exact call (the
    /// sidecar found an approved, unused approval with the call's
    /// [`fingerprint`](super::approval::fingerprint)): `RequireApproval`
    /// rules then allow it like `Allow` rules.
    pub approved: bool,
}

impl<'a> ToolCall<'a> {
    /// A call with no session and no upstream description.
    pub fn new(tool: &'a str, arguments: &'a Value) -> Self {
        ToolCall {
            tool,
            arguments,
            session: None,
            meta: None,
            subject: None,
            payloads: None,
            approved: false,
        }
    }
}

/// What happened to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Forwarded.
    Allowed,
    /// Refused.
    Denied,
    /// An `Audit` policy would have refused it; forwarded.
    Audited,
    /// A `RequireApproval` rule allows it only once a person approves this
    /// exact call; not forwarded (yet).
    ApprovalRequired,
}

impl Effect {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allowed => "allowed",
            Effect::Denied => "denied",
            Effect::Audited => "audited",
            Effect::ApprovalRequired => "approval_required",
        }
    }
}

/// Why: which step of the order decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A rule decided by tool name or object (and conditions, for `Deny` rules).
    Rule,
    /// An `Allow` rule's conditions on arguments or objects failed.
    Arguments,
    /// A rate limit was full.
    RateLimit,
    /// An in-flight cap was reached.
    InFlight,
    /// `defaultAction` decided.
    Default,
    /// The message could not be read unambiguously.
    Malformed,
    /// The proxy cannot judge the call yet (it has not read the upstream's
    /// tool list); retrying shortly succeeds.
    NotReady,
    /// A `RequireApproval` rule: the call waits for, or was refused, an
    /// approval.
    Approval,
}

impl Reason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Arguments => "arguments",
            Reason::RateLimit => "rate_limit",
            Reason::InFlight => "in_flight",
            Reason::Default => "default",
            Reason::Malformed => "malformed",
            Reason::NotReady => "not_ready",
            Reason::Approval => "approval",
        }
    }
}

/// The verdict on one call, with what metrics, logs and the client need.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Allowed, denied or audited.
    pub effect: Effect,
    /// Which step decided.
    pub reason: Reason,
    /// The deciding policy; `None` only when there are no policies or the
    /// message was malformed.
    pub policy: Option<Arc<str>>,
    /// The deciding rule; `None` for `defaultAction`.
    pub rule: Option<Arc<str>>,
    /// For denied and audited calls: what a model should read.
    pub message: Option<String>,
    /// For rate-limit denials: when a retry can succeed.
    pub retry_after: Option<Duration>,
    /// How a denial is delivered.
    pub deny_with: DenyWith,
    /// For [`Effect::ApprovalRequired`]: the deciding rule's approval
    /// settings.
    pub approval: Option<Arc<Approval>>,
}

impl Decision {
    /// Whether the call goes to the upstream.
    pub fn forwards(&self) -> bool {
        matches!(self.effect, Effect::Allowed | Effect::Audited)
    }

    /// An allowance no policy or rule made: nothing restricts the call.
    pub fn allowed_by_default() -> Decision {
        Decision {
            effect: Effect::Allowed,
            reason: Reason::Default,
            policy: None,
            rule: None,
            message: None,
            retry_after: None,
            deny_with: DenyWith::default(),
            approval: None,
        }
    }

    /// A denial of a message the proxy could not read.
    pub fn malformed(detail: impl Into<String>) -> Decision {
        Decision {
            effect: Effect::Denied,
            reason: Reason::Malformed,
            policy: None,
            rule: None,
            message: Some(detail.into()),
            retry_after: None,
            deny_with: DenyWith::JsonRpcError,
            approval: None,
        }
    }
}

/// The text a model reads: who decided and why, then the operator's words.
pub(crate) fn render(
    policy: &str,
    rule: Option<&str>,
    detail: &str,
    message: Option<&str>,
) -> String {
    let mut text = match rule {
        Some(rule) => format!("Denied by tollgate policy {policy:?}, rule {rule:?}: {detail}."),
        None => format!("Denied by tollgate policy {policy:?}: {detail}."),
    };
    if let Some(m) = message {
        text.push(' ');
        text.push_str(m);
    }
    text
}
