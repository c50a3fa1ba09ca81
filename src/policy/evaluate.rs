//! Deciding one `tools/call` against every policy on a server. Pure: no
//! clock, no I/O; rate-limit budgets and in-flight counts are spent through
//! stores the caller passes in.
//!
//! A call is judged by its tool name and arguments, and — for policies with
//! `resources` rules — by the Kubernetes objects it would create or change
//! (see [`super::resources`]). Order inside one policy, first match wins:
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::compile::{CompiledPolicy, CompiledRule};
use super::duration::Human;
use super::inflight::{Claim, Full, InFlight};
use super::ratelimit::{Acquire, BucketKey, Counter, Refusal};
use super::resource_rules::ClusterView;
use super::resources::{Op, ToolMeta, extract};
use super::spec::{Action, DenyWith, InFlightScope, Mode};

/// A tool call as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct ToolCall<'a> {
    /// `params.name`.
    pub tool: &'a str,
    /// `params.arguments`, or `Value::Null` when absent.
    pub arguments: &'a Value,
    /// The MCP session the upstream issued, if the call is in one.
    pub session: Option<&'a str>,
    /// What the upstream said about this tool in its own `tools/list`.
    pub meta: Option<&'a ToolMeta>,
    /// The caller, from a verified token (see `subjects` on rules).
    pub subject: Option<&'a str>,
}

impl<'a> ToolCall<'a> {
    /// A call with no session and no upstream description.
    pub fn new(tool: &'a str, arguments: &'a Value) -> Self {
        ToolCall {
            tool,
            arguments,
            session: None,
            meta: None,
            subject: None,
        }
    }
}

/// What happened to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Forwarded.
    Allowed,
    /// Refused.
    Denied,
    /// An `Audit` policy would have refused it; forwarded.
    Audited,
}

impl Effect {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allowed => "allowed",
            Effect::Denied => "denied",
            Effect::Audited => "audited",
        }
    }
}

/// Why: which step of the order decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A rule decided by tool name or object (and conditions, for `Deny` rules).
    Rule,
    /// An `Allow` rule's conditions on arguments or objects failed.
    Arguments,
    /// A rate limit was full.
    RateLimit,
    /// An in-flight cap was reached.
    InFlight,
    /// `defaultAction` decided.
    Default,
    /// The message could not be read unambiguously.
    Malformed,
}

impl Reason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Arguments => "arguments",
            Reason::RateLimit => "rate_limit",
            Reason::InFlight => "in_flight",
            Reason::Default => "default",
            Reason::Malformed => "malformed",
        }
    }
}

/// The verdict on one call, with what metrics, logs and the client need.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Allowed, denied or audited.
    pub effect: Effect,
    /// Which step decided.
    pub reason: Reason,
    /// The deciding policy; `None` only when there are no policies or the
    /// message was malformed.
    pub policy: Option<Arc<str>>,
    /// The deciding rule; `None` for `defaultAction`.
    pub rule: Option<Arc<str>>,
    /// For denied and audited calls: what a model should read.
    pub message: Option<String>,
    /// For rate-limit denials: when a retry can succeed.
    pub retry_after: Option<Duration>,
    /// How a denial is delivered.
    pub deny_with: DenyWith,
}

impl Decision {
    /// Whether the call goes to the upstream.
    pub fn forwards(&self) -> bool {
        self.effect != Effect::Denied
    }

    /// An allowance no policy or rule made: nothing restricts the call.
    pub fn allowed_by_default() -> Decision {
        Decision {
            effect: Effect::Allowed,
            reason: Reason::Default,
            policy: None,
            rule: None,
            message: None,
            retry_after: None,
            deny_with: DenyWith::default(),
        }
    }

    /// A denial of a message the proxy could not read.
    pub fn malformed(detail: impl Into<String>) -> Decision {
        Decision {
            effect: Effect::Denied,
            reason: Reason::Malformed,
            policy: None,
            rule: None,
            message: Some(detail.into()),
            retry_after: None,
            deny_with: DenyWith::JsonRpcError,
        }
    }
}

