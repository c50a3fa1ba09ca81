//! One policy's own verdict on a call, before any budget is spent: steps
//! 1–4 of the decision order (see [`super`]).

use crate::compile::resource_rules::ClusterView;
use crate::compile::selector::Selected;
use crate::compile::why_not::WhyNot;
use crate::compile::{CompiledPolicy, CompiledRule};

use super::measure::{sizes, starts_vm};
use crate::resources::{Op, Payloads, ToolMeta, bounded, extract};
use crate::spec::Action;

use super::decision::{Decision, Effect, Reason, ToolCall, render};

/// One policy's own verdict, before budgets.
pub(super) enum Verdict<'p> {
    Allow {
        rule: Option<&'p CompiledRule>,
        /// Objects and the resource rule allowing each.
        objects: Vec<(Op, &'p CompiledRule)>,
    },
    Deny {
        rule: Option<&'p CompiledRule>,
        reason: Reason,
        detail: String,
    },
}

/// Whether a resource `Allow` rule of `p` could allow something `tool`
/// creates, going by what the upstream and the policy's mappings say the
/// tool does. `matched` holds the rules naming the tool.
pub(super) fn may_create_allowed(
    p: &CompiledPolicy,
    tool: &str,
    meta: Option<&ToolMeta>,
    matched: &[u32],
) -> bool {
    let applicable: Vec<&CompiledRule> = p
        .resource_rules
        .iter()
        .filter(|&&i| {
            let r = &p.rules[i as usize];
            r.action == Action::Allow && (!r.has_tools || matched.contains(&i))
        })
        .map(|&i| &p.rules[i as usize])
        .collect();
    if applicable.is_empty() {
        return false;
    }
    if meta.is_some_and(ToolMeta::carries_manifests)
        || p.mappings
            .iter()
            .any(|m| m.tools.is_match(tool) && m.manifest.is_some())
    {
        return true;
    }
    let mut potential = meta.map(|m| m.potential_ops()).unwrap_or_default();
    potential.extend(
        p.mappings
            .iter()
            .filter(|m| m.tools.is_match(tool))
            .map(|m| Op {
                group: m.group.clone(),
                kind: m.kind.clone(),
                verbs: vec![m.verb.clone()],
                ..Default::default()
            }),
    );
    potential.iter().any(|op| {
        applicable
            .iter()
            .any(|r| r.resources.iter().any(|s| s.matches(op)))
    })
}

/// One policy's verdict on a call, steps 1–4 of the order.
pub(super) fn judge<'p>(
    p: &'p CompiledPolicy,
    call: &ToolCall<'_>,
    payloads: &Payloads,
    view: &dyn ClusterView,
    matched: &mut Vec<u32>,
) -> Verdict<'p> {
    p.matcher
        .rules_for(call.tool, call.meta.map(ToolMeta::behaviour), matched);
    let tool_rules = || {
        matched
            .iter()
            .map(|&i| &p.rules[i as usize])
            .filter(|r| r.resources.is_empty())
    };
    for r in tool_rules().filter(|r| r.action == Action::Deny) {
        if rule_holds(r, call).is_ok() {
            return Verdict::Deny {
                rule: Some(r),
                reason: Reason::Rule,
                detail: format!("tool {:?} is denied", call.tool),
            };
        }
    }

    // The objects, if any resource rule could care.
    let applicable = p.resource_rules_for(matched);
    if p.strict_arguments(!applicable.is_empty())
        && let Some(unknown) = call.meta.and_then(|m| m.unknown_argument(call.arguments))
    {
        return Verdict::Deny {
            rule: None,
            reason: Reason::Arguments,
            detail: format!(
                "the argument {:?} is not in the MCP server's inputSchema for tool {:?}, and arguments no rule can read are refused (strictArguments)",
                bounded(unknown),
                call.tool
            ),
        };
    }
    let ops = if applicable.is_empty() {
        Vec::new()
    } else {
        match extract(
            call.tool,
            call.arguments,
            call.meta,
            &p.mappings,
            &p.default_namespace,
            payloads,
        ) {
            Ok(ops) => ops,
            Err(e) => {
                return Verdict::Deny {
                    rule: None,
                    reason: Reason::Arguments,
                    detail: format!("cannot tell which Kubernetes objects this call creates: {e}"),
                };
            }
        }
    };
    for op in &ops {
        for r in applicable.iter().filter(|r| r.action == Action::Deny) {
            if r.resources.iter().any(|s| s.matches(op))
                && object_conditions(r, op, call, view).is_ok()
            {
                return Verdict::Deny {
                    rule: Some(r),
                    reason: Reason::Rule,
                    detail: format!("{} is denied", describe(op)),
                };
            }
        }
    }
    let mut objects = Vec::new();
    let mut uncovered = 0;
    for op in ops {
        let mut first: Option<(&CompiledRule, String)> = None;
        let mut allowing = None;
        for r in applicable
            .iter()
            .filter(|r| r.action == Action::Allow && r.resources.iter().any(|s| s.matches(&op)))
        {
            match object_conditions(r, &op, call, view) {
                Ok(()) => {
                    allowing = Some(*r);
                    break;
                }
                Err(why) => {
                    first.get_or_insert_with(|| (r, why.to_string()));
                }
            }
        }
        match (allowing, first) {
            (Some(r), _) => objects.push((op, r)),
            (None, Some((r, why))) => {
                return Verdict::Deny {
                    rule: Some(r),
                    reason: Reason::Arguments,
                    detail: format!("{}: {why}", describe(&op)),
                };
            }
            (None, None) => uncovered += 1,
        }
    }

    let mut first_allow = None;
    for r in tool_rules().filter(|r| r.action == Action::Allow) {
        first_allow.get_or_insert(r);
        if rule_holds(r, call).is_ok() {
            return Verdict::Allow {
                rule: Some(r),
                objects,
            };
        }
    }
    if !objects.is_empty() && uncovered == 0 {
        return Verdict::Allow {
            rule: None,
            objects,
        };
    }
    match first_allow {
        Some(r) => Verdict::Deny {
            rule: Some(r),
            reason: Reason::Arguments,
            detail: rule_holds(r, call)
                .err()
                .map_or_else(|| "arguments not allowed".to_owned(), |w| w.to_string()),
        },
        None if p.default_action == Action::Allow => Verdict::Allow {
            rule: None,
            objects,
        },
        None => Verdict::Deny {
            rule: None,
            reason: Reason::Default,
            detail: format!(
                "no rule allows tool {:?} and the default is Deny",
                call.tool
            ),
        },
    }
}

