//! Imported policies decide like their origins: each seed's policy, and
//! Intercept's documented language, imported, rendered, loaded and run
//! through the one decision sequence beside a model of the original's
//! documented semantics, call by call.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::*;
use crate::Effect;
use crate::tests::{budgets, run, set};
use crate::{PolicySet, ToolCall};

const POLICYLAYER_SEED: &str =
    include_str!("../../../../tests/fixtures/seeds/policylayer-truenas-vm_clone.json");
const INTERCEPT_SEED: &str =
    include_str!("../../../../tests/fixtures/seeds/intercept-kubernetes-vm_clone.yaml");

/// Imports, renders and loads back: what `tollgate import` prints is what
/// is tested.
fn imported(result: Result<Imported, Vec<ImportError>>) -> (PolicySet, String) {
    let imported = result.unwrap_or_else(|e| panic!("{}", ImportErrors(e)));
    let yaml = render(&imported);
    (set(&yaml), yaml)
}

/// tollgate's decisions on `calls`, in order, as allowed or not.
fn tollgate(set: &PolicySet, calls: &[(&str, Value)]) -> Vec<bool> {
    let budgets = budgets();
    let now = Instant::now();
    calls
        .iter()
        .map(|(tool, args)| {
            run(set, &ToolCall::new(tool, args), &budgets, now).effect == Effect::Allowed
        })
        .collect()
}

/// PolicyLayer as its page describes it: default, per-tool action, and
/// limits that count on named counters (all within one window here).
fn policylayer(policy: &Value, calls: &[(&str, Value)]) -> Vec<bool> {
    let mut counters: HashMap<String, i64> = HashMap::new();
    calls
        .iter()
        .map(|(tool, _)| {
            let Some(def) = policy["tools"].get(*tool) else {
                return policy["default"] != "deny";
            };
            if def["action"] == "deny" {
                return false;
            }
            let limits = def["limits"].as_array().cloned().unwrap_or_default();
            let room = limits.iter().all(|l| {
                counters
                    .get(l["counter"].as_str().unwrap())
                    .copied()
                    .unwrap_or(0)
                    < l["max"].as_i64().unwrap()
            });
            if room {
                for l in &limits {
                    *counters
                        .entry(l["counter"].as_str().unwrap().into())
                        .or_default() += 1;
                }
            }
            room
        })
        .collect()
}

/// Intercept as POLICY.md describes v1: default deny refuses unlisted
/// tools first; hide denies; every rule of the tool and of "*" must pass
/// (deny, conditions on args, counters reserved only when all pass).
fn intercept(policy: &Value, calls: &[(&str, Value)]) -> Vec<bool> {
    let mut counters: HashMap<String, i64> = HashMap::new();
    let tools = &policy["tools"];
    calls
        .iter()
        .map(|(tool, args)| {
            if policy["default"] == "deny" && tools.get(*tool).is_none() {
                return false;
            }
            let hidden = policy["hide"]
                .as_array()
                .is_some_and(|h| h.iter().any(|t| t == *tool || t == "*"));
            if hidden {
                return false;
            }
            let mut rules: Vec<(String, &Value)> = Vec::new();
            for (scope, key) in [(tool.to_string(), *tool), ("_global".into(), "*")] {
                for r in tools[key]["rules"].as_array().into_iter().flatten() {
                    rules.push((scope.clone(), r));
                }
            }
            let mut reserve = Vec::new();
            for (scope, r) in &rules {
                if r["action"] == "deny" {
                    return false;
                }
                if let Some(shorthand) = r["rate_limit"].as_str() {
                    let (n, w) = shorthand.split_once('/').unwrap();
                    let key = format!("{scope}._rate_{w}");
                    if counters.get(&key).copied().unwrap_or(0) + 1 > n.parse::<i64>().unwrap() {
                        return false;
                    }
                    reserve.push(key);
                }
                for c in r["conditions"].as_array().into_iter().flatten() {
                    let path = c["path"].as_str().unwrap();
                    let ok = if let Some(p) = path.strip_prefix("args.") {
                        let v = p.split('.').try_fold(args, |v, k| v.get(k));
                        let want = &c["value"];
                        match (c["op"].as_str().unwrap(), v) {
                            ("eq", Some(v)) => v == want,
                            ("in", Some(v)) => want.as_array().unwrap().contains(v),
                            ("lte", Some(v)) => {
                                v.as_f64().is_some_and(|x| x <= want.as_f64().unwrap())
                            }
                            ("regex", Some(Value::String(s))) => {
                                regex::Regex::new(want.as_str().unwrap())
                                    .unwrap()
                                    .is_match(s)
                            }
                            ("exists", v) => v.is_some() == want.as_bool().unwrap(),
                            _ => false,
                        }
                    } else {
                        let counter = path.rsplit('.').next().unwrap();
                        let key = format!("{scope}.{counter}");
                        let next = counters.get(&key).copied().unwrap_or(0) + 1;
                        reserve.push(key);
                        next <= c["value"].as_i64().unwrap()
                    };
                    if !ok {
                        return false;
                    }
                }
            }
            for key in reserve {
                *counters.entry(key).or_default() += 1;
            }
            true
        })
        .collect()
}

