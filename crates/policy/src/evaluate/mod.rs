//! Deciding one `tools/call` against every policy on a server. Pure: no
//! clock, no I/O. [`PolicySet::evaluate`] judges the call and lists the
//! budgets it would spend; [`crate::budget::decide`] spends them and gives
//! the final [`Decision`] — the one sequence production, tests and benches
//! all run.
//!
//! Rooms: [`decision`] is what comes out; [`judge`] is one policy's verdict
//! (steps 1–4 below); [`spend`] turns allowing rules into acquisitions and
//! claims, and a refused one into the denial that names its rule.
//!
//! A call is judged by its tool name and arguments, and — for policies with
//! `resources` rules — by the Kubernetes objects it would create or change
//! (see [`crate::resources`]). Order inside one policy, first match wins:
//! 1. a `Deny` tool rule naming the tool whose conditions all hold → denied
//!    (`rule`);
//! 2. a `Deny` resource rule matching an object of the call → denied (`rule`);
//! 3. each object matched by `Allow` resource rules must satisfy one of them
//!    (arguments, namespaces, clone conditions) → else denied (`arguments`);
//! 4. the first `Allow` tool rule naming the tool whose conditions hold
//!    allows the call; failing that, a call all of whose objects are allowed
//!    by resource rules is allowed; failing that, if `Allow` tool rules name
//!    the tool → denied (`arguments`), else `defaultAction` (`default`);
//! 5. the allowing rules' in-flight caps (`in_flight`) and rate limits
//!    (`rate_limit`), counted per object for resource rules;
//! 6. allowed.
//!
//! Across policies deny wins: every `Enforce` policy must allow the call.
//! Steps 1–4 run for all policies before any budget is spent, so a call
//! another policy denies never uses up a rate limit. An `Audit` policy's
//! denial is recorded (`audited`) and the call goes on.

pub mod approval;
mod decision;
mod judge;
mod measure;
mod spend;

use std::sync::Arc;

use crate::budget::inflight::{Claim, Full};
use crate::budget::ratelimit::{Acquire, Refusal};
use crate::compile::resource_rules::ClusterView;
use crate::compile::selector::Selected;
use crate::compile::{CompiledPolicy, CompiledRule};
use crate::resources::{Payloads, ToolMeta, manifest_pointers};
use crate::spec::{Action, DenyWith, Mode};

pub use decision::{Decision, Effect, Reason, ToolCall};
use judge::{Verdict, denial, judge, may_create_allowed};
use spend::Spend;

/// The policies that govern one server, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Arc<CompiledPolicy>>,
    version: Arc<str>,
}

/// A call judged by every policy, waiting for its budgets.
#[derive(Debug)]
pub struct Evaluation {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Decided without budgets.
    Done(Decision),
    /// Allowed by every `Enforce` policy if the budgets have room.
    Pending(Box<Pending>),
}

/// A call allowed by every `Enforce` policy if the budgets have room.
#[derive(Debug)]
struct Pending {
    allowed: Decision,
    enforce: Spend,
    /// An `Audit` policy's denial before budgets, if any.
    audit_denial: Option<Decision>,
    audit: Spend,
}

impl PolicySet {
    /// A set of compiled policies; `version` names this exact content.
    pub fn new(mut policies: Vec<Arc<CompiledPolicy>>, version: impl Into<Arc<str>>) -> Self {
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        PolicySet {
            policies,
            version: version.into(),
        }
    }

    /// The same policies under another version name (a controller snapshot
    /// names its own versions).
    pub fn with_version(mut self, version: impl Into<Arc<str>>) -> Self {
        self.version = version.into();
        self
    }

