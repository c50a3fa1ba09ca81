//! Deciding one `tools/call` against every policy on a server. Pure: no
//! clock, no I/O; rate-limit budgets are spent through a [`Counter`] the
//! caller passes in.
//!
//! Order inside one policy, first match wins:
//! 1. a `Deny` rule naming the tool whose conditions all hold → denied (`rule`);
//! 2. no `Allow` rule names the tool → `defaultAction` (`default`);
//! 3. the first `Allow` rule naming the tool whose conditions hold is the
//!    allowing rule; if none holds → denied (`arguments`), explained by the
//!    first `Allow` rule's first failing condition;
//! 4. the allowing rule's rate limits → denied (`rate_limit`) if any is full;
//! 5. allowed.
//!
//! Across policies deny wins: every `Enforce` policy must allow the call.
//! Steps 1–3 run for all policies before any budget is spent, so a call
//! another policy denies never uses up a rate limit. An `Audit` policy's
//! denial is recorded (`audited`) and the call goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::compile::{CompiledPolicy, CompiledRule};
use super::duration::Human;
use super::ratelimit::{Acquire, BucketKey, Counter, Refusal};
use super::spec::{Action, DenyWith, Mode};

/// A tool call as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct ToolCall<'a> {
    /// `params.name`.
    pub tool: &'a str,
    /// `params.arguments`, or `Value::Null` when absent.
    pub arguments: &'a Value,
    /// The MCP session the upstream issued, if the call is in one.
    pub session: Option<&'a str>,
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
    /// A rule decided by tool name (and conditions, for `Deny` rules).
    Rule,
    /// An `Allow` rule's argument conditions failed.
    Arguments,
    /// A rate limit was full.
    RateLimit,
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

/// The policies that govern one server, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Arc<CompiledPolicy>>,
    version: Arc<str>,
}

/// One policy's own verdict, before budgets.
enum Verdict<'p> {
    Allow(Option<&'p CompiledRule>),
    Deny {
        rule: Option<&'p CompiledRule>,
        reason: Reason,
        detail: String,
    },
}

/// A call judged by every policy, waiting for its rate-limit budgets.
#[derive(Debug)]
pub struct Evaluation {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Decided without budgets.
    Done(Decision),
    /// Allowed by every `Enforce` policy if the budgets have room.
    Pending {
        allowed: Decision,
        enforce: Budgets,
        /// An `Audit` policy's denial before budgets, if any.
        audit_denial: Option<Decision>,
        audit: Budgets,
    },
}

/// Acquisitions and, for each, who asked for it.
#[derive(Debug, Default)]
struct Budgets {
    acquire: Vec<Acquire>,
    /// Policy, rule and limit index behind each acquisition.
    owner: Vec<(Arc<str>, Arc<CompiledRuleRef>, usize)>,
}

/// What a rate-limit denial needs to know about its rule.
#[derive(Debug)]
struct CompiledRuleRef {
    name: Arc<str>,
    message: Option<String>,
    deny_with: DenyWith,
    /// `"30 per 1m"` for each limit of the rule, by limit index.
    describe: Vec<String>,
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

    /// Whether `tool` should vanish from `tools/list`: some `Enforce` policy
    /// with `hideDenied` denies it whatever the arguments.
    pub fn hides(&self, tool: &str) -> bool {
        let mut matched = Vec::new();
        self.policies.iter().any(|p| {
            if p.mode != Mode::Enforce || !p.hide_denied {
                return false;
            }
            p.matcher.rules_for(tool, &mut matched);
            let rules = matched.iter().map(|&i| &p.rules[i as usize]);
            let mut any_allow = false;
            for r in rules {
                match r.action {
                    Action::Deny if r.conditions.is_empty() => return true,
                    Action::Deny => {}
                    Action::Allow => any_allow = true,
                }
            }
            !any_allow && p.default_action == Action::Deny
        })
    }

    /// Judges `call` against every policy; budgets are spent by
    /// [`Evaluation::finish`].
    pub fn evaluate(&self, call: &ToolCall<'_>) -> Evaluation {
        let mut matched = Vec::new();
        let mut allowed: Option<Decision> = None;
        let mut enforce = Budgets::default();
        let mut audit = Budgets::default();
        let mut audit_denial: Option<Decision> = None;
        for p in &self.policies {
            let verdict = judge(p, call, &mut matched);
            match (p.mode, verdict) {
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
                (mode, Verdict::Allow(rule)) => {
                    if mode == Mode::Enforce && allowed.is_none() {
                        allowed = Some(Decision {
                            effect: Effect::Allowed,
                            reason: if rule.is_some() {
                                Reason::Rule
                            } else {
                                Reason::Default
                            },
                            policy: Some(p.name.clone()),
                            rule: rule.map(|r| r.name.clone()),
                            message: None,
                            retry_after: None,
                            deny_with: DenyWith::default(),
                        });
                    }
                    if let Some(rule) = rule.filter(|r| !r.limits.is_empty()) {
                        let budgets = if mode == Mode::Enforce {
                            &mut enforce
                        } else {
                            &mut audit
                        };
                        budgets.add(p, rule, call);
                    }
                }
            }
        }
        let allowed = allowed.unwrap_or_else(|| Decision {
            // No Enforce policy at all: nothing restricts the call.
            effect: Effect::Allowed,
            reason: Reason::Default,
            policy: None,
            rule: None,
            message: None,
            retry_after: None,
            deny_with: DenyWith::default(),
        });
        Evaluation {
            state: State::Pending {
                allowed,
                enforce,
                audit_denial,
                audit,
            },
        }
    }

