//! The gate: where a parsed tool call meets the rules in force.
//!
//! Transports hand it calls and get back decisions; it runs the pure
//! evaluator against the current rules and the rate-limit store, and counts
//! and logs every decision. It holds no transport logic, and the transports
//! hold no policy logic.

pub(crate) mod redis;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use tollgate_mcp::jsonrpc::{self, NO_POLICY, POLICY_DENIED, RATE_LIMITED};
use tollgate_mcp::tools::CallParams;
use tollgate_policy::PolicySet;
use tollgate_policy::budget::inflight::MemoryInFlight;
use tollgate_policy::budget::{self, Stores, TableStats, Tiered};
use tollgate_policy::spec::DenyWith;
use tollgate_policy::{Decision, Effect, Reason, ToolCall};

use crate::audit::{AuditConfig, Entry};
use crate::gate::redis::SharedStore;
use crate::metrics::{Metrics, UNPARSED_TOOL};
use crate::rules::catalog::Catalog;
use crate::rules::cluster::VmLabels;
use crate::rules::store::RuleStore;

/// Decides tool calls against the rules in force.
pub(crate) struct Gate {
    store: Arc<RuleStore>,
    budgets: Tiered<SharedStore>,
    in_flight: Arc<MemoryInFlight>,
    cluster: Arc<VmLabels>,
    metrics: Metrics,
    catalog: Catalog,
    audit: AuditConfig,
    fail_open: bool,
}

/// What a [`Gate`] is made of.
pub(crate) struct GateParts {
    /// The rules in force.
    pub store: Arc<RuleStore>,
    /// Redis for `scope: Shared` limits, if configured.
    pub shared: Option<SharedStore>,
    /// VirtualMachineClones in flight (fed by the controller in managed mode).
    pub in_flight: Arc<MemoryInFlight>,
    /// What the controller says about the cluster.
    pub cluster: Arc<VmLabels>,
    /// Metrics.
    pub metrics: Metrics,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Allow calls while no rules are loaded (managed mode, `--fail-open`).
    pub fail_open: bool,
}

/// Who is calling, for decisions and the audit log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Caller<'a> {
    /// The MCP session the upstream issued.
    pub session: Option<&'a str>,
    /// The verified subject of the caller's token.
    pub subject: Option<&'a str>,
}

impl Gate {
    /// A gate with empty budgets and an empty tool catalogue.
    pub(crate) fn new(parts: GateParts) -> Self {
        Gate {
            store: parts.store,
            budgets: Tiered::new(parts.shared),
            in_flight: parts.in_flight,
            cluster: parts.cluster,
            metrics: parts.metrics,
            catalog: Catalog::new(),
            audit: parts.audit,
            fail_open: parts.fail_open,
        }
    }

    /// The rules in force.
    pub(crate) fn rules(&self) -> &RuleStore {
        &self.store
    }

    /// What the upstream says it offers.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether calls are allowed while no rules are loaded.
    pub(crate) fn fails_open(&self) -> bool {
        self.fail_open
    }

    /// Drops idle in-memory rate-limit buckets.
    pub(crate) fn sweep(&self, now: Instant) {
        self.budgets.local().sweep(now);
    }

    /// The sizes of the in-memory rate-limit and in-flight tables, for
    /// metrics.
    pub(crate) fn tables(&self) -> (TableStats, TableStats) {
        (self.budgets.local().stats(), self.in_flight.stats())
    }

    /// Decides one `tools/call`.
    pub(crate) async fn decide(
        &self,
        call: &CallParams<'_>,
        caller: Caller<'_>,
        request_id: &Value,
    ) -> Decision {
        let start = Instant::now();
        let rules = self.store.current();
        let decision = match &rules {
            Some(rules) if rules.deny_when_empty && rules.set.policies().is_empty() => unselected(),
            Some(rules) => {
                let meta = self.catalog.meta(call.name);
                let call = ToolCall {
                    tool: call.name,
                    arguments: call.arguments,
                    session: caller.session,
                    meta: meta.as_deref(),
                    subject: caller.subject,
                };
                self.judge(&rules.set, &call, start).await
            }
            None if self.fail_open => Decision::allowed_by_default(),
            None => no_rules(),
        };
        let elapsed = start.elapsed();
        self.metrics.decision_seconds.observe(elapsed.as_secs_f64());
        let label = self
            .catalog
            .label(call.name, rules.as_ref().map(|r| &r.set));
        self.metrics.count_decision(&decision, label);
        self.audit.record(&Entry {
            decision: &decision,
            tool: call.name,
            arguments: call.arguments,
            session: caller.session,
            subject: caller.subject,
            request_id,
            elapsed,
        });
        decision
    }