/// The stores a decision spends from and reads.
pub struct Stores<'a> {
    /// Rate-limit budgets.
    pub counter: &'a dyn Counter,
    /// In-flight counts.
    pub in_flight: &'a dyn InFlight,
    /// What the cluster knows (VM labels).
    pub view: &'a dyn ClusterView,
}

/// The policies that govern one server, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Arc<CompiledPolicy>>,
    version: Arc<str>,
}

/// One policy's own verdict, before budgets.
enum Verdict<'p> {
    Allow {
        rule: Option<&'p CompiledRule>,
        /// Objects and the resource rule allowing each.
        objects: Vec<(Op, &'p CompiledRule)>,
    },
    Deny {
        rule: Option<&'p CompiledRule>,
        reason: Reason,
        detail: String,
    },
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
    enforce: Budgets,
    /// An `Audit` policy's denial before budgets, if any.
    audit_denial: Option<Decision>,
    audit: Budgets,
}

/// Who asked for a budget, to say so when it is full.
#[derive(Debug)]
struct Owner {
    policy: Arc<str>,
    rule: Arc<str>,
    message: Option<String>,
    deny_with: DenyWith,
    /// `"30 per 1m"`, or `"5 VirtualMachineClones in flight per namespace"`.
    describe: String,
}

/// Acquisitions and in-flight claims, each with its owner.
#[derive(Debug, Default)]
struct Budgets {
    acquire: Vec<Acquire>,
    acquire_owner: Vec<Arc<Owner>>,
    claims: Vec<Claim>,
    claim_owner: Vec<Arc<Owner>>,
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
            p.matcher.rules_for(tool, &mut matched);
            let mut any_allow = false;
            let for_caller =
                |r: &CompiledRule| r.subjects.as_ref().is_none_or(|s| s.check(subject).is_ok());
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

    /// Judges `call` against every policy; budgets are spent by
    /// [`Evaluation::finish`].
    pub fn evaluate(&self, call: &ToolCall<'_>, view: &dyn ClusterView) -> Evaluation {
        let mut matched = Vec::new();
        let mut allowed: Option<Decision> = None;
        let mut enforce = Budgets::default();
        let mut audit = Budgets::default();
        let mut audit_denial: Option<Decision> = None;
        for p in &self.policies {
            match (p.mode, judge(p, call, view, &mut matched)) {
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
                        });
                    }
                    let budgets = if mode == Mode::Enforce {
                        &mut enforce
                    } else {
                        &mut audit
                    };
                    if let Some(rule) = rule {
                        budgets.add_call(p, rule, call);
                    }
                    budgets.add_objects(p, &objects, call);
                }
            }
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

    /// [`evaluate`](Self::evaluate), then the stores, then
    /// [`Evaluation::finish`]: in-flight caps first, then rate limits; an
    /// in-flight admission is taken back if a rate limit then refuses.
    pub fn decide(
        &self,
        call: &ToolCall<'_>,
        stores: &Stores<'_>,
        now: Instant,
        wall: SystemTime,
    ) -> Decision {
        let eval = self.evaluate(call, stores.view);
        let ticket = match stores.in_flight.try_claim(eval.claims(), wall) {
            Ok(t) => t,
            Err(full) => return eval.in_flight_refusal(&full),
        };
        let enforce = stores.counter.try_acquire(eval.acquisitions(), now);
        if enforce.is_err() {
            stores.in_flight.release(ticket);
        }
        let audit_in_flight = enforce
            .is_ok()
            .then(|| stores.in_flight.check(eval.audit_claims(), wall));
        let audit = enforce
            .is_ok()
            .then(|| stores.counter.try_acquire(eval.audit_acquisitions(), now));
        eval.finish(enforce, audit_in_flight, audit)
    }
}

