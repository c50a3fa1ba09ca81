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
use tollgate_policy::evaluate::approval::{arguments_digest, caller_of};
use tollgate_policy::resources::{Payloads, ToolMeta};
use tollgate_policy::spec::DenyWith;
use tollgate_policy::{Decision, Effect, Reason, ToolCall, fingerprint};

use crate::approvals::store::{Call, Request};
use crate::approvals::{Approvals, Waited, answer};
use crate::audit::{AuditConfig, Entry};
use crate::decisions::Recent;
use crate::gate::redis::SharedStore;
use crate::metrics::{Metrics, UNPARSED_TOOL};
use crate::rules::catalog::Catalog;
use crate::rules::cluster::VmLabels;
use crate::rules::store::{RuleStore, Rules};

/// Decides tool calls against the rules in force.
pub(crate) struct Gate {
    store: Arc<RuleStore>,
    /// Large manifests read on the blocking pool at once, at most.
    parsers: tokio::sync::Semaphore,
    budgets: Tiered<SharedStore>,
    in_flight: Arc<MemoryInFlight>,
    cluster: Arc<VmLabels>,
    metrics: Metrics,
    catalog: Catalog,
    audit: AuditConfig,
    fail_open: bool,
    /// Calls waiting for people.
    approvals: Arc<Approvals>,
    /// The last calls not simply allowed, for `tollgate why`.
    recent: Recent,
}

/// What the gate decided about one call.
pub(crate) struct Decided {
    /// The decision.
    pub decision: Decision,
    /// What to forward as the call's arguments, when the rules read
    /// manifests in them: the manifests as judged, never the agent's text.
    pub forward: Option<Value>,
    /// For a call held for approval: the approval's facts, for `_meta`.
    pub approval: Option<Value>,
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
    /// Calls waiting for people.
    pub approvals: Arc<Approvals>,
}

/// Who is calling, for decisions and the audit log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Caller<'a> {
    /// The MCP session the upstream issued.
    pub session: Option<&'a str>,
    /// The verified subject of the caller's token.
    pub subject: Option<&'a str>,
    /// Where progress goes while the call is held for approval, when the
    /// client asked for it (`_meta.progressToken`) and can read a stream.
    pub progress: Option<&'a crate::approvals::Progress>,
    /// The request's trace span, when traces are on.
    pub span: Option<&'a crate::traces::RequestSpan>,
}

