//! Reading a spec from JSON strictly: the one way a file policy and a
//! cluster policy become a [`McpToolPolicySpec`].
//!
//! serde does most of it (unknown fields, wrong types, missing fields, each
//! with its path); this module adds what serde cannot: hints for missing
//! fields, and strictness for the embedded Kubernetes `LabelSelector`, whose
//! own type ignores unknown fields (so `matchLabel:` would silently select
//! every pod).

use serde_json::Value;

use crate::problem::Problem;
use crate::spec::McpToolPolicySpec;

/// Parses `spec` (the value of a policy's `spec:`).
pub fn parse_spec(spec: Value) -> Result<McpToolPolicySpec, Problem> {
    if let Some(selector) = spec.get("selector") {
        check_selector(selector)?;
    }
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => "spec".to_owned(),
            p => format!("spec.{p}"),
        };
        Problem::at(path, explain(e.inner()))
    })
}

fn check_selector(selector: &Value) -> Result<(), Problem> {
    let unknown = |path: String, key: &str, expected: &str| {
        Err(Problem::at(
            path,
            format!("unknown field `{key}`, expected {expected}"),
        ))
    };
    let Some(fields) = selector.as_object() else {
        return Ok(()); // serde reports the type.
    };
    for key in fields.keys() {
        if key != "matchLabels" && key != "matchExpressions" {
            return unknown(
                "spec.selector".into(),
                key,
                "`matchLabels` or `matchExpressions`",
            );
        }
    }
    let expressions = fields.get("matchExpressions").and_then(Value::as_array);
    for (i, e) in expressions.into_iter().flatten().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        let Some(e) = e.as_object() else { continue };
        for key in e.keys() {
            if !matches!(key.as_str(), "key" | "operator" | "values") {
                return unknown(path, key, "one of `key`, `operator`, `values`");
            }
        }
        for required in ["key", "operator"] {
            if !e.contains_key(required) {
                return Err(Problem::at(path, format!("missing field `{required}`")));
            }
        }
    }
    Ok(())
}

/// serde's messages already say what was expected ("unknown field `x`,
/// expected one of ..."); this adds the fix where serde cannot.
pub fn explain(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
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
        return format!("missing field `{field}`: {hint}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_typos_are_refused_not_read_as_select_everything() {
        let bad = [
            (
                json!({"defaultAction": "Deny", "selector": {"matchLabel": {"app": "x"}}}),
                "spec.selector: unknown field `matchLabel`",
            ),
            (
                json!({"defaultAction": "Deny", "selector": {"matchExpressions": [{"key": "a", "operator": "In", "value": ["x"]}]}}),
                "spec.selector.matchExpressions[0]: unknown field `value`",
            ),
            (
                json!({"defaultAction": "Deny", "selector": {"matchExpressions": [{"operator": "Exists"}]}}),
                "spec.selector.matchExpressions[0]: missing field `key`",
            ),
        ];
        for (spec, want) in bad {
            let got = parse_spec(spec).unwrap_err().to_string();
            assert!(got.starts_with(want), "{got}");
        }
        let ok = json!({"defaultAction": "Deny", "selector": {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}});
        assert!(parse_spec(ok).is_ok());
    }

    #[test]
    fn paths_and_hints() {
        assert_eq!(
            parse_spec(json!({})).unwrap_err().to_string(),
            "spec: missing field `defaultAction`: add `defaultAction: Deny` (or `Allow`)"
        );
        let e = parse_spec(
            json!({"defaultAction": "Deny", "rules": [{"name": "a", "tools": ["x"], "action": "Allow", "rateLimit": []}]}),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .starts_with("spec.rules[0].rateLimit: unknown field `rateLimit`")
        );
    }
}
