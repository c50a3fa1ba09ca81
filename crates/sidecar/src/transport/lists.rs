//! Rewriting `tools/list` responses on their way to the client: the tools a
//! policy hides from this caller are removed, and every list teaches the
//! gate's catalogue what the upstream offers (what rules on tool
//! annotations and created objects read); an upstream's
//! `notifications/tools/list_changed` makes the catalogue read it again.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use tollgate_mcp::{sse, tools};

use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::transport::relay::Hook;

/// Filters `tools/list` results for the requests of one POST, and teaches
/// the catalog what the upstream offers.
pub(crate) struct ListHook {
    /// The proxy.
    pub proxy: Arc<Proxy>,
    /// Ids of the `tools/list` requests whose responses to rewrite.
    pub ids: Vec<Value>,
    /// Who asked: what a caller may see depends on who it is.
    pub subject: Option<String>,
}

impl ListHook {
    /// Rewrites `value` (a response or a batch of them); true if it changed.
    pub(crate) fn rewrite(&mut self, value: &mut Value) -> bool {
        let (ids, subject) = (&self.ids, &self.subject);
        rewrite_lists(self.proxy.gate(), self.proxy.metrics(), value, &mut |id| {
            ids.contains(id).then(|| subject.clone())
        })
    }
}

impl Hook for ListHook {
    fn on_event(&mut self, event: &sse::Event) -> Option<Bytes> {
        notice_list_changed(&self.proxy, event);
        if !event.is_message() || self.ids.is_empty() {
            return None;
        }
        let mut value: Value = serde_json::from_str(&event.data).ok()?;
        self.rewrite(&mut value).then(|| {
            sse::encode(
                event.event.as_deref(),
                event.id.as_deref(),
                &value.to_string(),
            )
        })
    }
}

/// Tells the proxy when the upstream announces, on a stream it relays, that
/// its tool list changed (the event is still relayed to the client).
pub(crate) fn notice_list_changed(proxy: &Arc<Proxy>, event: &sse::Event) {
    if !event.is_message() || !event.data.contains(tools::LIST_CHANGED) {
        return;
    }
    let announced = serde_json::from_str::<Value>(&event.data).is_ok_and(|v| {
        let one = |m: &Value| m.get("method").and_then(Value::as_str) == Some(tools::LIST_CHANGED);
        match &v {
            Value::Array(items) => items.iter().any(one),
            single => one(single),
        }
    });
    if announced {
        proxy.tools_changed();
    }
}

/// For each response in `value` whose id `is_list` accepts (giving the
/// subject who asked): learns the tool names and removes the tools hidden
/// from that caller. True if anything was removed.
pub(crate) fn rewrite_lists(
    gate: &Gate,
    metrics: &Metrics,
    value: &mut Value,
    is_list: &mut dyn FnMut(&Value) -> Option<Option<String>>,
) -> bool {
    let items: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        single => vec![single],
    };
    let mut changed = false;
    for item in items {
        let Some(id) = item.get("id") else { continue };
        let Some(subject) = is_list(id) else {
            continue;
        };
        let Some(result) = item.get_mut("result") else {
            continue;
        };
        if let Some(listed) = tools::listed(result) {
            gate.catalog().learn(listed);
        }
        if gate.may_hide() {
            let removed = tools::filter_list(result, |name| gate.hides(name, subject.as_deref()));
            if removed > 0 {
                metrics.tools_hidden(removed as u64);
                changed = true;
            }
        }
    }
    changed
}
