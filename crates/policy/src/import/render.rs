//! An imported policy as YAML a person reads: the notes as comments above
//! what they are about, values in JSON's flow style (which YAML reads the
//! same), fields in the order docs/policy.md lists them.

use std::fmt::Write;

use serde_json::Value;

use super::Imported;
use crate::spec::{ArgumentCondition, RateLimit, Rule, RuleAction};

/// The policy as an `McpToolPolicy` YAML document.
pub fn render(imported: &Imported) -> String {
    let mut out = String::new();
    for note in &imported.notes {
        comment(&mut out, "", note);
    }
    let spec = &imported.spec;
    let _ = writeln!(out, "apiVersion: tollgate.dev/v1alpha1");
    let _ = writeln!(out, "kind: McpToolPolicy");
    let _ = writeln!(
        out,
        "metadata:\n  name: {}",
        json(&Value::String(imported.name.clone()))
    );
    let _ = writeln!(out, "spec:");
    let _ = writeln!(
        out,
        "  defaultAction: {}",
        action(spec.default_action.into())
    );
    if spec.hide_denied {
        let _ = writeln!(out, "  hideDenied: true");
    }
    if spec.rules.is_empty() {
        let _ = writeln!(out, "  rules: []");
        return out;
    }
    let _ = writeln!(out, "  rules:");
    for rule in &spec.rules {
        for (_, note) in imported.rule_notes.iter().filter(|(r, _)| *r == rule.name) {
            comment(&mut out, "    ", note);
        }
        write_rule(&mut out, rule);
    }
    out
}

fn write_rule(out: &mut String, rule: &Rule) {
    let _ = writeln!(
        out,
        "    - name: {}",
        json(&Value::String(rule.name.clone()))
    );
    let tools: Vec<Value> = rule.tools.iter().cloned().map(Value::String).collect();
    let _ = writeln!(out, "      tools: {}", json(&Value::Array(tools)));
    let _ = writeln!(out, "      action: {}", action(rule.action));
    if let Some(a) = &rule.approval {
        let approval = serde_json::to_value(a).unwrap_or_default();
        let _ = writeln!(out, "      approval: {}", json(&approval));
    }
    if let Some(m) = &rule.message {
        let _ = writeln!(out, "      message: {}", json(&Value::String(m.clone())));
    }
    if !rule.arguments.is_empty() {
        let _ = writeln!(out, "      arguments:");
        for c in &rule.arguments {
            let _ = writeln!(out, "        - {}", condition(c));
        }
    }
    if !rule.rate_limits.is_empty() {
        let _ = writeln!(out, "      rateLimits:");
        for l in &rule.rate_limits {
            let _ = writeln!(out, "        - {}", limit(l));
        }
    }
}

fn condition(c: &ArgumentCondition) -> String {
    // The spec's own serialisation: field names exactly as the CRD has them.
    json(&serde_json::to_value(c).unwrap_or_default())
}

fn limit(l: &RateLimit) -> String {
    json(&serde_json::to_value(l).unwrap_or_default())
}

fn action(a: RuleAction) -> &'static str {
    match a {
        RuleAction::Allow => "Allow",
        RuleAction::Deny => "Deny",
        RuleAction::RequireApproval => "RequireApproval",
    }
}

/// Compact JSON: valid YAML flow style, every string quoted.
fn json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `text` as `# ` lines of at most ~78 columns under `indent`.
fn comment(out: &mut String, indent: &str, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > 78 {
            let _ = writeln!(out, "{indent}# {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}
