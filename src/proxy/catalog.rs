//! What the upstream says it offers: the tool names from its own
//! `tools/list` responses (never from the client).
//!
//! Metrics use it to keep the `tool` label bounded: a name the upstream
//! listed, or a policy names exactly, is its own series; any other name an
//! agent makes up is counted as `(unlisted)`.

use std::collections::HashSet;
use std::sync::RwLock;

use crate::policy::PolicySet;

use super::metrics::UNLISTED_TOOL;

/// The most tool names remembered; past it, new names stay `(unlisted)`.
pub const MAX_TOOLS: usize = 4096;

/// Tool names the upstream listed.
#[derive(Debug, Default)]
pub struct Catalog {
    names: RwLock<HashSet<String>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers the names of a `tools/list` result.
    pub fn learn<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut known = self.names.write().unwrap_or_else(|e| e.into_inner());
        for name in names {
            if known.len() >= MAX_TOOLS {
                break;
            }
            if !known.contains(name) {
                known.insert(name.to_owned());
            }
        }
    }

    /// Whether the upstream listed `tool`.
    pub fn lists(&self, tool: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tool)
    }

    /// The metric label for `tool`.
    pub fn label<'a>(&self, tool: &'a str, set: Option<&PolicySet>) -> &'a str {
        let named = set.is_some_and(|s| s.policies().iter().any(|p| p.names_tool_exactly(tool)));
        if named || self.lists(tool) {
            tool
        } else {
            UNLISTED_TOOL
        }
    }
}