fn clones(n: usize) -> Vec<(&'static str, Value)> {
    (0..n)
        .map(|i| ("vm_clone", json!({"id": 1, "name": format!("c{i}")})))
        .collect()
}

#[test]
fn the_policylayer_seed_decides_like_policylayer() {
    let (set, yaml) = imported(policylayer::import(POLICYLAYER_SEED, &Options::default()));
    assert!(yaml.contains("\"budget\":\"vm_clone_rate\""), "{yaml}");
    assert!(
        yaml.contains("scope: grant became key: {subject: true}"),
        "{yaml}"
    );
    let mut calls = clones(100);
    calls.push(("vm_delete", json!({"id": 1})));
    calls.push(("vm_list", json!({})));
    let origin = policylayer(&serde_json::from_str(POLICYLAYER_SEED).unwrap(), &calls);
    let ours = tollgate(&set, &calls);
    assert_eq!(ours, origin);
    assert_eq!(ours.iter().filter(|a| **a).count(), 30);
    // Default deny hides what it denies outright from tools/list.
    assert!(set.hides("vm_delete", None, None));
    assert!(!set.hides("vm_clone", None, None));
}

#[test]
fn the_intercept_seed_decides_like_intercept() {
    let (set, yaml) = imported(intercept::import(INTERCEPT_SEED, &Options::default()));
    assert!(
        yaml.contains("action: allow"),
        "the note on action: allow: {yaml}"
    );
    let mut calls = clones(100);
    calls.push(("resources_delete", json!({})));
    let origin = intercept(&serde_yaml_value(INTERCEPT_SEED), &calls);
    assert!(origin.iter().all(|a| *a));
    assert_eq!(tollgate(&set, &calls), origin);
}

/// Intercept's documented language, as far as tollgate maps it.
const INTERCEPT_LANGUAGE: &str = r#"
version: "1"
description: "the documented features"
default: deny
hide: [transfer_repository]
tools:
  create_issue:
    rules:
      - name: "hourly issue limit"
        rate_limit: 3/hour
        on_deny: "Hourly limit of 3 new issues reached"
  create_charge:
    rules:
      - name: "max single charge"
        conditions:
          - path: "args.amount"
            op: "lte"
            value: 500
      - name: "currencies"
        conditions:
          - path: "args.currency"
            op: "in"
            value: ["usd", "eur"]
      - name: "daily count"
        conditions:
          - path: "state.create_charge.daily_count"
            op: "lte"
            value: 4
        state:
          counter: "daily_count"
          window: "day"
  push:
    rules:
      - name: "feature branches"
        conditions:
          - path: "args.branch"
            op: "regex"
            value: "^feat/"
          - path: "args.force"
            op: "exists"
            value: false
  delete_repository:
    rules:
      - name: "block"
        action: "deny"
        on_deny: "no deletions"
  read_file:
    rules: []
  transfer_repository:
    rules: []
  "*":
    rules:
      - name: "global rate limit"
        rate_limit: 8/minute
"#;

#[test]
fn intercepts_language_decides_like_intercept_call_by_call() {
    let (set, yaml) = imported(intercept::import(INTERCEPT_LANGUAGE, &Options::default()));
    let calls: Vec<(&str, Value)> = vec![
        ("create_issue", json!({})),
        ("create_issue", json!({})),
        ("create_charge", json!({"amount": 100, "currency": "usd"})),
        ("create_charge", json!({"amount": 900, "currency": "usd"})),
        ("create_charge", json!({"amount": 100, "currency": "gbp"})),
        ("create_issue", json!({})),
        ("create_issue", json!({})),
        ("push", json!({"branch": "feat/x"})),
        ("push", json!({"branch": "main"})),
        ("push", json!({"branch": "feat/y", "force": true})),
        ("delete_repository", json!({})),
        ("transfer_repository", json!({})),
        ("unlisted_tool", json!({})),
        ("read_file", json!({})),
        ("create_charge", json!({"amount": 1, "currency": "eur"})),
        ("read_file", json!({})),
        ("read_file", json!({})),
        ("read_file", json!({})),
        ("read_file", json!({})),
        ("read_file", json!({})),
    ];
    let origin = intercept(&serde_yaml_value(INTERCEPT_LANGUAGE), &calls);
    let ours = tollgate(&set, &calls);
    assert_eq!(ours, origin, "{yaml}");
    // The global limit of 8 a minute is one budget across every tool.
    assert!(origin.iter().filter(|a| **a).count() == 8, "{origin:?}");
    assert!(set.hides("transfer_repository", None, None));
}

