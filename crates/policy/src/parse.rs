//! Reading a spec from JSON strictly: the one way a file policy and a
//! cluster policy become a [`McpToolPolicySpec`].
//!
//! Two passes. [`crate::structure`] walks the document against the CRD's
//! schema and finds every unknown field, wrong type, unknown enum value and
//! missing field at once (serde stops at the first). Then serde reads it,
//! and — when the first pass found problems — `compile` judges the repaired
//! document, so a typo in one rule does not hide a broken regex in another.
//! Valid is still decided by serde and `compile` alone.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::compile::{compile, compile_cluster};
use crate::problem::{Problem, missing_field};
use crate::spec::{ClusterMcpToolPolicySpec, McpToolPolicySpec};
use crate::structure::{is_under, walk};

/// Parses `spec` (the value of a policy's `spec:`), or says everything
/// wrong with it.
pub fn parse_spec(spec: Value) -> Result<McpToolPolicySpec, Vec<Problem>> {
    parse_against(spec, crate::crd::spec_schema(), |s| {
        compile("", s).map(drop)
    })
}

/// Parses the `spec` of a `ClusterMcpToolPolicy`.
pub fn parse_cluster_spec(spec: Value) -> Result<ClusterMcpToolPolicySpec, Vec<Problem>> {
    parse_against(spec, crate::crd::cluster_spec_schema(), |s| {
        compile_cluster("", s).map(drop)
    })
}

/// `judge` is `compile`, for reporting what it finds in a repaired spec.
fn parse_against<T: DeserializeOwned>(
    spec: Value,
    schema: &Value,
    judge: impl Fn(&T) -> Result<(), Vec<Problem>>,
) -> Result<T, Vec<Problem>> {
    let walked = walk(&spec, schema, "spec");
    if walked.problems.is_empty() {
        return strict(spec).map_err(|p| vec![p]);
    }
    let replaced = walked.replaced;
    let beside = |p: &Problem| !replaced.iter().any(|r| is_under(&p.path, r));
    let mut problems = walked.problems;
    match strict::<T>(walked.repaired) {
        Ok(repaired) => {
            if let Err(more) = judge(&repaired) {
                problems.extend(more.into_iter().filter(beside));
            }
        }
        Err(p) if beside(&p) && !problems.contains(&p) => problems.push(p),
        Err(_) => {}
    }
    Err(problems)
}

/// serde's reading, with the path of its one problem.
fn strict<T: DeserializeOwned>(spec: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => "spec".to_owned(),
            p => format!("spec.{p}"),
        };
        Problem::at(path, explain(e.inner()))
    })
}

/// serde's messages already say what was expected ("unknown field `x`,
/// expected one of ..."); this adds the fix where serde cannot.
pub fn explain(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return missing_field(field);
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
                "spec.selector.matchLabel: unknown field `matchLabel`; did you mean `matchLabels`?",
            ),
            (
                json!({"defaultAction": "Deny", "selector": {"matchExpressions": [{"key": "a", "operator": "In", "value": ["x"]}]}}),
                "spec.selector.matchExpressions[0].value: unknown field `value`; did you mean `values`?",
            ),
            (
                json!({"defaultAction": "Deny", "selector": {"matchExpressions": [{"operator": "Exists"}]}}),
                "spec.selector.matchExpressions[0]: missing field `key`",
            ),
        ];
        for (spec, want) in bad {
            let got = crate::Problems(parse_spec(spec).unwrap_err()).to_string();
            assert!(got.starts_with(want), "{got}");
        }
        let ok = json!({"defaultAction": "Deny", "selector": {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}});
        assert!(parse_spec(ok).is_ok());
    }

    #[test]
    fn paths_and_hints() {
        assert_eq!(
            parse_spec(json!({})).unwrap_err()[0].to_string(),
            "spec: missing field `defaultAction`: add `defaultAction: Deny` (or `Allow`)"
        );
        let e = parse_spec(
            json!({"defaultAction": "Deny", "rules": [{"name": "a", "tools": ["x"], "action": "Allow", "rateLimit": []}]}),
        );
        assert!(
            e.unwrap_err()[0]
                .to_string()
                .starts_with("spec.rules[0].rateLimit: unknown field `rateLimit`")
        );
    }

    #[test]
    fn a_typo_does_not_hide_the_problems_compile_finds_elsewhere() {
        let spec = json!({
            "defaultAction": "deny",
            "rules": [
                {"name": "a", "tools": ["x"], "action": "Permit", "rateLimits": [{"requests": 5, "window": "1w"}],
                 "arguments": [{"pointer": "/n", "operator": "matches", "value": "(x"}]},
                {"name": "b", "tools": [true], "action": "Deny", "argument": []},
                {"name": "c c", "tools": ["y"], "action": "Allow"}
            ]
        });
        let got: Vec<String> = parse_spec(spec)
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "spec.defaultAction: unknown variant `deny`, expected `Allow` or `Deny`; did you mean `Deny`? (values are case-sensitive)",
                "spec.rules[0].action: unknown variant `Permit`, expected one of `Allow`, `Deny`, `RequireApproval`",
                "spec.rules[0].arguments[0].operator: unknown variant `matches`, expected one of `Equals`, `NotEquals`, `In`, `NotIn`, `Matches`, `Exists`, `NotExists`, `Lt`, `Lte`, `Gt`, `Gte`, `MaxLength`; did you mean `Matches`? (values are case-sensitive)",
                "spec.rules[1].tools[0]: invalid type: boolean `true` (YAML reads plain yes/no/on/off/y/n as booleans; quote it if you meant a string), expected a string",
                "spec.rules[1].argument: unknown field `argument`; did you mean `arguments`?",
                "spec.rules[0].arguments[0].value: \"(x\" is not a valid regex (regex parse error: ^(?:(x)$ ^ error: unclosed group); the syntax is that of the Rust regex crate, without look-around or backreferences",
                "spec.rules[0].rateLimits[0].window: \"1w\" is not a duration; write whole numbers with a unit s, m, h or d, e.g. \"30s\", \"1m\", \"1h30m\"",
                "spec.rules[2].name: \"c c\" is not a valid rule name; use 1-63 letters, digits, '-', '_' or '.', e.g. \"allow-reads\"",
            ]
        );
    }
}