    /// The policies, by name.
    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// A digest of the content, for metrics and acks.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `tool` should vanish from the `tools/list` of the caller
    /// `subject`: some `Enforce` policy with `hideDenied` denies it to that
    /// caller whatever the arguments — and no resource rule could allow
    /// anything the tool creates (`meta` is what the upstream says the tool
    /// does).
    pub fn hides(&self, tool: &str, meta: Option<&ToolMeta>, subject: Option<&str>) -> bool {
        let mut matched = Vec::new();
        self.policies.iter().any(|p| {
            if p.mode != Mode::Enforce || !p.hide_denied {
                return false;
            }
            let behaviour = meta.map(ToolMeta::behaviour);
            p.matcher.rules_for(tool, behaviour, &mut matched);
            let mut any_allow = false;
            // An Allow rule that cannot tell whether it selects the tool
            // allows nothing (see `judge`).
            let for_caller = |r: &CompiledRule| {
                r.subjects.as_ref().is_none_or(|s| s.check(subject).is_ok())
                    && (r.action == Action::Deny
                        || r.tool_selector.as_ref().is_none_or(|t| {
                            !matches!(t.test(tool, behaviour), Selected::Unknown(_))
                        }))
            };
            for r in matched.iter().map(|&i| &p.rules[i as usize]) {
                match r.action {
                    Action::Deny
                        if r.conditions.is_empty() && r.resources.is_empty() && for_caller(r) =>
                    {
                        return true;
                    }
                    Action::Deny => {}
                    Action::Allow if r.resources.is_empty() && for_caller(r) => any_allow = true,
                    Action::Allow => {}
                }
            }
            !any_allow
                && p.default_action == Action::Deny
                && !may_create_allowed(p, tool, meta, &matched)
        })
    }

    /// Whether any policy judges the objects `tool` creates: then its
    /// manifests must be read, its arguments may be checked against the
    /// upstream's schema, and the upstream's tool list must be known.
    pub(crate) fn judges_objects_of(&self, tool: &str) -> bool {
        self.policies.iter().any(|p| p.judges_objects_of(tool))
    }

    /// Whether deciding a call of `tool` needs the upstream's tool list: a
    /// resource rule judges what it creates, arguments are checked against
    /// its schema, or rules select tools by what the upstream says they do.
    /// Until the list is known such calls are refused.
    pub fn needs_catalog(&self, tool: &str) -> bool {
        self.policies.iter().any(|p| {
            p.strict_arguments(false) || p.selects_by_behaviour() || p.judges_objects_of(tool)
        })
    }

    /// Whether any call could need the upstream's tool list (see
    /// [`needs_catalog`](Self::needs_catalog)): a readiness question.
    pub fn needs_any_catalog(&self) -> bool {
        self.policies.iter().any(|p| {
            p.strict_arguments(false) || p.selects_by_behaviour() || !p.resource_rules.is_empty()
        })
    }

    /// Reads the manifests of `call` that resource rules judge, once; the
    /// proxy forwards [`Payloads::forwarded`] so the upstream applies exactly
    /// what was judged.
    pub fn read_payloads(&self, call: &ToolCall<'_>) -> Payloads {
        if !self.judges_objects_of(call.tool) {
            return Payloads::none();
        }
        let pointers = manifest_pointers(
            call.tool,
            call.meta,
            self.policies.iter().flat_map(|p| &p.mappings),
        );
        Payloads::read(call.arguments, pointers.iter().map(String::as_str))
    }

    /// Judges `call` against every policy; budgets are spent by
    /// [`Evaluation::finish`].
    pub fn evaluate(&self, call: &ToolCall<'_>, view: &dyn ClusterView) -> Evaluation {
        let own;
        let payloads = match call.payloads {
            Some(p) => p,
            None => {
                own = self.read_payloads(call);
                &own
            }
        };
        let mut matched = Vec::new();
        let mut allowed: Option<Decision> = None;
        let mut enforce = Spend::default();
        let mut audit = Spend::default();
        let mut audit_denial: Option<Decision> = None;
        // The first Enforce policy's rule that asks for an approval.
        let mut needs_approval: Option<Decision> = None;
        for p in &self.policies {
            match (p.mode, judge(p, call, payloads, view, &mut matched)) {
                (
                    Mode::Enforce,
                    Verdict::Deny {
                        rule,
                        reason,
                        detail,
                    },
                ) => {
                    return Evaluation {
                        state: State::Done(denial(p, rule, reason, &detail, Effect::Denied)),
                    };
                }
                (
                    Mode::Audit,
                    Verdict::Deny {
                        rule,
                        reason,
                        detail,
                    },
                ) => {
                    if audit_denial.is_none() {
                        audit_denial = Some(denial(p, rule, reason, &detail, Effect::Audited));
                    }
                }
                (mode, Verdict::Allow { rule, objects }) => {
                    let deciding = rule.or(objects.first().map(|(_, r)| *r));
                    if mode == Mode::Enforce && allowed.is_none() {
                        allowed = Some(Decision {
                            effect: Effect::Allowed,
                            reason: if deciding.is_some() {
                                Reason::Rule
                            } else {
                                Reason::Default
                            },
                            policy: Some(p.name.clone()),
                            rule: deciding.map(|r| r.name.clone()),
                            message: None,
                            retry_after: None,
                            deny_with: DenyWith::default(),
                            approval: None,
                        });
                    }
                    if mode == Mode::Enforce && !call.approved && needs_approval.is_none() {
                        needs_approval = rule
                            .filter(|r| r.approval.is_some())
                            .or_else(|| {
                                objects
                                    .iter()
                                    .map(|(_, r)| *r)
                                    .find(|r| r.approval.is_some())
                            })
                            .map(|r| approval::required(p, r));
                    }
                    let budgets = if mode == Mode::Enforce {
                        &mut enforce
                    } else {
                        &mut audit
                    };
                    if let Some(rule) = rule {
                        budgets.add_call(p, rule, call);
                    }
                    budgets.add_objects(p, &objects, call, view);
                }
            }
        }
        // Approval comes before budgets: a call waiting for a person spends
        // nothing; it spends its budgets when it is let through.
        if let Some(d) = needs_approval {
            return Evaluation {
                state: State::Done(d),
            };
        }
        // No Enforce policy at all: nothing restricts the call.
        let allowed = allowed.unwrap_or_else(Decision::allowed_by_default);
        Evaluation {
            state: State::Pending(Box::new(Pending {
                allowed,
                enforce,
                audit_denial,
                audit,
            })),
        }
    }
}