/// Whether a resource `Allow` rule of `p` could allow something `tool`
/// creates, going by what the upstream and the policy's mappings say the
/// tool does. `matched` holds the rules naming the tool.
fn may_create_allowed(
    p: &CompiledPolicy,
    tool: &str,
    meta: Option<&ToolMeta>,
    matched: &[u32],
) -> bool {
    let applicable: Vec<&CompiledRule> = p
        .resource_rules
        .iter()
        .filter(|&&i| {
            let r = &p.rules[i as usize];
            r.action == Action::Allow && (!r.has_tools || matched.contains(&i))
        })
        .map(|&i| &p.rules[i as usize])
        .collect();
    if applicable.is_empty() {
        return false;
    }
    if meta.is_some_and(ToolMeta::carries_manifests)
        || p.mappings
            .iter()
            .any(|m| m.tools.is_match(tool) && m.manifest.is_some())
    {
        return true;
    }
    let mut potential = meta.map(|m| m.potential_ops()).unwrap_or_default();
    potential.extend(
        p.mappings
            .iter()
            .filter(|m| m.tools.is_match(tool))
            .map(|m| Op {
                group: m.group.clone(),
                kind: m.kind.clone(),
                verbs: vec![m.verb.clone()],
                ..Default::default()
            }),
    );
    potential.iter().any(|op| {
        applicable
            .iter()
            .any(|r| r.resources.iter().any(|s| s.matches(op)))
    })
}

impl Budgets {
    /// The rate limits of the rule that allowed the call by its tool name.
    fn add_call(&mut self, p: &CompiledPolicy, rule: &CompiledRule, call: &ToolCall<'_>) {
        for l in &rule.limits {
            let parts = key_parts(l, call, None);
            self.acquire.push(Acquire {
                limit: l.limit.clone(),
                bucket: BucketKey::of(parts.iter().map(Vec::as_slice)),
                cost: 1,
            });
            self.acquire_owner.push(owner(
                p,
                rule,
                format!("{} per {}", l.limit.requests, Human(l.limit.window)),
            ));
        }
    }

    /// The rate limits and in-flight caps of the resource rules that
    /// allowed the call's objects, one unit per object.
    fn add_objects(
        &mut self,
        p: &CompiledPolicy,
        objects: &[(Op, &CompiledRule)],
        call: &ToolCall<'_>,
    ) {
        for (op, rule) in objects {
            let what = rule
                .resources
                .first()
                .map(|s| s.describe())
                .unwrap_or_else(|| "object".into());
            for l in &rule.limits {
                let bucket = BucketKey::of(key_parts(l, call, Some(op)).iter().map(Vec::as_slice));
                match self
                    .acquire
                    .iter()
                    .position(|a| a.limit.id == l.limit.id && a.bucket == bucket)
                {
                    Some(i) => self.acquire[i].cost += 1,
                    None => {
                        self.acquire.push(Acquire {
                            limit: l.limit.clone(),
                            bucket,
                            cost: 1,
                        });
                        self.acquire_owner.push(owner(
                            p,
                            rule,
                            format!(
                                "{} {what}s per {}{}",
                                l.limit.requests,
                                Human(l.limit.window),
                                key_scope(l)
                            ),
                        ));
                    }
                }
            }
            for cap in &rule.in_flight {
                // Checked in judge: every object of an allowing rule has a key.
                let Ok(key) = cap.key(op) else { continue };
                match self
                    .claims
                    .iter()
                    .position(|c| c.scope == cap.scope && c.key == key && c.max == cap.max)
                {
                    Some(i) => self.claims[i].cost += 1,
                    None => {
                        let per = match cap.scope {
                            InFlightScope::Namespace => format!(" per namespace (in {key:?})"),
                            InFlightScope::Source => format!(" per source VM (of {key:?})"),
                            InFlightScope::Cluster => String::new(),
                        };
                        self.claims.push(Claim {
                            scope: cap.scope,
                            key,
                            max: cap.max,
                            cost: 1,
                        });
                        self.claim_owner.push(owner(
                            p,
                            rule,
                            format!("{} {what}s in flight{per}", cap.max),
                        ));
                    }
                }
            }
        }
    }