#[test]
fn a_counter_shared_by_several_tools_keeps_one_budget() {
    let policy = r#"{"default": "deny", "tools": {
        "vm_clone": {"limits": [{"counter": "clones", "window": "hour", "max": 5}]},
        "clone_snapshot": {"limits": [{"counter": "clones", "window": "hour", "max": 5}]},
        "vm_list": {}}}"#;
    let (set, _) = imported(policylayer::import(policy, &Options::default()));
    let mut calls = Vec::new();
    for i in 0..4 {
        calls.push(("vm_clone", json!({"i": i})));
        calls.push(("clone_snapshot", json!({"i": i})));
    }
    calls.push(("vm_list", json!({})));
    let origin = policylayer(&serde_json::from_str(policy).unwrap(), &calls);
    assert_eq!(tollgate(&set, &calls), origin);
    assert_eq!(origin.iter().filter(|a| **a).count(), 6);
}

#[test]
fn renaming_maps_the_seeds_tool_onto_the_servers() {
    let options = Options {
        name: Some("truenas".into()),
        rename: vec![("vm_clone".into(), "clone_snapshot".into())],
    };
    let (set, yaml) = imported(policylayer::import(POLICYLAYER_SEED, &options));
    assert!(yaml.contains("renamed to \"clone_snapshot\""), "{yaml}");
    let calls: Vec<(&str, Value)> = (0..40).map(|_| ("clone_snapshot", json!({}))).collect();
    assert_eq!(tollgate(&set, &calls).iter().filter(|a| **a).count(), 30);
    assert!(set.hides("vm_clone", None, None));
}

#[test]
fn what_cannot_be_mapped_is_an_error_naming_the_field() {
    let cases: [(&str, &str, bool); 8] = [
        (r#"{"tools": {"x": {"approval": true}}}"#, "tools.x", true),
        (
            r#"{"tools": {"x": {"action": "require_approval"}}}"#,
            "tools.x.action",
            true,
        ),
        (
            r#"{"tools": {"x": {"limits": [{"counter": "c", "window": "minute", "max": 3, "scope": "org"}]}}}"#,
            "tools.x.limits[0].scope",
            true,
        ),
        (
            r#"{"tools": {"x": {"limits": [{"counter": "c", "window": "fortnight", "max": 3}]}}}"#,
            "tools.x.limits[0].window",
            true,
        ),
        (
            r#"{"tools": {"a": {"limits": [{"counter": "c", "window": "minute", "max": 3}]}, "b": {"limits": [{"counter": "c", "window": "minute", "max": 4}]}}}"#,
            "tools.b.limits[0].counter",
            true,
        ),
        (
            "tools: {x: {rules: [{name: r1, conditions: [{path: args.tags, op: contains, value: a}]}]}}",
            "tools.x.rules[0].conditions[0].op",
            false,
        ),
        (
            "tools: {x: {rules: [{name: r1, conditions: [{path: state.x.spend, op: lte, value: 9}], state: {counter: spend, window: day, increment_from: args.amount}}]}}",
            "increment_from",
            false,
        ),
        (
            "tools: {x: {rules: [{name: r1, rate_limit: 5/hour, on_deny: stop, extra: 1}]}}",
            "tools.x.rules[0]",
            false,
        ),
    ];
    for (text, field, is_policylayer) in cases {
        let result = if is_policylayer {
            policylayer::import(text, &Options::default())
        } else {
            intercept::import(text, &Options::default())
        };
        let errors = ImportErrors(result.expect_err(text)).to_string();
        assert!(errors.contains(field), "{text}: {errors}");
    }
}

#[test]
fn named_budgets_must_agree_and_are_shared_across_rules() {
    let yaml = |second: &str| {
        format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: b}}
spec:
  defaultAction: Deny
  rules:
    - name: a
      tools: [vm_clone]
      action: Allow
      rateLimits: [{{requests: 2, window: 1m, budget: clones}}]
    - name: b
      tools: [clone_snapshot]
      action: Allow
      rateLimits: [{{requests: 2, window: {second}, budget: clones}}]
"#
        )
    };
    let shared = set(&yaml("60s"));
    let calls = [
        ("vm_clone", json!({})),
        ("clone_snapshot", json!({})),
        ("clone_snapshot", json!({})),
    ];
    assert_eq!(tollgate(&shared, &calls), vec![true, true, false]);
    let problems = crate::tests::problems(&yaml("1h"));
    assert!(problems.contains("budget \"clones\""), "{problems}");
}

fn serde_yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}
