//! The gate: where a parsed tool call meets the rules in force.
//!
//! Transports hand it calls and get back decisions; it runs the pure
//! evaluator against the current rules and the rate-limit store, and counts
//! and logs every decision. It holds no transport logic, and the transports
//! hold no policy logic.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use crate::mcp::jsonrpc::{self, NO_POLICY, POLICY_DENIED, RATE_LIMITED};
use crate::mcp::tools::CallParams;
use crate::policy::PolicySet;
use crate::policy::inflight::{InFlight, MemoryInFlight};
use crate::policy::ratelimit::MemoryCounter;
use crate::policy::ratelimit::{Acquire, Counter, Refusal};
use crate::policy::spec::DenyWith;
use crate::policy::{Decision, Effect, Reason, ToolCall};

use super::audit::{AuditConfig, Entry};
use super::catalog::Catalog;
use super::cluster::ClusterState;
use super::metrics::{Metrics, UNPARSED_TOOL};
use super::shared::{Outcome, SharedStore};
use super::store::RuleStore;

/// Decides tool calls against the rules in force.
pub struct Gate {
    /// The rules.
    pub store: Arc<RuleStore>,
    /// Rate-limit budgets.
    pub counter: Arc<MemoryCounter>,
    /// VirtualMachineClones in flight.
    pub in_flight: Arc<MemoryInFlight>,
    /// What the controller says about the cluster.
    pub cluster: Arc<ClusterState>,
    /// Metrics.
    pub metrics: Metrics,
    /// Tool names the upstream listed.
    pub catalog: Catalog,
    /// Audit log settings.
    pub audit: AuditConfig,
    /// Allow calls while no rules are loaded (managed mode, `--fail-open`).
    pub fail_open: bool,
    /// The shared budgets of `scope: Shared` limits, if configured.
    pub shared: Option<Arc<SharedStore>>,
}

/// Who is calling, for decisions and the audit log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// The MCP session the upstream issued.
    pub session: Option<&'a str>,
    /// The verified subject of the caller's token.
    pub subject: Option<&'a str>,
}

impl Gate {
    /// A gate over `store` with empty budgets.
    pub fn new(store: Arc<RuleStore>, metrics: Metrics, audit: AuditConfig) -> Self {
        Gate {
            store,
            counter: Arc::new(MemoryCounter::new()),
            in_flight: Arc::new(MemoryInFlight::default()),
            cluster: Arc::new(ClusterState::default()),
            metrics,
            catalog: Catalog::new(),
            audit,
            fail_open: false,
            shared: None,
        }
    }

    /// Decides one `tools/call`.
    pub async fn decide(
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

    /// The pure evaluation, then the budgets: in-flight caps, then rate
    /// limits — shared ones in Redis, the rest in memory, all or nothing.
    async fn judge(&self, set: &PolicySet, call: &ToolCall<'_>, now: Instant) -> Decision {
        let eval = set.evaluate(call, self.cluster.as_ref());
        if let Some(d) = eval.decided() {
            return d.clone();
        }
        let ticket = match self.in_flight.try_claim(eval.claims(), SystemTime::now()) {
            Ok(t) => t,
            Err(full) => return eval.in_flight_refusal(&full),
        };
        let enforce = self.acquire(eval.acquisitions(), now).await;
        if enforce.is_err() {
            self.in_flight.release(ticket);
        }
        let (audit_in_flight, audit) = match enforce {
            Ok(()) => (
                Some(self.in_flight.check(eval.audit_claims(), SystemTime::now())),
                Some(self.acquire(eval.audit_acquisitions(), now).await),
            ),
            Err(_) => (None, None),
        };
        eval.finish(enforce, audit_in_flight, audit)
    }

    /// Admits every acquisition or none, spanning Redis and memory.
    async fn acquire(&self, all: &[Acquire], now: Instant) -> Result<(), Refusal> {
        let shared_idx: Vec<usize> = (0..all.len()).filter(|&i| all[i].limit.shared).collect();
        if shared_idx.is_empty() {
            return self.counter.try_acquire(all, now);
        }
        let mut local_idx: Vec<usize> = (0..all.len()).filter(|&i| !all[i].limit.shared).collect();
        let mut taken = None;
        match &self.shared {
            Some(store) => {
                let shared: Vec<&Acquire> = shared_idx.iter().map(|&i| &all[i]).collect();
                match store.try_acquire(&shared).await {
                    Ok(Outcome::Admitted { last }) => taken = Some((store, shared, last)),
                    Ok(Outcome::Full { index, retry_after }) => {
                        return Err(Refusal::Exhausted {
                            index: shared_idx[index.min(shared_idx.len() - 1)],
                            retry_after,
                        });
                    }
                    Err(_) => fall_back(all, &shared_idx, &mut local_idx)?,
                }
            }
            // No --redis-url: as if Redis were down.
            None => fall_back(all, &shared_idx, &mut local_idx)?,
        }
        let local: Vec<Acquire> = local_idx.iter().map(|&i| all[i].clone()).collect();
        match self.counter.try_acquire(&local, now) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                if let Some((store, shared, last)) = taken {
                    store.release(&shared, last).await;
                }
                Err(match refusal {
                    Refusal::Exhausted { index, retry_after } => Refusal::Exhausted {
                        index: local_idx[index],
                        retry_after,
                    },
                    Refusal::TooManyBuckets { index } => Refusal::TooManyBuckets {
                        index: local_idx[index],
                    },
                    Refusal::StoreUnavailable { index } => Refusal::StoreUnavailable {
                        index: local_idx[index],
                    },
                })
            }
        }
    }

    /// Counts and logs a message refused because it could not be read as
    /// one unambiguous tool call (or any message at all).
    pub fn malformed(&self, detail: &str, request_id: &Value) {
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
    pub fn hides(&self, tool: &str, subject: Option<&str>) -> bool {
        self.store.current().is_some_and(|r| {
            r.set
                .hides(tool, self.catalog.meta(tool).as_deref(), subject)
        })
    }

    /// Whether any rules in force hide tools at all (else `tools/list`
    /// responses need no rewriting).
    pub fn may_hide(&self) -> bool {
        self.store
            .current()
            .is_some_and(|r| r.set.policies().iter().any(|p| p.hide_denied))
    }
}

/// Without the shared store, each shared limit either fails closed or
/// counts in memory (`onStoreError: LocalFallback`).
fn fall_back(all: &[Acquire], shared: &[usize], local: &mut Vec<usize>) -> Result<(), Refusal> {
    if let Some(&index) = shared.iter().find(|&&i| !all[i].limit.local_fallback) {
        return Err(Refusal::StoreUnavailable { index });
    }
    local.extend_from_slice(shared);
    local.sort_unstable();
    Ok(())
}

/// The JSON-RPC response that carries a denial to the client.
pub fn denial_response(id: &Value, d: &Decision) -> Value {
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