    /// The decision for a full in-flight cap of these budgets.
    fn in_flight_refusal(&self, full: &Full, effect: Effect) -> Decision {
        let o = &self.claim_owner[full.index];
        let detail = format!(
            "the cap of {} is reached ({} in flight); retry when one finishes",
            o.describe, full.current
        );
        Decision {
            effect,
            reason: Reason::InFlight,
            policy: Some(o.policy.clone()),
            rule: Some(o.rule.clone()),
            message: Some(render(
                &o.policy,
                Some(&o.rule),
                &detail,
                o.message.as_deref(),
            )),
            retry_after: None,
            deny_with: o.deny_with,
        }
    }

    fn refusal(&self, refusal: &Refusal, effect: Effect) -> Decision {
        let (index, retry_after, detail) = match refusal {
            Refusal::Exhausted { index, retry_after } => (
                *index,
                Some(*retry_after),
                format!(
                    "rate limit of {} reached; retry after {}",
                    self.acquire_owner[*index].describe,
                    Human(*retry_after)
                ),
            ),
            Refusal::StoreUnavailable { index } => (
                *index,
                None,
                format!(
                    "the shared store of the limit of {} cannot be reached, and the limit fails closed (onStoreError: Deny); retry shortly",
                    self.acquire_owner[*index].describe
                ),
            ),
            Refusal::TooManyBuckets { index } => (
                *index,
                None,
                "too many distinct rate-limit keys are in use; retry later".to_owned(),
            ),
        };
        let o = &self.acquire_owner[index];
        Decision {
            effect,
            reason: Reason::RateLimit,
            policy: Some(o.policy.clone()),
            rule: Some(o.rule.clone()),
            message: Some(render(
                &o.policy,
                Some(&o.rule),
                &detail,
                o.message.as_deref(),
            )),
            retry_after,
            deny_with: o.deny_with,
        }
    }
}

fn owner(p: &CompiledPolicy, rule: &CompiledRule, describe: String) -> Arc<Owner> {
    Arc::new(Owner {
        policy: p.name.clone(),
        rule: rule.name.clone(),
        message: rule.message.clone(),
        deny_with: rule.deny_with,
        describe,
    })
}

fn key_scope(l: &super::compile::CompiledLimit) -> &'static str {
    match (l.key_namespace, l.key_source) {
        (true, true) => " per namespace and source VM",
        (true, false) => " per namespace",
        (false, true) => " per source VM",
        (false, false) => "",
    }
}

/// The parts selecting a limit's bucket, each distinct from every other
/// kind of part.
fn key_parts(
    l: &super::compile::CompiledLimit,
    call: &ToolCall<'_>,
    op: Option<&Op>,
) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(l.key_arguments.len() + 3);
    for pointer in &l.key_arguments {
        parts.push(match call.arguments.pointer(pointer) {
            Some(v) => canonical(v),
            // Distinct from every JSON encoding.
            None => b"\0missing".to_vec(),
        });
    }
    if l.key_session {
        parts.push(match call.session {
            Some(s) => s.as_bytes().to_vec(),
            None => b"\0no-session".to_vec(),
        });
    }
    if l.key_namespace {
        parts.push(
            op.and_then(|o| o.namespace.as_deref())
                .map_or(b"\0no-namespace".to_vec(), |n| n.as_bytes().to_vec()),
        );
    }
    if l.key_source {
        let source = op
            .and_then(|o| o.clone.as_ref())
            .and_then(|c| c.source.as_deref());
        parts.push(source.map_or(b"\0no-source".to_vec(), |s| s.as_bytes().to_vec()));
    }
    if l.key_subject {
        parts.push(
            call.subject
                .map_or(b"\0anonymous".to_vec(), |s| s.as_bytes().to_vec()),
        );
    }
    parts
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
    pub fn audit_acquisitions(&self) -> &[Acquire] {
        self.pending().map_or(&[], |p| &p.audit.acquire)
    }

    /// The in-flight claims of `Enforce` policies.
    pub fn claims(&self) -> &[Claim] {
        self.pending().map_or(&[], |p| &p.enforce.claims)
    }

    /// The in-flight claims of `Audit` policies: checked, never taken
    /// (an audited call blocks nothing, so it holds no slot).
    pub fn audit_claims(&self) -> &[Claim] {
        self.pending().map_or(&[], |p| &p.audit.claims)
    }

    /// The denial for a full in-flight cap.
    pub fn in_flight_refusal(self, full: &Full) -> Decision {
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

    /// Whether the call is already decided without budgets.
    pub fn decided(&self) -> Option<&Decision> {
        match &self.state {
            State::Done(d) => Some(d),
            State::Pending(_) => None,
        }
    }
}

