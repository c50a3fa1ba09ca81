//! The last decisions that did not simply allow a call, kept so "why was
//! request 42 denied?" has an answer without searching logs:
//! `tollgate why` / `kubectl tollgate why POD ID` read them from the admin
//! listener.
//!
//! - `GET /decisions`: every kept record, newest first;
//! - `GET /decisions/{id}`: the records of JSON-RPC request `id` (a number
//!   as written, a string id as is), newest first; 404 when none is kept.
//!
//! Only denied, audited (would-deny) and approval-held decisions are kept —
//! an allowed call costs nothing here, and allowed calls are in the audit
//! log, whose lines carry the same `request_id`. At most [`KEPT`] records;
//! the oldest goes first. A record holds what the audit line holds minus the
//! caller's subject and the arguments' digest: the admin port is reachable
//! by whatever scrapes metrics.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use tollgate_policy::{Decision, Effect};
use tollgate_runtime::body::{self, Body};

/// The path prefix of these routes.
pub(crate) const PREFIX: &str = "/decisions";
/// Records kept at most.
pub(crate) const KEPT: usize = 512;

/// One decision as `tollgate why` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// The JSON-RPC id: a number as written, a string as is.
    request_id: String,
    /// When it was decided, in seconds since the Unix epoch (as approvals say it).
    at: u64,
    tool: String,
    decision: &'static str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
    /// The session's digest, as in the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_sha256: Option<String>,
}

/// The kept records.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    records: Mutex<VecDeque<Record>>,
}

/// The text a JSON-RPC id is looked up by.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Recent {
    /// Keeps `d` if it did not simply allow the call.
    pub(crate) fn record(
        &self,
        d: &Decision,
        tool: &str,
        request_id: &Value,
        session: Option<&str>,
    ) {
        if d.effect == Effect::Allowed {
            return;
        }
        let record = Record {
            request_id: id_text(request_id),
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            tool: tool.to_owned(),
            decision: d.effect.as_str(),
            reason: d.reason.as_str(),
            policy: d.policy.as_deref().map(str::to_owned),
            rule: d.rule.as_deref().map(str::to_owned),
            message: d.message.clone(),
            retry_after_seconds: d.retry_after.map(|r| r.as_secs_f64().ceil() as u64),
            session_sha256: session.map(crate::audit::digest),
        };
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() == KEPT {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// Records of request `id`, newest first (all of them for `None`).
    fn find(&self, id: Option<&str>) -> Vec<Record> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .rev()
            .filter(|r| id.is_none_or(|id| r.request_id == id))
            .cloned()
            .collect()
    }

    /// Answers a request under [`PREFIX`].
    pub(crate) fn route<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET {
            return body::status(StatusCode::METHOD_NOT_ALLOWED);
        }
        let rest = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
        match rest.trim_matches('/') {
            "" => body::json(StatusCode::OK, &json!({ "decisions": self.find(None) })),
            id => {
                let id = percent_decode(id);
                let found = self.find(Some(&id));
                if found.is_empty() {
                    body::json(
                        StatusCode::NOT_FOUND,
                        &json!({ "error": format!(
                            "no decision kept for request id {id:?}: this sidecar keeps the last {KEPT} denied, audited or held calls; allowed calls are only in its audit log (request_id)"
                        ) }),
                    )
                } else {
                    body::json(StatusCode::OK, &json!({ "decisions": found }))
                }
            }
        }
    }
}

/// `%XX` escapes decoded (a string request id may hold any character);
/// an invalid escape is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(rule: &str) -> Decision {
        let mut d = Decision::allowed_by_default();
        d.effect = Effect::Denied;
        d.rule = Some(rule.into());
        d
    }

    #[test]
    fn keeps_what_was_not_allowed_by_id_newest_first_and_forgets_the_oldest() {
        let recent = Recent::default();
        recent.record(&Decision::allowed_by_default(), "t", &json!(1), None);
        assert!(recent.find(None).is_empty(), "an allowed call is not kept");
        recent.record(&denied("a"), "t", &json!(7), None);
        recent.record(&denied("b"), "t", &json!("x/7"), None);
        recent.record(&denied("c"), "t", &json!(7), None);
        let sevens: Vec<_> = recent.find(Some("7")).into_iter().map(|r| r.rule).collect();
        assert_eq!(sevens, vec![Some("c".to_owned()), Some("a".to_owned())]);
        assert_eq!(recent.find(Some(&percent_decode("x%2F7"))).len(), 1);
        for i in 0..KEPT {
            recent.record(&denied("later"), "t", &json!(1000 + i), None);
        }
        assert_eq!(recent.find(None).len(), KEPT);
        assert!(recent.find(Some("7")).is_empty(), "the oldest went first");
    }
}
