//! What the upstream says it offers: the tools of its own `tools/list`
//! responses (never the client's word) — their names, and for servers that
//! describe them (kubernetes-mcp-server's `_meta` RBAC block) which
//! Kubernetes objects each tool touches.
//!
//! Metrics use the names to keep the `tool` label bounded: a name the
//! upstream listed, or a policy names exactly, is its own series; any other
//! name an agent makes up is counted as `(unlisted)`.
//!
//! When the upstream says its list changed
//! (`notifications/tools/list_changed`), what is known may be out of date:
//! the catalogue is marked stale until the sidecar has read the whole list
//! again, and the next call that needs it waits for that read. Until then
//! a tool the catalogue does not know is unknown, and rules that select
//! tools by what they do fail closed on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::Value;

use tollgate_mcp::tools;
use tollgate_policy::PolicySet;
use tollgate_policy::resources::ToolMeta;

use crate::metrics::UNLISTED_TOOL;

/// The most tools remembered; past it, new names stay `(unlisted)`.
pub(crate) const MAX_TOOLS: usize = 4096;

/// Tools the upstream listed.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    tools: RwLock<HashMap<String, Arc<ToolMeta>>>,
    /// Whether a complete `tools/list` has been seen.
    loaded: AtomicBool,
    /// Bumped by every `list_changed` from the upstream.
    changes: AtomicU64,
    /// The value of `changes` the last complete list of the sidecar's own
    /// was read at.
    read_at: AtomicU64,
    /// The path the sidecar's own discovery last succeeded on.
    path: Mutex<Option<String>>,
    /// Serialises the sidecar's own discovery; when it last tried.
    discovery: tokio::sync::Mutex<Option<Instant>>,
}

impl Catalog {
    /// An empty catalog.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes the sidecar's turn to ask the upstream for its tools (one at
    /// a time); the guard holds when it last tried, to space out retries.
    pub(crate) async fn discovering(&self) -> tokio::sync::MutexGuard<'_, Option<Instant>> {
        self.discovery.lock().await
    }

    /// Whether the upstream's tools are known.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Whether the tools are known and no change was announced since they
    /// were read.
    pub(crate) fn current(&self) -> bool {
        self.loaded()
            && self.read_at.load(Ordering::Acquire) == self.changes.load(Ordering::Acquire)
    }

    /// The upstream announced that its list changed: what is known stays
    /// (so known tools keep being judged), but it must be read again.
    pub(crate) fn invalidate(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Where to take before reading the whole list again: the answer to
    /// pass to [`replace`](Self::replace), so a change announced while the
    /// list is read keeps the catalogue stale.
    pub(crate) fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The path the last complete read succeeded on.
    pub(crate) fn path(&self) -> Option<String> {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers the tools of a `tools/list` result (one page of a client's
    /// listing: added to what is known).
    pub(crate) fn learn(&self, listed: &[Value]) {
        self.loaded.store(true, Ordering::Release);
        let mut known = self.tools.write().unwrap_or_else(|e| e.into_inner());
        insert(&mut known, listed);
    }

    /// Replaces what is known by the complete list the sidecar read itself
    /// on `path`, starting at `generation`: tools the upstream dropped are
    /// forgotten.
    pub(crate) fn replace(&self, listed: &[Value], generation: u64, path: &str) {
        let mut fresh = HashMap::new();
        insert(&mut fresh, listed);
        *self.tools.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
        self.read_at.store(generation, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether the upstream listed `tool`.
    pub(crate) fn lists(&self, tool: &str) -> bool {
        self.read().contains_key(tool)
    }

    /// What the upstream said `tool` touches, if it said.
    pub(crate) fn meta(&self, tool: &str) -> Option<Arc<ToolMeta>> {
        self.read().get(tool).cloned()
    }

    /// The metric label for `tool`.
    pub(crate) fn label<'a>(&self, tool: &'a str, set: Option<&PolicySet>) -> &'a str {
        let named = set.is_some_and(|s| s.policies().iter().any(|p| p.names_tool_exactly(tool)));
        if named || self.lists(tool) {
            tool
        } else {
            UNLISTED_TOOL
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<ToolMeta>>> {
        self.tools.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn insert(known: &mut HashMap<String, Arc<ToolMeta>>, listed: &[Value]) {
    for tool in listed {
        let Some(name) = tools::tool_name(tool) else {
            continue;
        };
        if known.len() >= MAX_TOOLS && !known.contains_key(name) {
            break;
        }
        known.insert(name.to_owned(), Arc::new(ToolMeta::from_tool(tool)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_change_announced_while_reading_keeps_the_catalogue_stale() {
        let c = Catalog::new();
        assert!(!c.current());
        let at = c.generation();
        c.replace(&[json!({"name": "a"})], at, "/mcp");
        assert!(c.current() && c.lists("a"));
        let before = c.generation();
        c.invalidate();
        // Known tools stay known while stale.
        assert!(!c.current() && c.lists("a"));
        // A read begun before the announcement does not make it current.
        c.replace(&[json!({"name": "b"})], before, "/mcp");
        assert!(!c.current() && !c.lists("a") && c.lists("b"));
        c.replace(&[json!({"name": "b"})], c.generation(), "/mcp");
        assert!(c.current());
        assert_eq!(c.path().as_deref(), Some("/mcp"));
    }
}
