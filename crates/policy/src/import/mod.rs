//! `tollgate import`: policies written for other MCP gateways, turned into
//! an equivalent `McpToolPolicy`.
//!
//! Each importer reads its format strictly (an unknown field is an error
//! naming it, never dropped), maps what has a tollgate equivalent, notes
//! beside the output where the mapping needs a human's eye (a window that
//! slides where the original's resets, a scope tollgate reads differently),
//! and refuses with an error naming the field what it cannot express. The
//! result is YAML that `tollgate check` accepts; `render` writes it with the
//! notes as comments. See docs/import.md.

pub mod intercept;
pub mod policylayer;
mod render;

#[cfg(test)]
mod tests;

use crate::spec::McpToolPolicySpec;

pub use render::render;

/// An imported policy, with what a reader should check.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// `metadata.name`.
    pub name: String,
    /// The spec.
    pub spec: McpToolPolicySpec,
    /// Notes on the policy as a whole (comments at its top).
    pub notes: Vec<String>,
    /// Notes on rules, by rule name (comments above the rule).
    pub rule_notes: Vec<(String, String)>,
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `metadata.name` of the result (default: `imported`).
    pub name: Option<String>,
    /// Tool names to replace: the original names a tool the server behind
    /// tollgate calls otherwise (`vm_clone` → `clone_snapshot`).
    pub rename: Vec<(String, String)>,
}

impl Options {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "imported".into())
    }

    /// The tool name to write for `tool`, and a note if it was renamed.
    fn tool(&self, tool: &str) -> (String, Option<String>) {
        match self.rename.iter().find(|(from, _)| from == tool) {
            Some((from, to)) => (
                to.clone(),
                Some(format!(
                    "the original names this tool {from:?}; renamed to {to:?} (--tool {from}={to})"
                )),
            ),
            None => (tool.to_owned(), None),
        }
    }
}

/// What could not be imported, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// The file is not the format (syntax, an unknown field, a wrong type).
    #[error("{field}: {message}")]
    Invalid {
        /// Where, as a path into the original (`tools.vm_clone.limits[0].scope`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Valid in the original, but tollgate has no equivalent.
    #[error("{field}: cannot be imported: {why}")]
    Unsupported {
        /// Where, as a path into the original.
        field: String,
        /// What tollgate lacks, and what to do instead.
        why: String,
    },
}

impl ImportError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ImportError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn unsupported(field: impl Into<String>, why: impl Into<String>) -> Self {
        ImportError::Unsupported {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// A policy's `default` (`allow`, the default, or `deny`); anything else is
/// an error that quotes `expected`, and reads as `allow` so the rest of the
/// file is still checked.
fn default_action(
    default: Option<&str>,
    expected: &str,
    errors: &mut Vec<ImportError>,
) -> crate::spec::Action {
    use crate::spec::Action;
    match default {
        None | Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        Some(other) => {
            errors.push(ImportError::invalid(
                "default",
                format!("{other:?}; {expected}"),
            ));
            Action::Allow
        }
    }
}

/// Every error, one per line.
pub struct ImportErrors(pub Vec<ImportError>);

impl std::fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A rule name from a tool name: rule names are 1-63 of `[A-Za-z0-9._-]`.
fn rule_name(base: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if name.is_empty() {
        name = "rule".into();
    }
    let mut candidate = name.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    candidate
}

/// A budget name from a counter name, if it is one tollgate accepts.
fn budget_name(counter: &str) -> Option<String> {
    let ok = !counter.is_empty()
        && counter.len() <= 63
        && counter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then(|| counter.to_owned())
}

/// Reads JSON or YAML into `T` strictly, naming the field of any error.
fn read<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ImportError> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ImportError::invalid("(file)", format!("neither JSON nor YAML: {e}")))?,
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ImportError::invalid(
            if path == "." { "(top)".into() } else { path },
            e.inner().to_string(),
        )
    })
}