/// Whether a rule's caller and argument conditions hold; `Err` says why not.
/// An `Allow` rule whose `toolSelector` cannot tell whether it selects the
/// tool does not hold: what the server does not state cannot be allowed.
fn rule_holds<'a>(r: &'a CompiledRule, call: &'a ToolCall<'_>) -> Result<(), WhyNot<'a>> {
    if r.action == Action::Allow
        && let Some(test) = &r.tool_selector
        && let Selected::Unknown(why) = test.test(call.tool, call.meta.map(ToolMeta::behaviour))
    {
        return Err(WhyNot::BehaviourUnknown(why));
    }
    if let Some(subjects) = &r.subjects {
        subjects.check(call.subject)?;
    }
    match r.conditions.iter().find(|c| !c.holds(call.arguments)) {
        Some(condition) => Err(WhyNot::Argument {
            condition,
            arguments: call.arguments,
        }),
        None => Ok(()),
    }
}

/// Whether `op` meets a resource rule's conditions; `Err` says why not.
fn object_conditions<'a>(
    r: &'a CompiledRule,
    op: &'a Op,
    call: &'a ToolCall<'_>,
    view: &dyn ClusterView,
) -> Result<(), WhyNot<'a>> {
    rule_holds(r, call)?;
    if let Some(ns) = &r.namespaces {
        ns.check(op.namespace.as_deref())?;
    }
    if op.is_clone()
        && let Some(clone) = &r.clone
    {
        clone.check(op, view)?;
    }
    for cap in &r.in_flight {
        cap.key(op, call.subject)
            .map_err(WhyNot::InFlightUncounted)?;
    }
    if let Some(lifecycle) = &r.lifecycle {
        lifecycle.check(op, view, r.action == Action::Deny)?;
    }
    if starts_vm(op, view)
        && let Some(cap) = &r.running_vms
    {
        cap.key(op, call.subject)
            .map_err(WhyNot::RunningVmsUncounted)?;
        if !view.running_vms_current() {
            return Err(WhyNot::RunningVmsNotCurrent { max: cap.max });
        }
    }
    let budgets = r.limits.iter().filter_map(|l| l.limit.size.map(|s| (s, l)));
    let mut measured = None;
    for (resource, l) in budgets {
        let got = measured.get_or_insert_with(|| sizes(op, view));
        if got.get(resource).is_none() && !l.unknown_allowed {
            return Err(WhyNot::SizeUnknown {
                op,
                resource,
                requests: l.limit.requests,
                window: l.limit.window,
            });
        }
    }
    Ok(())
}

/// `VirtualMachineClone in namespace "vms" (from golden-1 to copy)`.
fn describe(op: &Op) -> String {
    let what = op
        .kind
        .clone()
        .or_else(|| op.resource.clone())
        .unwrap_or_else(|| "object".into());
    let verb = op.verbs.first().map(String::as_str).unwrap_or("touch");
    let mut text = format!("{verb} {what}");
    match &op.namespace {
        Some(ns) => text.push_str(&format!(" in namespace {ns:?}")),
        None => text.push_str(" (namespace unknown)"),
    }
    if let Some(c) = &op.clone {
        text.push_str(&format!(
            " from {:?} to {:?}",
            c.source.as_deref().unwrap_or("?"),
            c.target.as_deref().unwrap_or("?")
        ));
    }
    text
}

pub(super) fn denial(
    p: &CompiledPolicy,
    rule: Option<&CompiledRule>,
    reason: Reason,
    detail: &str,
    effect: Effect,
) -> Decision {
    Decision {
        effect,
        reason,
        policy: Some(p.name.clone()),
        rule: rule.map(|r| r.name.clone()),
        message: Some(render(
            &p.name,
            rule.map(|r| &*r.name),
            detail,
            rule.and_then(|r| r.message.as_deref()),
        )),
        retry_after: None,
        deny_with: rule.map_or(p.deny_with, |r| r.deny_with),
        approval: None,
    }
}