/// One policy's verdict on a call, steps 1–4 of the order.
fn judge<'p>(
    p: &'p CompiledPolicy,
    call: &ToolCall<'_>,
    view: &dyn ClusterView,
    matched: &mut Vec<u32>,
) -> Verdict<'p> {
    p.matcher.rules_for(call.tool, matched);
    let tool_rules = || {
        matched
            .iter()
            .map(|&i| &p.rules[i as usize])
            .filter(|r| r.resources.is_empty())
    };
    for r in tool_rules().filter(|r| r.action == Action::Deny) {
        if rule_holds(r, call).is_ok() {
            return Verdict::Deny {
                rule: Some(r),
                reason: Reason::Rule,
                detail: format!("tool {:?} is denied", call.tool),
            };
        }
    }

    // The objects, if any resource rule could care.
    let applicable: Vec<&CompiledRule> = p
        .resource_rules
        .iter()
        .filter(|&&i| !p.rules[i as usize].has_tools || matched.contains(&i))
        .map(|&i| &p.rules[i as usize])
        .collect();
    let ops = if applicable.is_empty() {
        Vec::new()
    } else {
        match extract(
            call.tool,
            call.arguments,
            call.meta,
            &p.mappings,
            &p.default_namespace,
        ) {
            Ok(ops) => ops,
            Err(e) => {
                return Verdict::Deny {
                    rule: None,
                    reason: Reason::Arguments,
                    detail: format!("cannot tell which Kubernetes objects this call creates: {e}"),
                };
            }
        }
    };
    for op in &ops {
        for r in applicable.iter().filter(|r| r.action == Action::Deny) {
            if r.resources.iter().any(|s| s.matches(op))
                && object_conditions(r, op, call, view).is_ok()
            {
                return Verdict::Deny {
                    rule: Some(r),
                    reason: Reason::Rule,
                    detail: format!("{} is denied", describe(op)),
                };
            }
        }
    }
    let mut objects = Vec::new();
    let mut uncovered = 0;
    for op in ops {
        let mut first: Option<(&CompiledRule, String)> = None;
        let mut allowing = None;
        for r in applicable
            .iter()
            .filter(|r| r.action == Action::Allow && r.resources.iter().any(|s| s.matches(&op)))
        {
            match object_conditions(r, &op, call, view) {
                Ok(()) => {
                    allowing = Some(*r);
                    break;
                }
                Err(why) => {
                    first.get_or_insert((r, why));
                }
            }
        }
        match (allowing, first) {
            (Some(r), _) => objects.push((op, r)),
            (None, Some((r, why))) => {
                return Verdict::Deny {
                    rule: Some(r),
                    reason: Reason::Arguments,
                    detail: format!("{}: {why}", describe(&op)),
                };
            }
            (None, None) => uncovered += 1,
        }
    }

    let mut first_allow = None;
    for r in tool_rules().filter(|r| r.action == Action::Allow) {
        first_allow.get_or_insert(r);
        if rule_holds(r, call).is_ok() {
            return Verdict::Allow {
                rule: Some(r),
                objects,
            };
        }
    }
    if !objects.is_empty() && uncovered == 0 {
        return Verdict::Allow {
            rule: None,
            objects,
        };
    }
    match first_allow {
        Some(r) => Verdict::Deny {
            rule: Some(r),
            reason: Reason::Arguments,
            detail: rule_holds(r, call)
                .err()
                .unwrap_or_else(|| "arguments not allowed".to_owned()),
        },
        None if p.default_action == Action::Allow => Verdict::Allow {
            rule: None,
            objects,
        },
        None => Verdict::Deny {
            rule: None,
            reason: Reason::Default,
            detail: format!(
                "no rule allows tool {:?} and the default is Deny",
                call.tool
            ),
        },
    }
}