impl Evaluation {
    /// What is left to decide once budgets answer; `None` when decided.
    fn pending(&self) -> Option<&Pending> {
        match &self.state {
            State::Pending(p) => Some(p),
            State::Done(_) => None,
        }
    }

    /// The admissions the call needs from `Enforce` policies' limits.
    pub fn acquisitions(&self) -> &[Acquire] {
        self.pending().map_or(&[], |p| &p.enforce.acquire)
    }

    /// The admissions `Audit` policies' limits would need. Spend them only
    /// once the call is known to go through.
    pub(crate) fn audit_acquisitions(&self) -> &[Acquire] {
        self.pending().map_or(&[], |p| &p.audit.acquire)
    }

    /// The in-flight claims of `Enforce` policies.
    pub fn claims(&self) -> &[Claim] {
        self.pending().map_or(&[], |p| &p.enforce.claims)
    }

    /// The in-flight claims of `Audit` policies: checked, never taken
    /// (an audited call blocks nothing, so it holds no slot).
    pub(crate) fn audit_claims(&self) -> &[Claim] {
        self.pending().map_or(&[], |p| &p.audit.claims)
    }

    /// The denial for a full in-flight cap.
    pub(crate) fn in_flight_refusal(self, full: &Full) -> Decision {
        match self.state {
            State::Done(d) => d,
            State::Pending(p) => p.enforce.in_flight_refusal(full, Effect::Denied),
        }
    }

    /// The final decision, given the outcome of
    /// [`acquisitions`](Self::acquisitions) and, if those succeeded, of
    /// checking [`audit_claims`](Self::audit_claims) and of
    /// [`audit_acquisitions`](Self::audit_acquisitions).
    pub fn finish(
        self,
        enforce: Result<(), Refusal>,
        audit_in_flight: Option<Result<(), Full>>,
        audit: Option<Result<(), Refusal>>,
    ) -> Decision {
        match self.state {
            State::Done(d) => d,
            State::Pending(p) => {
                if let Err(refusal) = enforce {
                    return p.enforce.refusal(&refusal, Effect::Denied);
                }
                if let Some(d) = p.audit_denial {
                    return d;
                }
                if let Some(Err(full)) = audit_in_flight {
                    return p.audit.in_flight_refusal(&full, Effect::Audited);
                }
                if let Some(Err(refusal)) = audit {
                    return p.audit.refusal(&refusal, Effect::Audited);
                }
                p.allowed
            }
        }
    }

    /// Whether no budget of any policy is involved: no claims and no
    /// acquisitions, `Enforce` or `Audit`.
    pub(crate) fn spends_nothing(&self) -> bool {
        self.pending().is_none_or(|p| {
            p.enforce.acquire.is_empty()
                && p.enforce.claims.is_empty()
                && p.audit.acquire.is_empty()
                && p.audit.claims.is_empty()
        })
    }

    /// Whether the call is already decided without budgets.
    pub fn decided(&self) -> Option<&Decision> {
        match &self.state {
            State::Done(d) => Some(d),
            State::Pending(_) => None,
        }
    }
}
