//! Policy tests (`tollgate test`): calls, and the decisions they must get,
//! run through the same decision sequence the sidecar runs — before a
//! policy is applied anywhere.
//!
//! A test file is a YAML document of kind `McpToolPolicyTest` naming the
//! policy files it tests, optionally the MCP server's tool list (what rules
//! on tool behaviour and created objects read), and the calls:
//!
//! ```yaml
//! apiVersion: tollgate.dev/v1alpha1
//! kind: McpToolPolicyTest
//! metadata: {name: baseline}
//! policies: [policy.yaml]          # files or directories, relative to this file
//! tools: tools.json                # optional: the server's tools/list answer
//! calls:
//!   - tool: vm_clone
//!     arguments: {namespace: vms, name: golden}
//!     caller: system:serviceaccount:agents:bot   # optional: the verified subject
//!     count: 3                     # optional: the same call 3 times
//!     at: 10s                      # optional: when, from the start of the file
//!     expect: {decision: rateLimited, after: 2, rule: clone}
//! ```
//!
//! Calls run in order against one set of budgets, on a clock that starts
//! when the file does and moves only as `at` says, so what a test counts
//! cannot depend on how fast it runs. This module reads the document and
//! runs the calls; reading files is the caller's.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use crate::budget::inflight::MemoryInFlight;
use crate::budget::ratelimit::MemoryCounter;
use crate::budget::{Stores, decide};
use crate::catalogue::Catalogue;
use crate::compile::resource_rules::NoCluster;
use crate::duration;
use crate::evaluate::{Decision, Effect, PolicySet, Reason, ToolCall};
use crate::problem::Problem;

/// One test file's document.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suite {
    /// Always `tollgate.dev/v1alpha1`.
    pub api_version: String,
    /// Always `McpToolPolicyTest`.
    pub kind: String,
    /// Its name.
    pub metadata: SuiteMetadata,
    /// The policy files or directories under test, relative to the file.
    pub policies: Vec<String>,
    /// The MCP server's `tools/list` answer (JSON), relative to the file.
    #[serde(default)]
    pub tools: Option<String>,
    /// The calls, in order.
    pub calls: Vec<Call>,
}

/// `metadata` of a test file.
#[derive(Clone, Debug, Deserialize)]
pub struct SuiteMetadata {
    /// The test's name.
    pub name: String,
}

/// One call (or `count` identical ones) and what it must get.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Call {
    /// What the row is called in the output (default: the tool).
    #[serde(default)]
    pub name: Option<String>,
    /// The tool.
    pub tool: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Option<Value>,
    /// The caller: the subject of a verified token.
    #[serde(default)]
    pub caller: Option<String>,
    /// The MCP session the call is in.
    #[serde(default)]
    pub session: Option<String>,
    /// How many times the call is made (default 1, or `after` + 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// When, as a window-like duration from the start of the file (`90s`).
    #[serde(default)]
    pub at: Option<String>,
    /// What it must get.
    pub expect: Expect,
}

/// The decision a call must get.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// Allowed, denied, rate-limited, audited or approval required.
    pub decision: Expected,
    /// The deciding policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// The deciding rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// The reason (`rule`, `arguments`, `default`, `rate_limit`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    /// With `rateLimited`: the first `after` calls are allowed, the rest
    /// rate-limited.
    #[serde(default)]
    pub after: Option<u32>,
}

/// The decisions a test can expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Expected {
    /// Forwarded.
    Allowed,
    /// Refused, not by a rate limit.
    Denied,
    /// Refused by a full rate limit.
    RateLimited,
    /// Forwarded, and recorded as what an `Audit` policy would deny.
    Audited,
    /// Held for a person to approve.
    ApprovalRequired,
}

/// One row of the result: one call of a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The call's label.
    pub name: String,
    /// The tool.
    pub tool: String,
    /// Which of `count` it is (1-based).
    pub repeat: u32,
    /// What was expected, in words.
    pub expected: String,
    /// What it got, in words.
    pub got: String,
    /// `None` when they agree; else why not.
    pub mismatch: Option<String>,
}

