//! What `RequireApproval` needs from the engine: the decision that asks for
//! an approval, and the fingerprint an approval is bound to.
//!
//! An approval lets through one call: the same policy and rule, the same
//! tool with the same arguments (compared as canonical JSON, so key order
//! and `5` vs `5.0` do not matter), from the same caller, on the same pod.
//! The fingerprint is a digest of exactly those, so an agent retrying a call
//! finds its approval, and nothing else — other arguments, another caller,
//! another pod — ever does. Pure: the sidecar keeps the approvals.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::compile::{CompiledPolicy, CompiledRule};

use super::decision::{Decision, Effect, Reason, ToolCall};
use super::spend::canonical;

/// The decision for a call a `RequireApproval` rule lets through only with
/// an approval.
pub(super) fn required(p: &CompiledPolicy, r: &CompiledRule) -> Decision {
    Decision {
        effect: Effect::ApprovalRequired,
        reason: Reason::Approval,
        policy: Some(p.name.clone()),
        rule: Some(r.name.clone()),
        message: Some(format!(
            "tollgate policy {:?}, rule {:?}: a person must approve this call before it runs.",
            p.name, r.name
        )),
        retry_after: None,
        deny_with: r.deny_with,
        approval: r.approval.clone(),
    }
}

/// The digest an approval is bound to: 32 lowercase hex digits (128 bits of
/// SHA-256), short enough for a Kubernetes label value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fingerprint read back (from a label or an approval record); `None`
    /// unless it has the shape [`fingerprint`] gives.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        (text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Fingerprint(text.to_owned()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked, as far as an approval is concerned: the verified subject when
/// there is one (so a retry in a new session still finds the approval),
/// else the MCP session.
pub fn caller_of(call: &ToolCall<'_>) -> Caller {
    match (call.subject, call.session) {
        (Some(s), _) => Caller::Subject(s.to_owned()),
        (None, Some(s)) => Caller::Session(s.to_owned()),
        (None, None) => Caller::Anonymous,
    }
}

/// The caller an approval is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The subject of a verified token.
    Subject(String),
    /// An MCP session, for callers without a verified identity.
    Session(String),
    /// Neither: every anonymous caller outside a session is one caller.
    Anonymous,
}

impl Caller {
    /// A readable form for approvals and logs: `subject:…`, `session:…` or
    /// `anonymous`.
    pub fn describe(&self) -> String {
        match self {
            Caller::Subject(s) => format!("subject:{s}"),
            Caller::Session(s) => format!("session:{s}"),
            Caller::Anonymous => "anonymous".to_owned(),
        }
    }

    /// The verified subject, if any: the one identity that may never
    /// approve its own call.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::Subject(s) => Some(s),
            _ => None,
        }
    }
}

/// The fingerprint of `call` under the deciding `policy` and `rule`, on the
/// pod `pod` (`None` in file mode, where the approvals live in the one
/// sidecar).
pub fn fingerprint(
    policy: &str,
    rule: &str,
    call: &ToolCall<'_>,
    pod: Option<&str>,
) -> Fingerprint {
    let caller = caller_of(call).describe();
    let arguments = canonical(call.arguments);
    let parts: [&[u8]; 6] = [
        policy.as_bytes(),
        rule.as_bytes(),
        call.tool.as_bytes(),
        &arguments,
        caller.as_bytes(),
        pod.unwrap_or("").as_bytes(),
    ];
    let mut h = Sha256::new();
    h.update(b"tollgate-approval-v1");
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Fingerprint(hex(&h.finalize()[..16]))
}

/// The SHA-256 of the canonical JSON of `arguments`, in hex: what an
/// approval shows instead of arguments marked `arguments: Digest`.
pub fn arguments_digest(arguments: &Value) -> String {
    hex(&Sha256::digest(canonical(arguments)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
