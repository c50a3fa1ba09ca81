//! PolicyLayer's `policy.json`:
//!
//! ```json
//! {"version": "1", "default": "deny",
//!  "tools": {"vm_clone": {"limits": [{"counter": "vm_clone_rate", "window": "minute", "max": 30, "scope": "grant"}]}}}
//! ```
//!
//! - `default` → `defaultAction` (and `hideDenied: true` with `deny`);
//! - a tool with `action: deny` → a `Deny` rule with `reason` as its
//!   message; any other listed tool → an `Allow` rule;
//! - each of `limits` → a rate limit of `max` per `window` (`second`,
//!   `minute`, `hour`, `day`, or seconds as a number) whose `budget` is the
//!   `counter`: tools naming one counter share one budget, as in
//!   PolicyLayer;
//! - `scope: grant` → `key: {subject: true}`, one budget per verified
//!   caller (see the note it leaves); `session` → `key: {session: true}`;
//!   `global` → no key.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{ImportError, Imported, Options, budget_name, default_action, read, rule_name};
use crate::spec::{Action, LimitKey, McpToolPolicySpec, RateLimit, Rule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: Option<String>,
    default: Option<String>,
    #[serde(default)]
    tools: BTreeMap<String, Tool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tool {
    action: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    limits: Vec<Limit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    counter: String,
    window: serde_json::Value,
    max: i64,
    scope: Option<String>,
}

/// Imports a PolicyLayer policy.
pub fn import(text: &str, options: &Options) -> Result<Imported, Vec<ImportError>> {
    let file: File = read(text).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    if let Some(v) = &file.version
        && v != "1"
    {
        errors.push(ImportError::unsupported(
            "version",
            format!("version {v:?}; this importer reads version \"1\""),
        ));
    }
    let default_action = default_action(
        file.default.as_deref(),
        "PolicyLayer's default is \"allow\" or \"deny\"",
        &mut errors,
    );
    let mut notes = vec![
        "Imported from a PolicyLayer policy.json by `tollgate import policylayer`.".to_owned(),
    ];
    if default_action == Action::Deny {
        notes.push(
            "hideDenied: tools this policy denies outright vanish from tools/list; set it to false to list them (PolicyLayer's listing of denied tools is not documented)."
                .into(),
        );
    }
    // Every limit of one counter must describe it alike, as one budget.
    let mut counters: HashMap<&str, (&Limit, String)> = HashMap::new();
    let mut rules = Vec::new();
    let mut rule_notes = Vec::new();
    let mut taken = HashSet::new();
    let mut grant = false;
    for (tool, def) in &file.tools {
        let at = format!("tools.{tool}");
        let (name, renamed) = options.tool(tool);
        let rule = rule_name(&name, &mut taken);
        if let Some(n) = renamed {
            rule_notes.push((rule.clone(), n));
        }
        let action = match def.action.as_deref() {
            None | Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            Some(other) => {
                errors.push(ImportError::unsupported(
                    format!("{at}.action"),
                    format!("action {other:?} (e.g. approval) has no tollgate equivalent; use allow or deny"),
                ));
                continue;
            }
        };
        if action == Action::Deny && !def.limits.is_empty() {
            errors.push(ImportError::invalid(
                format!("{at}.limits"),
                "a denied tool has no calls to limit; remove the limits or the deny",
            ));
            continue;
        }
        let mut rate_limits = Vec::new();
        for (j, l) in def.limits.iter().enumerate() {
            let lat = format!("{at}.limits[{j}]");
            match limit(l, &lat) {
                Ok((limit, is_grant)) => {
                    grant |= is_grant;
                    match counters.get(l.counter.as_str()) {
                        Some((other, oat))
                            if other.max != l.max
                                || other.window != l.window
                                || other.scope != l.scope =>
                        {
                            errors.push(ImportError::unsupported(
                                format!("{lat}.counter"),
                                format!(
                                    "counter {:?} is also used at {oat} with another max, window or scope; tollgate keeps one size per shared budget",
                                    l.counter
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            counters.insert(l.counter.as_str(), (l, lat.clone()));
                        }
                    }
                    rate_limits.push(limit);
                }
                Err(e) => errors.push(e),
            }
        }
        rules.push(Rule {
            name: rule,
            tools: vec![name],
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
            message: def.reason.clone(),
            subjects: vec![],
            arguments: vec![],
            rate_limits,
            deny_with: None,
        });
    }
    if grant {
        notes.push(
            "scope: grant became key: {subject: true}: one budget per caller, known by the verified subject of its token (tollgate proxy --identity jwt|kubernetes). PolicyLayer counts per grant, the access it issued one agent for one server; tollgate counts per token subject, so one caller holding two grants has one budget here, and callers without a verified token (tollgate wrap, a proxy without --identity) share a single budget."
                .into(),
        );
    }
    if !file.tools.is_empty() {
        notes.push(
            "Windows slide: \"30 per minute\" admits at most 30 calls in any 60 seconds.".into(),
        );
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
            hide_denied: default_action == Action::Deny,
            rules,
            resource_mappings: vec![],
            default_namespace: None,
            strict_arguments: None,
        },
        notes,
        rule_notes,
    })
}

/// One limit; true if it was scoped to the grant.
fn limit(l: &Limit, at: &str) -> Result<(RateLimit, bool), ImportError> {
    if l.max < 1 {
        return Err(ImportError::invalid(
            format!("{at}.max"),
            format!("{} admits nothing; use action: deny instead", l.max),
        ));
    }
    let window = match &l.window {
        serde_json::Value::String(w) => match w.as_str() {
            "second" => "1s".to_owned(),
            "minute" => "1m".into(),
            "hour" => "1h".into(),
            "day" => "1d".into(),
            other => {
                return Err(ImportError::invalid(
                    format!("{at}.window"),
                    format!("{other:?}; use second, minute, hour, day or a number of seconds"),
                ));
            }
        },
        serde_json::Value::Number(n) if n.as_u64().is_some_and(|s| s > 0) => {
            format!("{}s", n.as_u64().unwrap_or(1))
        }
        other => {
            return Err(ImportError::invalid(
                format!("{at}.window"),
                format!("{other}; use second, minute, hour, day or a number of seconds"),
            ));
        }
    };
    let (key, grant) = match l.scope.as_deref() {
        None | Some("global") => (None, false),
        Some("grant") => (
            Some(LimitKey {
                subject: true,
                ..Default::default()
            }),
            true,
        ),
        Some("session") => (
            Some(LimitKey {
                session: true,
                ..Default::default()
            }),
            false,
        ),
        Some(other) => {
            return Err(ImportError::unsupported(
                format!("{at}.scope"),
                format!("scope {other:?} has no tollgate key; grant, session and global do"),
            ));
        }
    };
    let budget = budget_name(&l.counter).ok_or_else(|| {
        ImportError::unsupported(
            format!("{at}.counter"),
            format!(
                "{:?} is not a budget name (1-63 letters, digits, '.', '_', '-'); rename the counter",
                l.counter
            ),
        )
    })?;
    Ok((
        RateLimit {
            requests: l.max,
            window,
            key,
            scope: None,
            on_store_error: None,
            budget: Some(budget),
        },
        grant,
    ))
}