/// Reads the test documents of one file's text (other documents are not
/// tests and are left out).
pub fn parse(label: &str, text: &str) -> Result<Vec<Suite>, Vec<Problem>> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| vec![Problem::at("", format!("not valid YAML: {e}")).in_source(label)])?;
    let mut suites = Vec::new();
    let mut problems = Vec::new();
    for value in values {
        if value.get("kind").and_then(Value::as_str) != Some(crate::load::TEST_KIND) {
            continue;
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        match serde_path_to_error::deserialize::<_, Suite>(value) {
            Ok(s) if s.api_version != crate::load::API_VERSION => problems.push(
                Problem::at(
                    "apiVersion",
                    format!("expected `{}`", crate::load::API_VERSION),
                )
                .in_source(&format!("{label} (test {name:?})")),
            ),
            Ok(s) => suites.push(s),
            Err(e) => problems.push(
                Problem::at(e.path().to_string(), crate::parse::explain(e.inner()))
                    .in_source(&format!("{label} (test {name:?})")),
            ),
        }
    }
    if problems.is_empty() {
        Ok(suites)
    } else {
        Err(problems)
    }
}

/// Runs `suite`'s calls against `set`, with the server's tools from
/// `catalogue` (without it, every tool counts as one the server did not
/// list), on fresh budgets.
pub fn run(suite: &Suite, set: &PolicySet, catalogue: Option<&Catalogue>) -> Vec<Outcome> {
    let budgets = MemoryCounter::default();
    let in_flight = MemoryInFlight::default();
    let start = Instant::now();
    let wall = SystemTime::now();
    let mut clock = Duration::ZERO;
    let mut out = Vec::new();
    for call in &suite.calls {
        let label = call.name.clone().unwrap_or_else(|| call.tool.clone());
        let row = |repeat, expected: &str, got: String, mismatch| Outcome {
            name: label.clone(),
            tool: call.tool.clone(),
            repeat,
            expected: expected.to_owned(),
            got,
            mismatch,
        };
        if let Some(at) = &call.at {
            match duration::parse_offset(at) {
                Ok(t) if t >= clock => clock = t,
                Ok(_) => {
                    out.push(row(1, "", String::new(), Some(format!("`at: {at}` is earlier than the call before; the clock only moves forward"))));
                    continue;
                }
                Err(e) => {
                    out.push(row(1, "", String::new(), Some(format!("`at`: {e}"))));
                    continue;
                }
            }
        }
        let arguments = call
            .arguments
            .clone()
            .unwrap_or(Value::Object(Default::default()));
        let expect = &call.expect;
        let count = call
            .count
            .unwrap_or_else(|| expect.after.map_or(1, |a| a + 1))
            .max(1);
        for repeat in 1..=count {
            let mut tool_call = ToolCall::new(&call.tool, &arguments);
            tool_call.subject = call.caller.as_deref();
            tool_call.session = call.session.as_deref();
            tool_call.meta = catalogue.and_then(|c| c.meta(&call.tool));
            let stores = Stores {
                budgets: &budgets,
                in_flight: &in_flight,
                view: &NoCluster,
            };
            let decision = finish_now(decide(set, &tool_call, stores, start + clock, wall + clock));
            let (expected, mismatch) = judge(expect, repeat, decision.as_ref());
            let got = decision
                .as_ref()
                .map_or_else(|| "no decision".to_owned(), describe);
            out.push(row(repeat, &expected, got, mismatch));
        }
    }
    out
}

/// What `expect` says the `repeat`th call gets, and why `got` is not it
/// (`None`: it is).
fn judge(expect: &Expect, repeat: u32, got: Option<&Decision>) -> (String, Option<String>) {
    let wanted = match (expect.decision, expect.after) {
        (Expected::RateLimited, Some(after)) if repeat <= after => Expected::Allowed,
        (d, _) => d,
    };
    let mut expected = match wanted {
        Expected::Allowed => "allowed",
        Expected::Denied => "denied",
        Expected::RateLimited => "rate-limited",
        Expected::Audited => "audited",
        Expected::ApprovalRequired => "approval required",
    }
    .to_owned();
    let limited_row = wanted == expect.decision;
    let details = [
        ("policy", expect.policy.as_deref()),
        ("rule", expect.rule.as_deref()),
        ("reason", expect.reason.as_deref()),
    ];
    // The policy, rule and reason describe the decision expected; with
    // `after`, they describe the rate-limited calls, not the ones before.
    let details: Vec<(&str, &str)> = details
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .filter(|_| limited_row)
        .collect();
    for (k, v) in &details {
        expected.push_str(&format!(" {k}={v}"));
    }
    let Some(d) = got else {
        return (expected, Some("the decision did not complete".to_owned()));
    };
    let effect_ok = match wanted {
        Expected::Allowed => d.effect == Effect::Allowed,
        Expected::Denied => d.effect == Effect::Denied && d.reason != Reason::RateLimit,
        Expected::RateLimited => d.effect == Effect::Denied && d.reason == Reason::RateLimit,
        Expected::Audited => d.effect == Effect::Audited,
        Expected::ApprovalRequired => d.effect == Effect::ApprovalRequired,
    };
    if !effect_ok {
        return (
            expected,
            Some(format!("expected {}", expected_word(wanted))),
        );
    }
    for (k, v) in details {
        let actual = match k {
            "policy" => d.policy.as_deref().unwrap_or("(none)"),
            "rule" => d.rule.as_deref().unwrap_or("(default)"),
            _ => d.reason.as_str(),
        };
        if actual != v {
            return (expected, Some(format!("{k} is {actual:?}, not {v:?}")));
        }
    }
    (expected, None)
}

