//! One structured line per decision, for whoever must answer "which agent
//! tried what, and what did tollgate do?".
//!
//! Arguments can hold secrets, so by default only a digest is written: equal
//! arguments give equal digests, which is enough to correlate repeated
//! attempts without keeping their content. Session ids are bearer
//! credentials for the session and are digested too.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use tollgate_policy::Decision;

/// Which decisions are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditLevel {
    /// Every decision.
    #[default]
    All,
    /// Denied and audited calls only.
    Denials,
    /// None.
    Off,
}

/// How the audit log is written.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditConfig {
    /// Which decisions.
    pub level: AuditLevel,
    /// Write arguments in clear instead of their digest.
    pub log_arguments: bool,
}

/// One decided call, as the audit line describes it.
pub struct Entry<'a> {
    /// The decision.
    pub decision: &'a Decision,
    /// The tool name as sent (not the metric label).
    pub tool: &'a str,
    /// The arguments as sent.
    pub arguments: &'a Value,
    /// The session, if one was known.
    pub session: Option<&'a str>,
    /// The caller's verified subject, if any.
    pub subject: Option<&'a str>,
    /// The JSON-RPC id.
    pub request_id: &'a Value,
    /// Time to decide.
    pub elapsed: Duration,
}

impl AuditConfig {
    /// Writes the line for `e`, if the level asks for it.
    pub fn record(&self, e: &Entry<'_>) {
        let d = e.decision;
        match self.level {
            AuditLevel::Off => return,
            AuditLevel::Denials if d.effect == tollgate_policy::Effect::Allowed => return,
            _ => {}
        }
        let arguments = self.log_arguments.then(|| e.arguments.to_string());
        tracing::info!(
            target: "tollgate::audit",
            decision = d.effect.as_str(),
            reason = d.reason.as_str(),
            policy = d.policy.as_deref(),
            rule = d.rule.as_deref(),
            tool = e.tool,
            request_id = %e.request_id,
            session = e.session.map(digest),
            subject = e.subject,
            arguments_sha256 = json_digest(e.arguments),
            arguments = arguments,
            retry_after_seconds = d.retry_after.map(|r| r.as_secs_f64().ceil() as u64),
            decision_us = e.elapsed.as_micros() as u64,
            denial = d.message.as_deref(),
            "tool call {}", d.effect.as_str()
        );
    }
}

/// The first 16 hex digits of SHA-256: enough to correlate, short to read.
pub(crate) fn digest(text: impl AsRef<[u8]>) -> String {
    short_hex(&Sha256::digest(text.as_ref()))
}

/// [`digest`] of `value`'s compact JSON, hashed as it is written rather
/// than built as a string first.
fn json_digest(value: &Value) -> String {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Writing a Value cannot fail, and this writer never does.
    let _ = serde_json::to_writer(&mut h, value);
    short_hex(&h.0.finalize())
}

fn short_hex(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in &hash[..8] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn digests_are_the_sha256_prefix_of_the_compact_json() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(digest("abc"), "ba7816bf8f01cfea");
        let args = json!({"namespace": "vms", "name": "vm-1", "n": [1, 2.5, null]});
        assert_eq!(json_digest(&args), digest(args.to_string()));
        assert_eq!(json_digest(&json!({})), digest("{}"));
    }
}