impl Gate {
    /// A gate with empty budgets and an empty tool catalogue.
    pub(crate) fn new(parts: GateParts) -> Self {
        Gate {
            store: parts.store,
            parsers: tokio::sync::Semaphore::new(2),
            budgets: Tiered::new(parts.shared),
            in_flight: parts.in_flight,
            cluster: parts.cluster,
            metrics: parts.metrics,
            catalog: Catalog::new(),
            audit: parts.audit,
            fail_open: parts.fail_open,
            approvals: parts.approvals,
            recent: Recent::default(),
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

    /// Calls waiting for people: served on the admin listener and swept
    /// as they expire.
    pub(crate) fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// Answers an admin request for the last calls not simply allowed
    /// (what `tollgate why` reads).
    pub(crate) fn recent_route<B>(
        &self,
        req: &http::Request<B>,
    ) -> http::Response<tollgate_runtime::body::Body> {
        self.recent.route(req)
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

    /// Size budgets' consumption and what is left, for metrics.
    pub(crate) fn size_usage(&self) -> Vec<tollgate_policy::budget::BudgetUsage> {
        self.budgets.size_usage(Instant::now())
    }

    /// Decides one `tools/call` (holding it, if a rule asks for an approval
    /// and gives it time to arrive). With the decision comes what to forward
    /// as the call's arguments when it is allowed and the rules read
    /// manifests in it: the manifests as judged, never the agent's text.
    pub(crate) async fn decide(
        &self,
        call: &CallParams<'_>,
        caller: Caller<'_>,
        request_id: &Value,
    ) -> Decided {
        let start = Instant::now();
        let rules = self.store.current();
        let mut forward = None;
        let mut approval = None;
        let label = self
            .catalog
            .label(call.name, rules.as_ref().map(|r| &r.set));
        let decision = match &rules {
            Some(rules) if rules.deny_when_empty && rules.set.policies().is_empty() => unselected(),
            Some(rules) if !self.catalog.loaded() && rules.set.needs_catalog(call.name) => {
                catalog_unknown()
            }
            Some(rules) => {
                let meta = self.catalog.meta(call.name);
                let payloads = self.read_payloads(rules, call, meta.clone()).await;
                let tool_call = ToolCall {
                    tool: call.name,
                    arguments: call.arguments,
                    session: caller.session,
                    meta: meta.as_deref(),
                    subject: caller.subject,
                    payloads: Some(&payloads),
                    approved: false,
                };
                let mut decision = self.judge(&rules.set, &tool_call, start).await;
                if decision.effect == Effect::ApprovalRequired {
                    // Boxed: its state (the approval store, the hold, the
                    // progress notifications) is most of a call's future,
                    // and every call's future is moved whole a few times
                    // on its way through hyper. Rare calls pay the box.
                    (decision, approval) = Box::pin(self.await_approval(
                        &rules.set,
                        &tool_call,
                        decision,
                        label,
                        caller.progress,
                    ))
                    .await;
                }
                if decision.forwards() {
                    forward = payloads.forwarded(call.arguments);
                }
                decision
            }
            None if self.fail_open => Decision::allowed_by_default(),
            None => no_rules(),
        };
        let elapsed = start.elapsed();
        if approval.is_none() {
            // A held call's time is a person's, not the engine's.
            self.metrics.decision_took(elapsed);
        }
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
        self.recent
            .record(&decision, call.name, request_id, caller.session);
        Decided {
            decision,
            forward,
            approval,
        }
    }

    /// A call a `RequireApproval` rule allows only with an approval: finds
    /// or creates the approval of its fingerprint, waits up to `holdFor`,
    /// and lets it through (spending its budgets then) if approved.
    async fn await_approval(
        &self,
        set: &PolicySet,
        call: &ToolCall<'_>,
        asked: Decision,
        tool_label: &str,
        progress: Option<&crate::approvals::Progress>,
    ) -> (Decision, Option<Value>) {
        let (Some(policy), Some(rule), Some(settings)) = (
            asked.policy.clone(),
            asked.rule.clone(),
            asked.approval.clone(),
        ) else {
            // The engine always names them; without, the call stays held.
            return (asked, None);
        };
        let fp = fingerprint(&policy, &rule, call, self.approvals.pod());
        let digest = arguments_digest(call.arguments);
        let caller = caller_of(call).describe();
        let make = || Request {
            fingerprint: fp.clone(),
            call: Call {
                policy: policy.to_string(),
                rule: rule.to_string(),
                tool: call.tool.to_owned(),
                arguments: if settings.digest_arguments {
                    Value::Null
                } else {
                    call.arguments.clone()
                },
                arguments_sha256: digest.clone(),
                caller: caller.clone(),
            },
            requester: call.subject.map(str::to_owned),
            settings: settings.clone(),
            tool_label: tool_label.to_owned(),
        };
        match self.approvals.wait(make, progress).await {
            Waited::Go(record) => {
                let approved = ToolCall {
                    approved: true,
                    ..*call
                };
                let decision = self.judge(set, &approved, Instant::now()).await;
                self.approvals.finish(&record, decision.forwards());
                (decision, None)
            }
            Waited::Pending(record) => {
                let (text, facts) =
                    answer::pending(&record, &self.approvals.how_to_decide(&record.id));
                (
                    Decision {
                        message: Some(text),
                        ..asked
                    },
                    Some(facts),
                )
            }
            Waited::Rejected(record) => {
                let (text, facts) = answer::rejected(&record);
                (
                    Decision {
                        effect: Effect::Denied,
                        message: Some(text),
                        approval: None,
                        ..asked
                    },
                    Some(facts),
                )
            }
            Waited::Full => (
                Decision {
                    effect: Effect::Denied,
                    message: Some(answer::full()),
                    approval: None,
                    ..asked
                },
                None,
            ),
            Waited::Unavailable(e) => {
                tracing::warn!(error = %e, "cannot keep an approval in the cluster; the call is refused");
                (
                    Decision {
                        effect: Effect::Denied,
                        message: Some(answer::unavailable(&e)),
                        approval: None,
                        ..asked
                    },
                    None,
                )
            }
        }
    }

    /// The call's manifests, read once. Large ones are read on the blocking
    /// pool, a few at a time, so one agent's big manifest never stalls the
    /// calls of others on the I/O thread.
    async fn read_payloads(
        &self,
        rules: &Arc<Rules>,
        call: &CallParams<'_>,
        meta: Option<Arc<ToolMeta>>,
    ) -> Payloads {
        let read = |rules: &Rules, arguments: &Value, meta: Option<&ToolMeta>| {
            let mut call = ToolCall::new(call.name, arguments);
            call.meta = meta;
            rules.set.read_payloads(&call)
        };
        if text_bytes(call.arguments) < OFF_THREAD_BYTES {
            return read(rules, call.arguments, meta.as_deref());
        }
        let Ok(_permit) = self.parsers.acquire().await else {
            return read(rules, call.arguments, meta.as_deref());
        };
        let (rules_owned, arguments, tool) =
            (rules.clone(), call.arguments.clone(), call.name.to_owned());
        let read_off_thread = tokio::task::spawn_blocking(move || {
            let mut call = ToolCall::new(&tool, &arguments);
            call.meta = meta.as_deref();
            rules_owned.set.read_payloads(&call)
        });
        match read_off_thread.await {
            Ok(payloads) => payloads,
            // The blocking pool is gone (shutting down): read here.
            Err(_) => read(rules, call.arguments, None),
        }
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

/// The JSON-RPC response that carries a denial (or a call held for
/// approval, with `approval`'s facts) to the client.
pub(crate) fn denial_response(id: &Value, d: &Decision, approval: Option<&Value>) -> Value {
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
            if let Some(facts) = approval {
                response["result"]["_meta"][answer::META_KEY] = facts.clone();
            }
            response
        }
        DenyWith::JsonRpcError => {
            let mut details = details;
            if let Some(facts) = approval {
                details["approval"] = facts.clone();
            }
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
        approval: None,
    }
}

/// Manifests this large are read on the blocking pool.
const OFF_THREAD_BYTES: usize = 64 << 10;

/// The bytes of text in `v`'s strings, a cheap bound on the work of reading
/// the manifests among them.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(map) => map.values().map(text_bytes).sum(),
        _ => 0,
    }
}

/// Until the upstream's tool list is known, calls that rules about created
/// objects or arguments could judge are refused: such a rule would see no
/// objects and no schema, and let through what it exists to stop.
fn catalog_unknown() -> Decision {
    Decision {
        effect: Effect::Denied,
        reason: Reason::NotReady,
        policy: None,
        rule: None,
        message: Some(
            "Denied by tollgate: it has not yet read the MCP server's tool list, which its rules need to judge this call. Retry in a moment.".into(),
        ),
        retry_after: Some(std::time::Duration::from_secs(1)),
        deny_with: DenyWith::ToolError,
        approval: None,
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
        approval: None,
    }
}
