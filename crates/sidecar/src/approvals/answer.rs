//! What the agent reads about its call's approval: a tool error a model can
//! act on — the approval id, that a person must approve, until when it is
//! valid, and that the same call retried after approval passes (once) —
//! with the same facts as data in `_meta["dev.tollgate/approval"]`.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::store::{Phase, Record};

/// The `_meta` key the facts travel under.
pub(crate) const META_KEY: &str = "dev.tollgate/approval";

/// The text and facts for a call whose approval is pending.
pub(crate) fn pending(r: &Record, how: &str) -> (String, Value) {
    let left = r
        .expires
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs());
    let votes = if r.min_approvals > 1 {
        format!(
            " It needs {} approvals from different people; it has {}.",
            r.min_approvals,
            r.approvals.len()
        )
    } else {
        String::new()
    };
    let text = format!(
        "Approval required: tollgate policy {:?}, rule {:?} lets this call run only after a person approves it. \
         Approval {} is pending and stays valid for {left} more seconds.{votes} \
         Ask a person to approve it ({how}). \
         Once approved, retry exactly the same call with the same arguments: it will run once. \
         A call with other arguments needs its own approval. Do not retry before it is approved.",
        r.call.policy, r.call.rule, r.id
    );
    (text, facts(r, left))
}

/// The text and facts for a call a person rejected.
pub(crate) fn rejected(r: &Record) -> (String, Value) {
    let by = r.rejection.as_ref().map_or("a person", |v| v.by.as_str());
    let why = r
        .rejection
        .as_ref()
        .and_then(|v| v.reason.as_deref())
        .map(|w| format!(" Reason: {w}."))
        .unwrap_or_default();
    let text = format!(
        "Denied by tollgate policy {:?}, rule {:?}: {by} rejected this call (approval {}); the rejection is final.{why} Do not retry it.",
        r.call.policy, r.call.rule, r.id
    );
    (text, facts(r, 0))
}

/// The text for a call refused because no more approvals can be kept.
pub(crate) fn full() -> String {
    "Denied by tollgate: too many approvals are pending on this server to ask for another; retry after some are decided or expire.".to_owned()
}

/// The text for a call refused because its approval could not be kept in
/// the cluster (managed mode): fail closed, say why.
pub(crate) fn unavailable(e: &super::cluster::ClusterError) -> String {
    format!(
        "Denied by tollgate: this call needs a person's approval, but the approval could not be recorded ({e}). Retry later."
    )
}

fn facts(r: &Record, valid_for: u64) -> Value {
    json!({
        "id": r.id,
        "phase": r.phase,
        "policy": r.call.policy,
        "rule": r.call.rule,
        "approvals": r.approvals.len(),
        "minApprovals": r.min_approvals,
        "expiresAt": r.expires_at,
        "validForSeconds": valid_for,
        "retrySameCall": r.phase == Phase::Pending,
    })
}
