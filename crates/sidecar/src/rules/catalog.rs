//! What the upstream says it offers: the tools of its own `tools/list`
//! responses (never the client's word) — their names, and for servers that
//! describe them (kubernetes-mcp-server's `_meta` RBAC block) which
//! Kubernetes objects each tool touches.
//!
//! Metrics use the names to keep the `tool` label bounded: a name the
//! upstream listed, or a policy names exactly, is its own series; any other
//! name an agent makes up is counted as `(unlisted)`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
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
    /// Serialises the sidecar's own discovery; when it last tried.
    pub(crate) discovery: tokio::sync::Mutex<Option<Instant>>,
}

impl Catalog {
    /// An empty catalog.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether the upstream's tools are known.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Remembers the tools of a `tools/list` result.
    pub(crate) fn learn(&self, listed: &[Value]) {
        self.loaded.store(true, Ordering::Release);
        let mut known = self.tools.write().unwrap_or_else(|e| e.into_inner());
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