    /// [`evaluate`](Self::evaluate) and [`Evaluation::finish`] with a
    /// synchronous counter.
    pub fn decide(&self, call: &ToolCall<'_>, counter: &dyn Counter, now: Instant) -> Decision {
        let eval = self.evaluate(call);
        let enforce = counter.try_acquire(eval.acquisitions(), now);
        let audit = enforce
            .is_ok()
            .then(|| counter.try_acquire(eval.audit_acquisitions(), now));
        eval.finish(enforce, audit)
    }
}

impl Budgets {
    fn add(&mut self, p: &CompiledPolicy, rule: &CompiledRule, call: &ToolCall<'_>) {
        let owner = Arc::new(CompiledRuleRef {
            name: rule.name.clone(),
            message: rule.message.clone(),
            deny_with: rule.deny_with,
            describe: rule
                .limits
                .iter()
                .map(|l| format!("{} per {}", l.limit.requests, Human(l.limit.window)))
                .collect(),
        });
        for (i, l) in rule.limits.iter().enumerate() {
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(l.key_arguments.len() + 1);
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
            self.acquire.push(Acquire {
                limit: l.limit.clone(),
                bucket: BucketKey::of(parts.iter().map(Vec::as_slice)),
            });
            self.owner.push((p.name.clone(), owner.clone(), i));
        }
    }

    fn refusal(&self, refusal: &Refusal, effect: Effect) -> Decision {
        let (index, retry_after, detail) = match refusal {
            Refusal::Exhausted { index, retry_after } => {
                let (_, rule, limit) = &self.owner[*index];
                let describe = rule
                    .describe
                    .get(*limit)
                    .map(String::as_str)
                    .unwrap_or("its limit");
                (
                    *index,
                    Some(*retry_after),
                    format!(
                        "rate limit of {describe} reached; retry after {}",
                        Human(*retry_after)
                    ),
                )
            }
            Refusal::TooManyBuckets { index } => (
                *index,
                None,
                "too many distinct rate-limit keys are in use; retry later".to_owned(),
            ),
        };
        let (policy, rule, _) = &self.owner[index];
        Decision {
            effect,
            reason: Reason::RateLimit,
            policy: Some(policy.clone()),
            rule: Some(rule.name.clone()),
            message: Some(render(
                policy,
                Some(&rule.name),
                &detail,
                rule.message.as_deref(),
            )),
            retry_after,
            deny_with: rule.deny_with,
        }
    }
}

impl Evaluation {
    /// The admissions the call needs from `Enforce` policies' limits.
    pub fn acquisitions(&self) -> &[Acquire] {
        match &self.state {
            State::Pending { enforce, .. } => &enforce.acquire,
            State::Done(_) => &[],
        }
    }

    /// The admissions `Audit` policies' limits would need. Spend them only
    /// once the call is known to go through.
    pub fn audit_acquisitions(&self) -> &[Acquire] {
        match &self.state {
            State::Pending { audit, .. } => &audit.acquire,
            State::Done(_) => &[],
        }
    }

    /// The final decision, given the outcome of
    /// [`acquisitions`](Self::acquisitions) and, if those succeeded, of
    /// [`audit_acquisitions`](Self::audit_acquisitions).
    pub fn finish(
        self,
        enforce: Result<(), Refusal>,
        audit: Option<Result<(), Refusal>>,
    ) -> Decision {
        match self.state {
            State::Done(d) => d,
            State::Pending {
                allowed,
                enforce: budgets,
                audit_denial,
                audit: audit_budgets,
            } => {
                if let Err(refusal) = enforce {
                    return budgets.refusal(&refusal, Effect::Denied);
                }
                if let Some(d) = audit_denial {
                    return d;
                }
                if let Some(Err(refusal)) = audit {
                    return audit_budgets.refusal(&refusal, Effect::Audited);
                }
                allowed
            }
        }
    }

    /// Whether the call is already decided without budgets.
    pub fn decided(&self) -> Option<&Decision> {
        match &self.state {
            State::Done(d) => Some(d),
            State::Pending { .. } => None,
        }
    }
}

/// One policy's verdict on a call, steps 1–3 of the order.
fn judge<'p>(p: &'p CompiledPolicy, call: &ToolCall<'_>, matched: &mut Vec<u32>) -> Verdict<'p> {
    p.matcher.rules_for(call.tool, matched);
    let rules = || matched.iter().map(|&i| &p.rules[i as usize]);
    for r in rules().filter(|r| r.action == Action::Deny) {
        if r.conditions.iter().all(|c| c.holds(call.arguments)) {
            return Verdict::Deny {
                rule: Some(r),
                reason: Reason::Rule,
                detail: format!("tool {:?} is denied", call.tool),
            };
        }
    }
    let mut first_allow = None;
    for r in rules().filter(|r| r.action == Action::Allow) {
        first_allow.get_or_insert(r);
        if r.conditions.iter().all(|c| c.holds(call.arguments)) {
            return Verdict::Allow(Some(r));
        }
    }
    match first_allow {
        Some(r) => {
            let failed = r.conditions.iter().find(|c| !c.holds(call.arguments));
            Verdict::Deny {
                rule: Some(r),
                reason: Reason::Arguments,
                detail: failed.map_or_else(
                    || "arguments not allowed".to_owned(),
                    |c| c.explain(call.arguments),
                ),
            }
        }
        None if p.default_action == Action::Allow => Verdict::Allow(None),
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
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                    out.push(b':');
                    write(&map[k], out);
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
