//! Intercept's policy YAML (version "1", as of Intercept v1.1):
//!
//! ```yaml
//! version: "1"
//! default: deny            # or allow (the default)
//! hide: [delete_repo]      # denied, and gone from tools/list
//! tools:
//!   create_issue:
//!     rules:
//!       - name: hourly
//!         rate_limit: 5/hour
//!       - name: small
//!         conditions: [{path: args.amount, op: lte, value: 50}]
//!         on_deny: too much
//!   "*":
//!     rules: [{name: global, rate_limit: 60/minute}]
//! ```
//!
//! Intercept allows a call when every rule of its tool and every `"*"` rule
//! passes. tollgate allows by the first matching `Allow` rule, so the
//! importer folds them: each listed tool becomes one `Allow` rule carrying
//! its own conditions and limits and those of `"*"`; `action: deny` and
//! `hide` become `Deny` rules; with `default: allow`, a `"*"` rule carries
//! the wildcard rules for tools not listed. A counter shared by several
//! tools (every `"*"` limit, folded into each tool's rule) is one `budget`.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use super::{ImportError, Imported, Options, budget_name, default_action, read, rule_name};
use crate::spec::{Action, ArgumentCondition, McpToolPolicySpec, Operator, RateLimit, Rule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: Option<Value>,
    #[allow(dead_code)]
    description: Option<String>,
    default: Option<String>,
    #[serde(default)]
    hide: Vec<String>,
    #[serde(default)]
    tools: BTreeMap<String, ToolDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolDef {
    #[serde(default)]
    rules: Vec<IRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IRule {
    name: Option<String>,
    action: Option<String>,
    rate_limit: Option<String>,
    #[serde(default)]
    conditions: Vec<Condition>,
    on_deny: Option<String>,
    state: Option<State>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Condition {
    path: String,
    op: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    counter: String,
    window: String,
    increment: Option<i64>,
    increment_from: Option<String>,
}

/// What one tool's (or the wildcard's) rules require of a call.
#[derive(Default)]
struct Requirements {
    deny: Option<Option<String>>,
    conditions: Vec<ArgumentCondition>,
    limits: Vec<RateLimit>,
    messages: Vec<String>,
}

/// Imports an Intercept policy.
pub fn import(text: &str, options: &Options) -> Result<Imported, Vec<ImportError>> {
    let file: File = read(text).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    match &file.version {
        None => {}
        Some(Value::String(v)) if v == "1" => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => errors.push(ImportError::unsupported(
            "version",
            format!("version {other}; this importer reads version \"1\""),
        )),
    }
    let default_action = default_action(
        file.default.as_deref(),
        "use \"allow\" or \"deny\"",
        &mut errors,
    );
    let mut notes =
        vec!["Imported from an Intercept policy by `tollgate import intercept`.".into()];
    let mut rule_notes = Vec::new();
    let mut taken = HashSet::new();

    let wildcard = match file.tools.get("*") {
        Some(def) => requirements("*", def, &mut errors, &mut notes),
        None => Requirements::default(),
    };
    let mut rules = Vec::new();
    for (i, tool) in file.hide.iter().enumerate() {
        if tool.trim().is_empty() {
            errors.push(ImportError::invalid(format!("hide[{i}]"), "an empty entry"));
            continue;
        }
        let (name, renamed) = options.tool(tool);
        let rule = rule_name(&format!("hide-{name}"), &mut taken);
        if let Some(n) = renamed {
            rule_notes.push((rule.clone(), n));
        }
        rules.push(plain(
            rule,
            name.clone(),
            Action::Deny,
            Some(format!("Tool {tool:?} is hidden by policy")),
        ));
    }
    for (tool, def) in file.tools.iter().filter(|(t, _)| t.as_str() != "*") {
        let mut req = requirements(tool, def, &mut errors, &mut notes);
        let (name, renamed) = options.tool(tool);
        let rule = rule_name(&name, &mut taken);
        if let Some(n) = renamed {
            rule_notes.push((rule.clone(), n));
        }
        if let Some(message) = req.deny.take().or_else(|| wildcard.deny.clone()) {
            rules.push(plain(rule, name, Action::Deny, message));
            continue;
        }
        req.conditions.extend(wildcard.conditions.iter().cloned());
        req.limits.extend(wildcard.limits.iter().cloned());
        req.messages.extend(wildcard.messages.iter().cloned());
        if req.messages.len() > 1 {
            rule_notes.push((
                rule.clone(),
                "Intercept names the failing rule's on_deny; tollgate has one message per rule, so they are joined".into(),
            ));
        }
        let mut r = plain(rule, name, Action::Allow, join(&req.messages));
        r.arguments = req.conditions;
        r.rate_limits = req.limits;
        rules.push(r);
    }
    // Tools no entry names: with default allow, the wildcard's rules still
    // apply to them; with default deny, Intercept refuses them before any.
    if default_action == Action::Allow
        && (wildcard.deny.is_some()
            || !wildcard.conditions.is_empty()
            || !wildcard.limits.is_empty())
    {
        let rule = rule_name("all-tools", &mut taken);
        let mut r = plain(
            rule,
            "*".into(),
            if wildcard.deny.is_some() {
                Action::Deny
            } else {
                Action::Allow
            },
            wildcard
                .deny
                .clone()
                .flatten()
                .or_else(|| join(&wildcard.messages)),
        );
        if wildcard.deny.is_none() {
            r.arguments = wildcard.conditions.clone();
            r.rate_limits = wildcard.limits.clone();
        }
        rules.push(r);
    }
    if file.tools.values().any(|d| {
        d.rules
            .iter()
            .any(|r| r.rate_limit.is_some() || r.state.is_some())
    }) {
        notes.push(
            "Windows: Intercept's reset at the top of each UTC minute, hour or day; tollgate's slide (never more than N in any window-long span), so near a reset tollgate admits fewer. Intercept also gives back a call's count when the server fails it; tollgate counts every call it lets through."
                .into(),
        );
    }
    if !file.hide.is_empty() {
        notes.push("hideDenied: tollgate hides every tool this policy denies outright, not only those in Intercept's `hide`.".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Imported {
        name: options.name(),
        spec: McpToolPolicySpec {
            selector: None,
            mode: Default::default(),
            default_action,
            deny_with: None,
            hide_denied: !file.hide.is_empty(),
            rules,
            resource_mappings: vec![],
            default_namespace: None,
            strict_arguments: None,
        },
        notes,
        rule_notes,
    })
}

fn plain(name: String, tool: String, action: Action, message: Option<String>) -> Rule {
    Rule {
        name,
        tools: vec![tool],
        tool_selector: None,
        resources: vec![],
        namespaces: None,
        clone: None,
        in_flight: vec![],
        budgets: vec![],
        running_vms: None,
        lifecycle: None,
        action: action.into(),
        approval: None,
        message,
        subjects: vec![],
        arguments: vec![],
        rate_limits: vec![],
        deny_with: None,
    }
}

fn join(messages: &[String]) -> Option<String> {
    (!messages.is_empty()).then(|| messages.join(" / "))
}

/// What the rules of `tool` require.
fn requirements(
    tool: &str,
    def: &ToolDef,
    errors: &mut Vec<ImportError>,
    notes: &mut Vec<String>,
) -> Requirements {
    let scope = if tool == "*" { "_global" } else { tool };
    let mut req = Requirements::default();
    for (i, r) in def.rules.iter().enumerate() {
        let at = format!("tools.{tool}.rules[{i}]");
        if let Some(m) = &r.on_deny {
            req.messages.push(m.clone());
        }
        match r.action.as_deref() {
            Some("deny") => {
                if !r.conditions.is_empty() || r.rate_limit.is_some() || r.state.is_some() {
                    errors.push(ImportError::invalid(
                        format!("{at}.action"),
                        "a deny rule has no conditions, rate_limit or state in Intercept",
                    ));
                }
                req.deny = Some(r.on_deny.clone());
                continue;
            }
            Some("allow") => {
                if !r.conditions.is_empty() || r.rate_limit.is_some() || r.state.is_some() {
                    errors.push(ImportError::invalid(
                        format!("{at}.action"),
                        "`action: allow` with conditions is not Intercept's; use evaluate",
                    ));
                } else if !notes.iter().any(|n| n.contains("action: allow")) {
                    notes.push("`action: allow` (as Intercept's catalog pages write it; its validator knows only evaluate and deny) is read as a rule every call of the tool passes.".into());
                }
                continue;
            }
            None | Some("evaluate") => {}
            Some(other) => {
                errors.push(ImportError::invalid(
                    format!("{at}.action"),
                    format!("{other:?}; Intercept's actions are evaluate and deny"),
                ));
                continue;
            }
        }
        if let Some(shorthand) = &r.rate_limit {
            if !r.conditions.is_empty() || r.state.is_some() {
                errors.push(ImportError::invalid(
                    format!("{at}.rate_limit"),
                    "rate_limit cannot be combined with conditions or state",
                ));
                continue;
            }
            match shorthand
                .split_once('/')
                .and_then(|(n, w)| Some((n.parse::<i64>().ok()?, w)))
            {
                Some((n, w)) if n > 0 => match window(w) {
                    Some(w) => {
                        req.limits
                            .push(limit(n, w, &format!("_rate_{}", window_word(w)), scope))
                    }
                    None => errors.push(ImportError::invalid(
                        format!("{at}.rate_limit"),
                        format!("{shorthand:?}: the window is minute, hour or day"),
                    )),
                },
                _ => errors.push(ImportError::invalid(
                    format!("{at}.rate_limit"),
                    format!("{shorthand:?}: write N/window, e.g. 5/hour"),
                )),
            }
            continue;
        }
        if r.name.as_deref().unwrap_or("").is_empty() {
            errors.push(ImportError::invalid(
                format!("{at}.name"),
                "every rule needs a name in Intercept",
            ));
        }
        if r.conditions.is_empty() {
            errors.push(ImportError::invalid(
                format!("{at}.conditions"),
                "an evaluate rule needs at least one condition",
            ));
        }
        for (j, c) in r.conditions.iter().enumerate() {
            let cat = format!("{at}.conditions[{j}]");
            if let Some(path) = c.path.strip_prefix("args.") {
                match condition(path, c, &cat) {
                    Ok(cond) => req.conditions.push(cond),
                    Err(e) => errors.push(e),
                }
            } else if c.path.starts_with("state.") {
                match counter_limit(c, r.state.as_ref(), def, scope, &cat) {
                    Ok(l) => req.limits.push(l),
                    Err(e) => errors.push(e),
                }
            } else {
                errors.push(ImportError::invalid(
                    format!("{cat}.path"),
                    format!("{:?}: paths start with args. or state.", c.path),
                ));
            }
        }
    }
    req
}

/// A condition on `args.<path>`.
fn condition(path: &str, c: &Condition, at: &str) -> Result<ArgumentCondition, ImportError> {
    let pointer: String = path
        .split('.')
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect();
    let mut value = Some(c.value.clone());
    let mut values = None;
    let operator = match c.op.as_str() {
        "eq" => Operator::Equals,
        "neq" => Operator::NotEquals,
        "lt" => Operator::Lt,
        "lte" => Operator::Lte,
        "gt" => Operator::Gt,
        "gte" => Operator::Gte,
        "in" | "not_in" => {
            let Value::Array(items) = &c.value else {
                return Err(ImportError::invalid(
                    format!("{at}.value"),
                    format!("{} needs a list", c.op),
                ));
            };
            values = Some(items.clone());
            value = None;
            if c.op == "in" {
                Operator::In
            } else {
                Operator::NotIn
            }
        }
        "regex" => {
            let Value::String(re) = &c.value else {
                return Err(ImportError::invalid(
                    format!("{at}.value"),
                    "regex needs a string",
                ));
            };
            // Intercept searches; tollgate's Matches must match the whole
            // string: the same test, written to match anywhere.
            value = Some(Value::String(format!("(?s).*(?:{re}).*")));
            Operator::Matches
        }
        "exists" => {
            value = None;
            match c.value {
                Value::Bool(true) => Operator::Exists,
                Value::Bool(false) => Operator::NotExists,
                _ => {
                    return Err(ImportError::invalid(
                        format!("{at}.value"),
                        "exists needs true or false",
                    ));
                }
            }
        }
        "contains" => {
            return Err(ImportError::unsupported(
                format!("{at}.op"),
                "tollgate has no `contains` (substring or list element); for a string write a regex condition instead",
            ));
        }
        other => {
            return Err(ImportError::invalid(
                format!("{at}.op"),
                format!("unknown operator {other:?}"),
            ));
        }
    };
    if matches!(
        operator,
        Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte
    ) && !c.value.is_number()
    {
        return Err(ImportError::invalid(
            format!("{at}.value"),
            format!("{} needs a number", c.op),
        ));
    }
    Ok(ArgumentCondition {
        pointer,
        operator,
        value,
        values,
    })
}

/// A condition on `state.<scope>.<counter>` with its state block: a rate
/// limit, when it is one.
fn counter_limit(
    c: &Condition,
    state: Option<&State>,
    def: &ToolDef,
    scope: &str,
    at: &str,
) -> Result<RateLimit, ImportError> {
    let mut parts = c.path.splitn(3, '.');
    let (_, owner, counter) = (
        parts.next(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if owner != scope {
        return Err(ImportError::unsupported(
            format!("{at}.path"),
            format!(
                "{:?} reads another tool's counter; tollgate budgets are drawn by the calls they limit",
                c.path
            ),
        ));
    }
    let block = state
        .filter(|s| s.counter == counter)
        .or_else(|| {
            def.rules
                .iter()
                .filter_map(|r| r.state.as_ref())
                .find(|s| s.counter == counter)
        })
        .ok_or_else(|| {
            ImportError::invalid(
                format!("{at}.path"),
                format!("no state block defines counter {counter:?}"),
            )
        })?;
    if block.increment_from.is_some() {
        return Err(ImportError::unsupported(
            format!("{at}.state.increment_from"),
            "tollgate counts calls, not amounts taken from arguments",
        ));
    }
    if block.increment.unwrap_or(1) != 1 {
        return Err(ImportError::unsupported(
            format!("{at}.state.increment"),
            "tollgate counts each call once",
        ));
    }
    let Some(w) = window(&block.window) else {
        return Err(ImportError::invalid(
            format!("{at}.state.window"),
            "minute, hour or day",
        ));
    };
    // Intercept denies a call whose count after it would fail the test.
    let n = c
        .value
        .as_f64()
        .ok_or_else(|| ImportError::invalid(format!("{at}.value"), "a number"))?;
    let requests = match c.op.as_str() {
        "lte" => n.floor() as i64,
        "lt" => n.ceil() as i64 - 1,
        other => {
            return Err(ImportError::unsupported(
                format!("{at}.op"),
                format!(
                    "a counter compared with {other:?} is not a rate limit; tollgate limits with lte or lt"
                ),
            ));
        }
    };
    if requests < 1 {
        return Err(ImportError::unsupported(
            format!("{at}.value"),
            "the counter admits no call; use action: deny",
        ));
    }
    Ok(limit(requests, w, counter, scope))
}

fn limit(requests: i64, window: &'static str, counter: &str, scope: &str) -> RateLimit {
    RateLimit {
        requests,
        window: window.into(),
        key: None,
        scope: None,
        on_store_error: None,
        // Intercept scopes counters by tool (`_global` for "*"); one name
        // per scope and counter keeps a wildcard counter one budget across
        // the rules it is folded into.
        budget: budget_name(&format!("{scope}.{counter}"))
            .or_else(|| budget_name(&format!("c{:x}", fnv(&format!("{scope}.{counter}"))))),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn window(w: &str) -> Option<&'static str> {
    match w {
        "minute" => Some("1m"),
        "hour" => Some("1h"),
        "day" => Some("1d"),
        _ => None,
    }
}

fn window_word(w: &str) -> &'static str {
    match w {
        "1m" => "minute",
        "1h" => "hour",
        _ => "day",
    }
}
