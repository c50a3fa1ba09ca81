//! What `tollgate check` warns about in a valid policy: calls it would let
//! through that hand an agent the credentials of the server it talks to,
//! and — given the server's tool list — tool patterns that name no tool of
//! that server (a `vm_clonee` in a `Deny` rule denies nothing).
//!
//! kubernetes-mcp-server's `configuration_view` prints the server's
//! kubeconfig — in a pod, built from its ServiceAccount token — and its
//! generic read tools read Secrets like any other kind. Both are "reads" to
//! a tool catalogue, and both were allowed by tollgate's own first examples.
//! A warning does not fail `check`: some platforms mean it.
//!
//! It also names limits that cannot be spent: an object draws only on the
//! limits of the first `Allow` rule that allows it (the same first-match
//! model as rate limits), so the budgets and caps of a later resource rule
//! whose every object an earlier, condition-free rule already allows are
//! dead weight a reader would take for protection.

use crate::catalogue::Catalogue;
use crate::compile::matcher::{compile_glob, is_glob};
use crate::compile::selector::Selected;
use crate::compile::{CompiledPolicy, CompiledRule};
use crate::load::LoadedPolicy;
use crate::resources::{Op, ToolMeta};
use crate::spec::{Action, Mode, RuleAction};
use crate::suggest::nearest;

/// Tools known to print credentials, and what they reveal.
pub const CREDENTIAL_TOOLS: &[(&str, &str)] = &[(
    "configuration_view",
    "prints the MCP server's kubeconfig, credentials included",
)];

/// Tools known to read any Kubernetes kind, Secrets included.
pub const GENERIC_READS: &[&str] = &["resources_get", "resources_list"];

/// One warning about one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The policy.
    pub policy: String,
    /// The field it is about, if one (`spec.rules[0].tools[1]`).
    pub path: String,
    /// What it lets through and why that matters.
    pub message: String,
}

/// The warnings for `policy`, judged without the server's tool list: rules
/// that select tools by what they do are read the lenient way (so a warning
/// is not missed), an `Allow` as allowing and a `Deny` as not denying.
pub fn warnings(policy: &CompiledPolicy) -> Vec<Warning> {
    warnings_with(policy, None)
}

