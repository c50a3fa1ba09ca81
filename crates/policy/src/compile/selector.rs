//! `toolSelector`: rules that name tools by what their server says they
//! do, so a tool the server adds later is covered by the rule that fits it
//! rather than only by `defaultAction`.
//!
//! A selector answers in three values. What the server states answers yes
//! or no; what it does not state — a tool missing from its `tools/list`, or
//! verbs from a server without an rbac block — is unknown. Unknown fails
//! closed: a `Deny` rule treats it as a match, an `Allow` rule cannot allow
//! with it (see `evaluate::judge`).

use crate::behaviour::Behaviour;
use crate::problem::Problem;
use crate::spec::ToolSelector;

/// How a selector answers for one tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    /// What the server states matches.
    Yes,
    /// What the server states does not match.
    No,
    /// The server does not state it; says what is missing.
    Unknown(String),
}

/// A `toolSelector`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolTest {
    read_only: Option<bool>,
    destructive: Option<bool>,
    idempotent: Option<bool>,
    open_world: Option<bool>,
    rbac_verbs: Vec<String>,
}

impl ToolTest {
    /// Checks `selector` (at `path`).
    pub fn compile(selector: &ToolSelector, path: &str) -> Result<ToolTest, Vec<Problem>> {
        let mut problems = Vec::new();
        let empty = selector.read_only.is_none()
            && selector.destructive.is_none()
            && selector.idempotent.is_none()
            && selector.open_world.is_none()
            && selector.rbac_verbs.is_empty();
        if empty {
            problems.push(Problem::at(
                path,
                "an empty toolSelector selects every tool; give `readOnly`, `destructive`, `idempotent`, `openWorld` or `rbacVerbs`, or write `tools: [\"*\"]`",
            ));
        }
        if selector.read_only == Some(true) {
            for (field, given) in [
                ("destructive", selector.destructive),
                ("idempotent", selector.idempotent),
            ] {
                if given.is_some() {
                    problems.push(Problem::at(
                        format!("{path}.{field}"),
                        format!("`{field}` describes tools that change things, and `readOnly: true` selects tools that do not: a read-only tool is never destructive and always idempotent; remove `{field}`"),
                    ));
                }
            }
        }
        for (i, verb) in selector.rbac_verbs.iter().enumerate() {
            let ok =
                !verb.is_empty() && (verb == "*" || verb.chars().all(|c| c.is_ascii_lowercase()));
            if !ok {
                problems.push(Problem::at(
                    format!("{path}.rbacVerbs[{i}]"),
                    format!(
                        "{verb:?} is not a Kubernetes verb; write lowercase verbs such as get, list, watch, create, update, patch, delete"
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut rbac_verbs = selector.rbac_verbs.clone();
        rbac_verbs.sort();
        rbac_verbs.dedup();
        Ok(ToolTest {
            read_only: selector.read_only,
            destructive: selector.destructive,
            idempotent: selector.idempotent,
            open_world: selector.open_world,
            rbac_verbs,
        })
    }

    /// How the selector answers for a tool the server describes as
    /// `behaviour` (`None`: the server did not list it).
    pub fn test(&self, tool: &str, behaviour: Option<&Behaviour>) -> Selected {
        let Some(b) = behaviour else {
            return Selected::Unknown(format!(
                "the MCP server's tools/list does not list {tool:?}, so what it does is unknown"
            ));
        };
        let hints = [
            (self.read_only, b.read_only()),
            (self.destructive, b.destructive()),
            (self.idempotent, b.idempotent()),
            (self.open_world, b.open_world()),
        ];
        if hints
            .iter()
            .any(|(want, is)| want.is_some_and(|w| w != *is))
        {
            return Selected::No;
        }
        if self.rbac_verbs.is_empty() {
            return Selected::Yes;
        }
        match b.rbac_verbs() {
            None => Selected::Unknown(format!(
                "the MCP server does not state which Kubernetes verbs {tool:?} needs"
            )),
            Some(verbs) => {
                let any = self
                    .rbac_verbs
                    .iter()
                    .any(|want| want == "*" || verbs.iter().any(|v| v == want || v == "*"));
                if any { Selected::Yes } else { Selected::No }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(v: serde_json::Value) -> Result<ToolTest, Vec<Problem>> {
        ToolTest::compile(&serde_json::from_value(v).unwrap(), "s")
    }

    fn tool(v: serde_json::Value) -> Behaviour {
        Behaviour::from_tool(&v)
    }

    #[test]
    fn hints_answer_yes_or_no_with_the_specification_defaults() {
        let writes = selector(json!({"readOnly": false, "destructive": false})).unwrap();
        let run = tool(json!({"annotations": {"readOnlyHint": false, "destructiveHint": false}}));
        let delete = tool(json!({"annotations": {"readOnlyHint": false}}));
        let bare = tool(json!({}));
        assert_eq!(writes.test("pods_run", Some(&run)), Selected::Yes);
        assert_eq!(writes.test("pods_delete", Some(&delete)), Selected::No);
        // No annotations: not read-only and destructive, per the defaults.
        assert_eq!(writes.test("x", Some(&bare)), Selected::No);
        let destructive = selector(json!({"destructive": true})).unwrap();
        assert_eq!(destructive.test("x", Some(&bare)), Selected::Yes);
    }

    #[test]
    fn what_the_server_does_not_state_is_unknown() {
        let reads = selector(json!({"readOnly": true})).unwrap();
        assert!(matches!(reads.test("new_tool", None), Selected::Unknown(_)));
        let creates = selector(json!({"rbacVerbs": ["create"]})).unwrap();
        let no_rbac = tool(json!({"annotations": {"readOnlyHint": false}}));
        assert!(matches!(
            creates.test("x", Some(&no_rbac)),
            Selected::Unknown(m) if m.contains("verbs")
        ));
        let run = tool(
            json!({"_meta": {crate::behaviour::RBAC_META: {"bounded": {"requirements": [{"verbs": ["create", "patch"]}]}}}}),
        );
        let none = tool(json!({"_meta": {crate::behaviour::RBAC_META: {"none": {}}}}));
        assert_eq!(creates.test("pods_run", Some(&run)), Selected::Yes);
        assert_eq!(
            creates.test("configuration_view", Some(&none)),
            Selected::No
        );
    }

    #[test]
    fn contradictions_and_empty_selectors_are_refused() {
        assert!(selector(json!({})).is_err());
        let e = selector(json!({"readOnly": true, "destructive": false})).unwrap_err();
        assert_eq!(e[0].path, "s.destructive");
        let e = selector(json!({"rbacVerbs": ["Delete", ""]})).unwrap_err();
        assert_eq!(e.len(), 2);
    }
}