    /// The one decision sequence (evaluate, in-flight claim, budgets),
    /// over this sidecar's stores.
    async fn judge(&self, set: &PolicySet, call: &ToolCall<'_>, now: Instant) -> Decision {
        let stores = Stores {
            budgets: &self.budgets,
            in_flight: &*self.in_flight,
            view: &*self.cluster,
        };
        budget::decide(set, call, stores, now, SystemTime::now()).await
    }

    /// Counts and logs a message refused because it could not be read as
    /// one unambiguous tool call (or any message at all).
    pub(crate) fn malformed(&self, detail: &str, request_id: &Value) {
        let decision = Decision::malformed(detail);
        self.metrics.count_decision(&decision, UNPARSED_TOOL);
        self.audit.record(&Entry {
            decision: &decision,
            tool: "",
            arguments: &Value::Null,
            session: None,
            subject: None,
            request_id,
            elapsed: Default::default(),
        });
    }

    /// Whether `tools/list` should hide `tool` from the caller `subject`.
    pub(crate) fn hides(&self, tool: &str, subject: Option<&str>) -> bool {
        self.store.current().is_some_and(|r| {
            r.set
                .hides(tool, self.catalog.meta(tool).as_deref(), subject)
        })
    }

    /// Whether any rules in force hide tools at all (else `tools/list`
    /// responses need no rewriting).
    pub(crate) fn may_hide(&self) -> bool {
        self.store
            .current()
            .is_some_and(|r| r.set.policies().iter().any(|p| p.hide_denied))
    }
}

/// The JSON-RPC response that carries a denial to the client.
pub(crate) fn denial_response(id: &Value, d: &Decision) -> Value {
    let text = d.message.as_deref().unwrap_or("Denied by tollgate.");
    let details = json!({
        "policy": d.policy.as_deref(),
        "rule": d.rule.as_deref(),
        "reason": d.reason.as_str(),
        "retryAfterSeconds": d.retry_after.map(|r| r.as_secs_f64().ceil() as u64),
    });
    match d.deny_with {
        DenyWith::ToolError => {
            let mut response = jsonrpc::tool_error_result(id, text);
            response["result"]["_meta"] = json!({ "dev.tollgate/denial": details });
            response
        }
        DenyWith::JsonRpcError => {
            let code = match (d.reason, &d.policy) {
                (Reason::RateLimit, _) => RATE_LIMITED,
                (_, None) => NO_POLICY,
                _ => POLICY_DENIED,
            };
            jsonrpc::error_response(id, code, text, Some(details))
        }
    }
}

/// A managed sidecar no policy selects refuses tool calls (fail closed);
/// the message tells the operator what is missing.
fn unselected() -> Decision {
    Decision {
        effect: Effect::Denied,
        reason: Reason::Default,
        policy: None,
        rule: None,
        message: Some(
            "Denied by tollgate: no McpToolPolicy selects this MCP server, so its tool calls are refused. Apply a policy whose selector matches this pod."
                .into(),
        ),
        retry_after: None,
        deny_with: DenyWith::ToolError,
    }
}

/// Before any rules arrive a sidecar refuses tool calls.
fn no_rules() -> Decision {
    Decision {
        effect: Effect::Denied,
        reason: Reason::Default,
        policy: None,
        rule: None,
        message: Some(
            "Denied by tollgate: no policy has been loaded yet, so tool calls are refused.".into(),
        ),
        retry_after: None,
        deny_with: DenyWith::JsonRpcError,
    }
}