/// The warnings for `policy`, judged against `catalogue` when given.
pub fn warnings_with(policy: &CompiledPolicy, catalogue: Option<&Catalogue>) -> Vec<Warning> {
    let mut out = Vec::new();
    if policy.mode != Mode::Enforce {
        return out;
    }
    let warn = |message: String| Warning {
        policy: policy.name.to_string(),
        path: String::new(),
        message,
    };
    let tool = |name: &'static str| Tool {
        name,
        meta: catalogue.and_then(|c| c.meta(name)),
        known: catalogue.is_some(),
    };
    for (name, what) in CREDENTIAL_TOOLS {
        let tool = tool(name);
        if catalogue.is_some_and(|c| c.meta(name).is_none()) {
            continue;
        }
        if allows_unconditionally(policy, &tool) {
            out.push(warn(format!(
                "it allows {name}, which {what}; leave it out of the allowed tools"
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
    for name in GENERIC_READS {
        if catalogue.is_some_and(|c| c.meta(name).is_none()) {
            continue;
        }
        let tool = tool(name);
        let denied_by_tool_rule = named_by(policy, &tool)
            .into_iter()
            .any(|r| policy.rules()[r as usize].action == Action::Deny);
        if !secrets_denied && !denied_by_tool_rule && allows_unconditionally(policy, &tool) {
            out.push(warn(format!(
                "it allows {name}, which reads Secrets too; add a Deny rule for them, e.g. resources: [{{group: \"\", kind: Secret, verbs: [get, list, watch]}}]"
            )));
        }
    }
    out.extend(shadowed_limits(policy));
    out
}

/// Resource `Allow` rules with limits (budgets, rate limits, `inFlight`,
/// `runningVMs`) whose objects an earlier `Allow` rule without conditions
/// allows first. The earlier rule can still pass an object on when it
/// cannot count it (an unknown size under `whenUnknown: Deny`, a running-VM
/// count that is not current), and only then are the later rule's limits
/// spent. An earlier rule that names tools does this for the calls of those
/// tools only — which is how a budget meant for every tool quietly stops
/// applying to one of them.
fn shadowed_limits(policy: &CompiledPolicy) -> Vec<Warning> {
    let rules = policy.rules();
    let allowing = |r: &CompiledRule| r.action == Action::Allow && !r.resources.is_empty();
    let mut out = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        let limited =
            !later.limits.is_empty() || !later.in_flight.is_empty() || later.running_vms.is_some();
        if !allowing(later) || !limited {
            continue;
        }
        // An earlier rule naming tools shadows the later one for those
        // tools' calls; when the later rule names tools too, whether theirs
        // overlap is not known here, so it is not named.
        let shadow = rules[..j].iter().find(|r| {
            allowing(r)
                && (!r.has_tools || !later.has_tools)
                && r.conditions.is_empty()
                && r.subjects.is_none()
                && r.namespaces.is_none()
                && r.clone.is_none()
                && r.lifecycle.is_none()
                && later
                    .resources
                    .iter()
                    .all(|s| r.resources.iter().any(|e| e.covers(s)))
        });
        if let Some(first) = shadow {
            // Whether the earlier rule passes some objects on: those it
            // cannot count.
            let passes_on = first.running_vms.is_some()
                || !first.in_flight.is_empty()
                || first
                    .limits
                    .iter()
                    .any(|l| l.limit.size.is_some() && !l.unknown_allowed);
            let calls = if first.has_tools {
                format!(" for calls of the tools rule {:?} names", first.name)
            } else {
                String::new()
            };
            let when = if passes_on {
                format!(
                    "apply{calls} only to objects rule {:?} cannot count (an unknown size, a running-VM count that is not current)",
                    first.name
                )
            } else {
                format!(
                    "never apply{calls}: rule {:?} allows every object first",
                    first.name
                )
            };
            out.push(Warning {
                policy: policy.name.to_string(),
                path: format!("spec.rules[{j}]"),
                message: format!(
                    "the budgets and caps of rule {:?} {when}; that earlier rule matches every object this one does and has no conditions, and an object draws only on the limits of the first Allow rule that allows it; put all of an object's limits on one rule",
                    later.name
                ),
            });
        }
    }
    out
}

/// A tool as far as the warnings know it.
struct Tool<'a> {
    name: &'a str,
    meta: Option<&'a ToolMeta>,
    /// Whether the server's list was given (so `meta: None` means it does
    /// not list the tool, rather than that nobody asked).
    known: bool,
}

/// The rules naming `tool`. Without the server's list, a rule selecting
/// tools by what they do counts as naming it when it allows (a warning is
/// better than a miss) and not when it denies.
fn named_by(policy: &CompiledPolicy, tool: &Tool<'_>) -> Vec<u32> {
    let mut matched = Vec::new();
    let behaviour = tool.meta.map(ToolMeta::behaviour);
    policy.matcher.rules_for(tool.name, behaviour, &mut matched);
    matched.retain(|&i| {
        let r = &policy.rules()[i as usize];
        match (&r.tool_selector, tool.known) {
            (Some(t), false) => {
                r.action == Action::Allow && t.test(tool.name, None) != Selected::No
            }
            (Some(t), true) => t.test(tool.name, behaviour) == Selected::Yes,
            (None, _) => true,
        }
    });
    matched
}

/// Whether every call of `tool` passes whatever its arguments: no `Deny`
/// rule without conditions names it, and an `Allow` rule without conditions
/// does, or nothing names it and the default allows.
fn allows_unconditionally(policy: &CompiledPolicy, tool: &Tool<'_>) -> bool {
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

/// Tool patterns of `policy` that match none of the server's tools: a
/// misspelt name in a `Deny` rule denies nothing, one in an `Allow` rule
/// allows nothing, and neither says so at run time.
pub fn unmatched_patterns(policy: &LoadedPolicy, catalogue: &Catalogue) -> Vec<Warning> {
    let mut out = Vec::new();
    for (i, rule) in policy.spec.rules.iter().enumerate() {
        for (j, pattern) in rule.tools.iter().enumerate() {
            let matches = if is_glob(pattern) {
                let Ok(glob) = compile_glob(pattern) else {
                    continue;
                };
                let glob = glob.compile_matcher();
                catalogue.names().any(|n| glob.is_match(n))
            } else {
                catalogue.meta(pattern).is_some()
            };
            if matches {
                continue;
            }
            let mut message = format!(
                "{pattern:?} matches none of the {} tools the MCP server lists",
                catalogue.len()
            );
            match nearest(pattern, catalogue.names()) {
                Some(near) => message.push_str(&format!("; did you mean {near:?}?")),
                None if rule.action == RuleAction::Deny => {
                    message.push_str("; this rule denies nothing on this server")
                }
                None => {}
            }
            out.push(Warning {
                policy: policy.name.clone(),
                path: format!("spec.rules[{i}].tools[{j}]"),
                message,
            });
        }
    }
    out
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

    fn kms() -> Catalogue {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json"
        );
        Catalogue::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn patterns_that_name_no_tool_of_the_server_are_named() {
        let yaml = format!(
            "{HEAD}  defaultAction: Allow\n  rules:\n    - {{name: no-clones, tools: [vm_clonee, \"pods_*\", \"secrets_*\"], action: Deny}}\n"
        );
        let (loaded, _) = parse_text("t.yaml", &yaml);
        let w = unmatched_patterns(&loaded[0], &kms());
        let got: Vec<String> = w
            .iter()
            .map(|w| format!("{}: {}", w.path, w.message))
            .collect();
        assert_eq!(
            got,
            [
                "spec.rules[0].tools[0]: \"vm_clonee\" matches none of the 26 tools the MCP server lists; did you mean \"vm_clone\"?",
                "spec.rules[0].tools[2]: \"secrets_*\" matches none of the 26 tools the MCP server lists; this rule denies nothing on this server",
            ]
        );
    }

    #[test]
    fn selector_rules_are_judged_against_the_servers_list_when_given() {
        let yaml = format!(
            "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: reads, toolSelector: {{readOnly: true}}, action: Allow}}\n    - {{name: no-secrets, resources: [{{group: \"\", kind: Secret, verbs: [get, list]}}], action: Deny}}\n"
        );
        let (loaded, problems) = parse_text("t.yaml", &yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let set = compile_set(&loaded).unwrap();
        let policy = &set.policies()[0];
        // configuration_view is read-only on kubernetes-mcp-server: allowed.
        let with = warnings_with(policy, Some(&kms()));
        assert_eq!(with.len(), 1, "{with:?}");
        assert!(with[0].message.contains("configuration_view"));
        // Without the list the selector is read as allowing it too.
        assert_eq!(warnings(policy).len(), 1);
        // A server without configuration_view: nothing to warn about.
        let other = Catalogue::from_value(&serde_json::json!([{"name": "pods_list"}])).unwrap();
        assert!(warnings_with(policy, Some(&other)).is_empty());
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
    fn budgets_an_earlier_rule_shadows_are_named() {
        let vm = "{group: kubevirt.io, kind: VirtualMachine, verbs: [create]}";
        let rules = |first: &str| {
            format!(
                "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: storage, resources: [{{group: kubevirt.io, kind: VirtualMachine, verbs: [create, update]}}], action: Allow{first}}}\n    - {{name: cpu, resources: [{vm}], action: Allow, budgets: [{{resource: cpu, amount: \"64\", window: 1h}}]}}\n"
            )
        };
        let w = warnings_of(&rules(""));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("rule \"cpu\" never apply: rule \"storage\" allows every object first"),
            "{w:?}"
        );
        // An earlier rule with its own budgets passes on what it cannot
        // measure (whenUnknown: Deny): only those reach the later rule.
        let w = warnings_of(&rules(
            ", budgets: [{resource: storage, amount: 500Gi, window: 1h}]",
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("rule \"cpu\" apply only to objects rule \"storage\" cannot count"),
            "{w:?}"
        );
        // An earlier rule naming tools takes the objects of those tools'
        // calls: the later rule's budgets do not apply to them.
        let w = warnings_of(&format!(
            "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: creates, tools: [resources_create_or_update], resources: [{vm}], action: Allow}}\n    - {{name: cpu, resources: [{vm}], action: Allow, budgets: [{{resource: cpu, amount: \"64\", window: 1h}}]}}\n"
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("rule \"cpu\" never apply for calls of the tools rule \"creates\" names"),
            "{w:?}"
        );
        // Both naming tools: whether they overlap is not judged here.
        assert_eq!(
            warnings_of(&format!(
                "{HEAD}  defaultAction: Deny\n  rules:\n    - {{name: creates, tools: [resources_create_or_update], resources: [{vm}], action: Allow}}\n    - {{name: cpu, tools: [vm_create], resources: [{vm}], action: Allow, budgets: [{{resource: cpu, amount: \"64\", window: 1h}}]}}\n"
            )),
            Vec::<String>::new()
        );
        // An earlier rule with conditions lets objects through to the later
        // one: no warning.
        assert_eq!(
            warnings_of(&rules(", namespaces: {include: [dev]}")),
            Vec::<String>::new()
        );
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
