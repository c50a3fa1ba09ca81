//! What a tool does, as the MCP server that offers it says: the hints of its
//! `tools/list` entry (`annotations.readOnlyHint`, `destructiveHint`,
//! `idempotentHint`, `openWorldHint`) and, for kubernetes-mcp-server, the
//! Kubernetes verbs its `_meta["io.kubernetes-mcp-server/rbac"]` block says
//! the tool needs.
//!
//! Read only from the upstream's own `tools/list`, never from a client. A
//! hint the server leaves out takes the value the MCP specification gives
//! it, and those defaults are the cautious ones (not read-only, destructive,
//! not idempotent, open world). What a server does not state at all — the
//! verbs of a server without the rbac block, or anything about a tool it did
//! not list — is unknown, and rules that select tools by it fail closed (see
//! [`crate::compile::selector`]).

use serde_json::Value;

/// The `_meta` key kubernetes-mcp-server describes its tools' RBAC needs in.
pub const RBAC_META: &str = "io.kubernetes-mcp-server/rbac";

/// The annotation hints exactly as the server wrote them; `None` where it
/// wrote nothing (or something that is not a boolean).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Whether the tool has an `annotations` object at all.
    pub stated: bool,
    /// `readOnlyHint`.
    pub read_only: Option<bool>,
    /// `destructiveHint`.
    pub destructive: Option<bool>,
    /// `idempotentHint`.
    pub idempotent: Option<bool>,
    /// `openWorldHint`.
    pub open_world: Option<bool>,
}

/// What one tool does, as its server says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    hints: Hints,
    /// The verbs of the rbac block, sorted; `Some(empty)` for a tool that
    /// needs no Kubernetes access (`none`); `None` when not stated.
    rbac_verbs: Option<Vec<String>>,
}

impl Behaviour {
    /// Reads a `tools/list` entry.
    pub fn from_tool(tool: &Value) -> Behaviour {
        let annotations = tool.get("annotations").and_then(Value::as_object);
        let hint = |key: &str| {
            annotations
                .and_then(|a| a.get(key))
                .and_then(Value::as_bool)
        };
        Behaviour {
            hints: Hints {
                stated: annotations.is_some(),
                read_only: hint("readOnlyHint"),
                destructive: hint("destructiveHint"),
                idempotent: hint("idempotentHint"),
                open_world: hint("openWorldHint"),
            },
            rbac_verbs: rbac_verbs(tool),
        }
    }

    /// The hints as written.
    pub(crate) fn hints(&self) -> &Hints {
        &self.hints
    }

    /// Whether the tool only reads (`readOnlyHint`, default false).
    pub fn read_only(&self) -> bool {
        self.hints.read_only.unwrap_or(false)
    }

    /// Whether the tool may destroy or overwrite: never for a read-only
    /// tool (the hint means nothing there); else `destructiveHint`,
    /// default true.
    pub fn destructive(&self) -> bool {
        !self.read_only() && self.hints.destructive.unwrap_or(true)
    }

    /// Whether calling it again with the same arguments changes nothing
    /// more: a read-only tool always; else `idempotentHint`, default false.
    pub(crate) fn idempotent(&self) -> bool {
        self.read_only() || self.hints.idempotent.unwrap_or(false)
    }

    /// Whether the tool reaches beyond a closed set of things
    /// (`openWorldHint`, default true).
    pub(crate) fn open_world(&self) -> bool {
        self.hints.open_world.unwrap_or(true)
    }

    /// The Kubernetes verbs the server says the tool needs, sorted; `None`
    /// when it does not say.
    pub(crate) fn rbac_verbs(&self) -> Option<&[String]> {
        self.rbac_verbs.as_deref()
    }
}

/// The verbs of kubernetes-mcp-server's rbac block: `none` is a statement
/// (no access at all), `bounded.requirements[].verbs` lists them; any other
/// shape says nothing this reader understands.
fn rbac_verbs(tool: &Value) -> Option<Vec<String>> {
    let rbac = tool.get("_meta")?.get(RBAC_META)?.as_object()?;
    if rbac.contains_key("none") {
        return Some(Vec::new());
    }
    let requirements = rbac.get("bounded")?.get("requirements")?.as_array()?;
    let mut verbs: Vec<String> = requirements
        .iter()
        .filter_map(|r| r.get("verbs").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    verbs.sort();
    verbs.dedup();
    Some(verbs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_hints_take_the_cautious_defaults_of_the_specification() {
        let bare = Behaviour::from_tool(&json!({"name": "t"}));
        assert!(!bare.hints().stated);
        assert!(!bare.read_only() && bare.destructive() && !bare.idempotent() && bare.open_world());
        assert_eq!(bare.rbac_verbs(), None);
        // A hint that is not a boolean is not a hint.
        let odd = Behaviour::from_tool(
            &json!({"name": "t", "annotations": {"readOnlyHint": "true", "destructiveHint": 0}}),
        );
        assert!(odd.hints().stated && !odd.read_only() && odd.destructive());
    }

    #[test]
    fn read_only_tools_are_neither_destructive_nor_anything_but_idempotent() {
        let b = Behaviour::from_tool(
            &json!({"name": "t", "annotations": {"readOnlyHint": true, "destructiveHint": true, "idempotentHint": false}}),
        );
        assert!(b.read_only() && !b.destructive() && b.idempotent());
    }

    #[test]
    fn rbac_verbs_of_kubernetes_mcp_server() {
        let none = json!({"name": "configuration_view", "_meta": {RBAC_META: {"version": "v1alpha1", "none": {}}}});
        assert_eq!(Behaviour::from_tool(&none).rbac_verbs(), Some(&[][..]));
        let bounded = json!({"name": "pods_delete", "_meta": {RBAC_META: {"bounded": {"requirements": [
            {"verbs": ["get", "delete"], "target": {"resource": {"resource": "pods"}}},
            {"verbs": ["list", "get"]}
        ]}}}});
        let b = Behaviour::from_tool(&bounded);
        assert_eq!(
            b.rbac_verbs().unwrap(),
            ["delete", "get", "list"].map(String::from)
        );
        let unbounded = json!({"name": "x", "_meta": {RBAC_META: {"unbounded": {}}}});
        assert_eq!(Behaviour::from_tool(&unbounded).rbac_verbs(), None);
    }
}
