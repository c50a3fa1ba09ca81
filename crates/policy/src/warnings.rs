//! What `tollgate check` warns about in a valid policy: calls it would let
//! through that hand an agent the credentials of the server it talks to.
//!
//! kubernetes-mcp-server's `configuration_view` prints the server's
//! kubeconfig — in a pod, built from its ServiceAccount token — and its
//! generic read tools read Secrets like any other kind. Both are "reads" to
//! a tool catalogue, and both were allowed by tollgate's own first examples.
//! A warning does not fail `check`: some platforms mean it.

use crate::compile::CompiledPolicy;
use crate::resources::Op;
use crate::spec::{Action, Mode};

/// Tools known to print credentials, and what they reveal.
const CREDENTIAL_TOOLS: &[(&str, &str)] = &[(
    "configuration_view",
    "prints the MCP server's kubeconfig, credentials included",
)];

/// Tools known to read any Kubernetes kind, Secrets included.
const GENERIC_READS: &[&str] = &["resources_get", "resources_list"];

/// One warning about one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The policy.
    pub policy: String,
    /// What it lets through and why that matters.
    pub message: String,
}

/// The warnings for `policy`.
pub fn warnings(policy: &CompiledPolicy) -> Vec<Warning> {
    let mut out = Vec::new();
    if policy.mode != Mode::Enforce {
        return out;
    }
    let warn = |message: String| Warning {
        policy: policy.name.to_string(),
        message,
    };
    for (tool, what) in CREDENTIAL_TOOLS {
        if allows_unconditionally(policy, tool) {
            out.push(warn(format!(
                "it allows {tool}, which {what}; leave it out of the allowed tools"
            )));
        }
    }
    let secret = Op {
        group: String::new(),
        kind: Some("Secret".into()),
        resource: Some("secrets".into()),
        verbs: vec!["get".into(), "list".into()],
        ..Default::default()
    };
    let secrets_denied = policy
        .rules()
        .iter()
        .any(|r| r.action == Action::Deny && r.resources.iter().any(|s| s.matches(&secret)));
    for tool in GENERIC_READS {
        let denied_by_tool_rule = named_by(policy, tool)
            .into_iter()
            .any(|r| policy.rules()[r as usize].action == Action::Deny);
        if !secrets_denied && !denied_by_tool_rule && allows_unconditionally(policy, tool) {
            out.push(warn(format!(
                "it allows {tool}, which reads Secrets too; add a Deny rule for them, e.g. resources: [{{group: \"\", kind: Secret, verbs: [get, list, watch]}}]"
            )));
        }
    }
    out
}

fn named_by(policy: &CompiledPolicy, tool: &str) -> Vec<u32> {
    let mut matched = Vec::new();
    policy.matcher.rules_for(tool, None, &mut matched);
    matched
}

/// Whether every call of `tool` passes whatever its arguments: no `Deny`
/// rule without conditions names it, and an `Allow` rule without conditions
/// does, or nothing names it and the default allows.
fn allows_unconditionally(policy: &CompiledPolicy, tool: &str) -> bool {
    let matched = named_by(policy, tool);
    let tool_rules: Vec<_> = matched
        .iter()
        .map(|&i| &policy.rules()[i as usize])
        .filter(|r| r.resources.is_empty())
        .collect();
    let unconditional = |action: Action| {
        tool_rules
            .iter()
            .any(|r| r.action == action && r.conditions.is_empty() && r.subjects.is_none())
    };
    if unconditional(Action::Deny) {
        return false;
    }
    if tool_rules.is_empty() {
        return policy.default_action == Action::Allow;
    }
    unconditional(Action::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{compile_set, parse_text};

    fn warnings_of(yaml: &str) -> Vec<String> {
        let (loaded, problems) = parse_text("t.yaml", yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let set = compile_set(&loaded).unwrap();
        set.policies()
            .iter()
            .flat_map(|p| warnings(p))
            .map(|w| w.message)
            .collect()
    }

    const HEAD: &str =
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: p}\nspec:\n";

    #[test]
    fn credential_tools_and_unguarded_secret_reads_are_named() {
        let w = warnings_of(&format!(
            "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: reads, tools: [configuration_view, resources_get], action: Allow}}\n"
        ));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("configuration_view") && w[1].contains("resources_get"));
        // Allowed by default counts too.
        let w = warnings_of(&format!("{HEAD}  defaultAction: Allow\n"));
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn guarded_policies_get_no_warning() {
        for yaml in [
            format!(
                "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: reads, tools: [resources_get], action: Allow}}\n    - {{name: no-secrets, resources: [{{group: \"\", kind: Secret, verbs: [get, list]}}], action: Deny}}\n"
            ),
            format!(
                "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: reads, tools: [resources_get], action: Allow}}\n    - {{name: no-secrets, tools: [resources_get], action: Deny, arguments: [{{pointer: /kind, operator: Equals, value: Secret}}]}}\n"
            ),
            format!("{HEAD}  mode: Audit\n  defaultAction: Allow\n"),
        ] {
            assert_eq!(warnings_of(&yaml), Vec::<String>::new(), "{yaml}");
        }
    }
}
