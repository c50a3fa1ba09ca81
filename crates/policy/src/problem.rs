//! What is wrong with a policy, said so a user can fix it.
//!
//! Every problem names where it is (file and document, or the Kubernetes
//! object), the field path inside the policy, and what to write instead. The
//! same type is printed by `tollgate check`, logged by the sidecar when a
//! reload is refused, and written into a policy's `Accepted` condition.

use std::fmt;

/// One thing wrong with a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (and document) or object the policy came from; empty when
    /// the caller has not said yet.
    pub source: String,
    /// The field, as a path like `spec.rules[2].rateLimits[0].window`.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
    /// Line and column in the file (1-based), where known.
    pub location: Option<(u64, u64)>,
}

impl Problem {
    /// A problem at `path` with no source attached yet.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            source: String::new(),
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }

    /// The same problem, at `line` and `column` of its file.
    pub(crate) fn at_location(mut self, line: u64, column: u64) -> Self {
        self.location = Some((line, column));
        self
    }

    /// The same problem, attributed to `source`.
    pub fn in_source(mut self, source: &str) -> Self {
        self.source = source.to_owned();
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some((line, column)), false) = (self.location, self.source.is_empty()) {
            return write!(f, "{}:{line}:{column}: {}", self.source, self.message);
        }
        match (self.source.is_empty(), self.path.is_empty()) {
            (false, false) => write!(f, "{}: {}: {}", self.source, self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.source, self.message),
            (true, false) => write!(f, "{}: {}", self.path, self.message),
            (true, true) => f.write_str(&self.message),
        }
    }
}

/// Several problems, displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// "missing field `x`", with what to write.
pub(crate) fn missing_field(field: &str) -> String {
    let hint = match field {
        "defaultAction" => "add `defaultAction: Deny` (or `Allow`)",
        "name" => "add `name:` with a unique rule name",
        "tools" => "add `tools: [...]` with tool names or globs",
        "action" => "add `action: Allow` or `action: Deny`",
        "pointer" => "add `pointer: /argumentName`",
        "operator" => {
            "add `operator:` (Equals, NotEquals, In, NotIn, Matches, Exists, NotExists, Lt, Lte, Gt, Gte, MaxLength)"
        }
        "requests" => "add `requests:` with the number of calls per window",
        "window" => "add `window:` such as `1m`",
        "spec" => "add a `spec:` with at least `defaultAction`",
        "metadata" => "add `metadata: {name: ...}`",
        _ => "add it",
    };
    format!("missing field `{field}`: {hint}")
}