fn expected_word(e: Expected) -> &'static str {
    match e {
        Expected::Allowed => "the call to be allowed",
        Expected::Denied => "the call to be denied",
        Expected::RateLimited => "the call to be rate-limited",
        Expected::Audited => "the call to be audited",
        Expected::ApprovalRequired => "approval to be required",
    }
}

/// `denied policy=vms/p rule=r reason=arguments`, in the words of the
/// expectations.
fn describe(d: &Decision) -> String {
    let what = match (d.effect, d.reason) {
        (Effect::Allowed, _) => "allowed",
        (Effect::Denied, Reason::RateLimit) => "rate-limited",
        (Effect::Denied, _) => "denied",
        (Effect::Audited, _) => "audited",
        (Effect::ApprovalRequired, _) => "approval-required",
    };
    format!(
        "{what} policy={} rule={} reason={}",
        d.policy.as_deref().unwrap_or("(none)"),
        d.rule.as_deref().unwrap_or("(default)"),
        d.reason.as_str()
    )
}

/// Runs a decision whose budgets answer at once (memory): a pending future
/// here is a bug, reported as "no decision" rather than a hang.
pub(crate) fn finish_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    (0..1000).find_map(|_| match f.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::set;

    const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: p, namespace: vms}
spec:
  defaultAction: Deny
  rules:
    - {name: reads, tools: ["*_list"], action: Allow}
    - {name: clone, tools: [vm_clone], action: Allow, rateLimits: [{requests: 2, window: 1m}]}
    - {name: no-deletes, tools: ["*_delete"], action: Deny}
"#;

    fn suite(calls: &str) -> Suite {
        let text = format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicyTest\nmetadata: {{name: t}}\npolicies: [p.yaml]\ncalls:\n{calls}"
        );
        parse("t.yaml", &text).unwrap().remove(0)
    }

    fn results(calls: &str) -> Vec<Option<String>> {
        run(&suite(calls), &set(POLICY), None)
            .into_iter()
            .map(|o| o.mismatch)
            .collect()
    }

    #[test]
    fn expectations_that_hold_pass() {
        let got = results(
            "  - {tool: pods_list, expect: {decision: allowed, rule: reads}}\n  - {tool: pods_delete, expect: {decision: denied, rule: no-deletes, reason: rule, policy: vms/p}}\n  - {tool: vm_clone, expect: {decision: rateLimited, after: 2, rule: clone}}\n  - {tool: vm_clone, at: 61s, expect: {decision: allowed}}\n  - {tool: exec, expect: {decision: denied, reason: default}}\n",
        );
        assert_eq!(got, vec![None; 7]);
    }

    #[test]
    fn expectations_that_do_not_hold_fail_and_say_why() {
        let got = results(
            "  - {tool: vm_clonee, expect: {decision: allowed}}\n  - {tool: pods_delete, expect: {decision: denied, rule: reads}}\n  - {tool: vm_clone, count: 3, expect: {decision: allowed}}\n  - {tool: pods_list, at: 1s, expect: {decision: approvalRequired}}\n  - {tool: pods_list, at: 0s, expect: {decision: allowed}}\n",
        );
        assert_eq!(
            got,
            vec![
                Some("expected the call to be allowed".to_owned()),
                Some("rule is \"no-deletes\", not \"reads\"".to_owned()),
                None,
                None,
                Some("expected the call to be allowed".to_owned()),
                Some("expected approval to be required".to_owned()),
                Some(
                    "`at: 0s` is earlier than the call before; the clock only moves forward"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn test_files_are_read_strictly() {
        let text = "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicyTest\nmetadata: {name: t}\npolicies: [p.yaml]\ncalls:\n  - {tool: x, expect: {decison: allowed}}\n";
        let e = parse("t.yaml", text).unwrap_err();
        assert!(
            e[0].to_string().contains("unknown field `decison`"),
            "{e:?}"
        );
        let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        assert!(parse("c.yaml", other).unwrap().is_empty());
    }
}