/// Whether a rule's caller and argument conditions hold; `Err` says why not.
fn rule_holds(r: &CompiledRule, call: &ToolCall<'_>) -> Result<(), String> {
    if let Some(subjects) = &r.subjects {
        subjects.check(call.subject)?;
    }
    match r.conditions.iter().find(|c| !c.holds(call.arguments)) {
        Some(c) => Err(c.explain(call.arguments)),
        None => Ok(()),
    }
}

/// Whether `op` meets a resource rule's conditions; `Err` says why not.
fn object_conditions(
    r: &CompiledRule,
    op: &Op,
    call: &ToolCall<'_>,
    view: &dyn ClusterView,
) -> Result<(), String> {
    rule_holds(r, call)?;
    if let Some(ns) = &r.namespaces {
        ns.check(op.namespace.as_deref())?;
    }
    if op.is_clone()
        && let Some(clone) = &r.clone
    {
        clone.check(op, view)?;
    }
    for cap in &r.in_flight {
        cap.key(op)
            .map_err(|why| format!("{why}, so its in-flight cap cannot be counted"))?;
    }
    Ok(())
}

/// `VirtualMachineClone in namespace "vms" (from golden-1 to copy)`.
fn describe(op: &Op) -> String {
    let what = op
        .kind
        .clone()
        .or_else(|| op.resource.clone())
        .unwrap_or_else(|| "object".into());
    let verb = op.verbs.first().map(String::as_str).unwrap_or("touch");
    let mut text = format!("{verb} {what}");
    match &op.namespace {
        Some(ns) => text.push_str(&format!(" in namespace {ns:?}")),
        None => text.push_str(" (namespace unknown)"),
    }
    if let Some(c) = &op.clone {
        text.push_str(&format!(
            " from {:?} to {:?}",
            c.source.as_deref().unwrap_or("?"),
            c.target.as_deref().unwrap_or("?")
        ));
    }
    text
}

fn denial(
    p: &CompiledPolicy,
    rule: Option<&CompiledRule>,
    reason: Reason,
    detail: &str,
    effect: Effect,
) -> Decision {
    Decision {
        effect,
        reason,
        policy: Some(p.name.clone()),
        rule: rule.map(|r| r.name.clone()),
        message: Some(render(
            &p.name,
            rule.map(|r| &*r.name),
            detail,
            rule.and_then(|r| r.message.as_deref()),
        )),
        retry_after: None,
        deny_with: rule.map_or(p.deny_with, |r| r.deny_with),
    }
}

/// The text a model reads: who decided and why, then the operator's words.
fn render(policy: &str, rule: Option<&str>, detail: &str, message: Option<&str>) -> String {
    let mut text = match rule {
        Some(rule) => format!("Denied by tollgate policy {policy:?}, rule {rule:?}: {detail}."),
        None => format!("Denied by tollgate policy {policy:?}: {detail}."),
    };
    if let Some(m) = message {
        text.push(' ');
        text.push_str(m);
    }
    text
}

/// A canonical byte encoding of a key value: object keys sorted, integral
/// numbers written as integers, so `5` and `5.0` share a budget.
fn canonical(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    out.extend_from_slice((f as i64).to_string().as_bytes())
                }
                _ => out.extend_from_slice(n.to_string().as_bytes()),
            },
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push(b'{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}
