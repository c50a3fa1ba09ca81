//! What a call allowed by its rules would spend — rate-limit acquisitions
//! and in-flight claims, each with the rule that asked for it — and the
//! denial that names that rule when a budget is full.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use crate::budget::inflight::{Claim, Counted, Full};
use crate::budget::ratelimit::{Acquire, BucketKey, Refusal};
use crate::compile::resource_rules::{ClusterView, InFlightCap};
use crate::compile::{CompiledLimit, CompiledPolicy, CompiledRule};
use crate::duration::Human;
use crate::resources::Op;
use crate::resources::sizes::show;

use super::measure::{sizes, starts_vm};
use crate::spec::{DenyWith, InFlightScope};

use super::decision::{Decision, Effect, Reason, ToolCall, render};

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
pub(super) struct Spend {
    pub(super) acquire: Vec<Acquire>,
    acquire_owner: Vec<Arc<Owner>>,
    pub(super) claims: Vec<Claim>,
    claim_owner: Vec<Arc<Owner>>,
}

impl Spend {
    /// The rate limits of the rule that allowed the call by its tool name.
    pub(super) fn add_call(
        &mut self,
        p: &CompiledPolicy,
        rule: &CompiledRule,
        call: &ToolCall<'_>,
    ) {
        for l in &rule.limits {
            self.acquire.push(Acquire {
                limit: l.limit.clone(),
                bucket: bucket_of(l, call, None),
                cost: 1,
            });
            self.acquire_owner.push(owner(
                p,
                rule,
                format!("{} per {}", l.limit.requests, Human(l.limit.window)),
            ));
        }
    }

    /// The rate limits, size budgets and in-flight caps of the resource
    /// rules that allowed the call's objects: one unit per object for rate
    /// limits, the object's size for budgets.
    pub(super) fn add_objects(
        &mut self,
        p: &CompiledPolicy,
        objects: &[(Op, &CompiledRule)],
        call: &ToolCall<'_>,
        view: &dyn ClusterView,
    ) {
        for (op, rule) in objects {
            let what = rule
                .resources
                .first()
                .map(|s| s.describe())
                .unwrap_or_else(|| "object".into());
            let measured = rule
                .limits
                .iter()
                .any(|l| l.limit.size.is_some())
                .then(|| sizes(op, view));
            for l in &rule.limits {
                let cost = match (l.limit.size, measured) {
                    (None, _) => 1,
                    (Some(resource), Some(m)) => {
                        // Unknown sizes were refused in judge unless the
                        // budget lets them through, counting nothing.
                        let amount = m.get(resource).unwrap_or(0);
                        u32::try_from(amount).unwrap_or(u32::MAX)
                    }
                    (Some(_), None) => 0,
                };
                if cost == 0 {
                    continue;
                }
                let bucket = bucket_of(l, call, Some(op));
                match self
                    .acquire
                    .iter()
                    .position(|a| a.limit.id == l.limit.id && a.bucket == bucket)
                {
                    Some(i) => self.acquire[i].cost = self.acquire[i].cost.saturating_add(cost),
                    None => {
                        self.acquire.push(Acquire {
                            limit: l.limit.clone(),
                            bucket,
                            cost,
                        });
                        let describe = match l.limit.size {
                            None => format!(
                                "{} {what}s per {}{}",
                                l.limit.requests,
                                Human(l.limit.window),
                                key_scope(l)
                            ),
                            Some(resource) => format!(
                                "{} of {} per {}{}",
                                show(resource, u64::from(l.limit.requests)),
                                resource.as_str(),
                                Human(l.limit.window),
                                key_scope(l)
                            ),
                        };
                        self.acquire_owner.push(owner(p, rule, describe));
                    }
                }
            }
            for cap in &rule.in_flight {
                // Checked in judge: every object of an allowing rule has a key.
                let Ok(key) = cap.key(op, call.subject) else {
                    continue;
                };
                self.claim(
                    p,
                    rule,
                    (Counted::Clones, None),
                    cap,
                    key,
                    &format!("{what}s in flight"),
                );
            }
            if starts_vm(op, view)
                && let Some(cap) = &rule.running_vms
                && let Ok(key) = cap.key(op, call.subject)
            {
                let vm = match (&op.namespace, &op.name) {
                    (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
                    _ => None,
                };
                self.claim(p, rule, (Counted::RunningVms, vm), cap, key, "running VMs");
            }
        }
    }

    /// One more of `counted` (and, for running VMs, which VM) under `cap`.
    fn claim(
        &mut self,
        p: &CompiledPolicy,
        rule: &CompiledRule,
        (counted, vm): (Counted, Option<String>),
        cap: &InFlightCap,
        key: String,
        what: &str,
    ) {
        match self.claims.iter().position(|c| {
            c.counted == counted && c.scope == cap.scope && c.key == key && c.max == cap.max
        }) {
            Some(i) => {
                self.claims[i].cost += 1;
                self.claims[i].vms.extend(vm);
            }
            None => {
                let per = match cap.scope {
                    InFlightScope::Namespace => format!(" per namespace (in {key:?})"),
                    InFlightScope::Source => format!(" per source VM (of {key:?})"),
                    InFlightScope::Caller => format!(" per caller ({key:?})"),
                    InFlightScope::Cluster => String::new(),
                };
                self.claims.push(Claim {
                    counted,
                    scope: cap.scope,
                    key,
                    max: cap.max,
                    cost: 1,
                    vms: vm.into_iter().collect(),
                });
                self.claim_owner
                    .push(owner(p, rule, format!("{} {what}{per}", cap.max)));
            }
        }
    }

    /// The decision for a full in-flight cap of these budgets.
    pub(super) fn in_flight_refusal(&self, full: &Full, effect: Effect) -> Decision {
        let o = &self.claim_owner[full.index];
        let detail = if full.crowded {
            format!(
                "too many objects admitted by this caller are still settling to count them against the cap of {}; retry shortly",
                o.describe
            )
        } else if self.claims[full.index].counted == Counted::RunningVms {
            format!(
                "the cap of {} is reached ({} running); retry when one stops",
                o.describe, full.current
            )
        } else {
            format!(
                "the cap of {} is reached ({} in flight); retry when one finishes",
                o.describe, full.current
            )
        };
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
            approval: None,
        }
    }

    pub(super) fn refusal(&self, refusal: &Refusal, effect: Effect) -> Decision {
        let (index, retry_after, detail) = match refusal {
            Refusal::Exhausted {
                index,
                retry_after,
                left,
            } => (
                *index,
                Some(*retry_after),
                match (self.acquire[*index].limit.size, left) {
                    (Some(resource), Some(left)) => format!(
                        "this call needs {} of {resource}; {} of the budget of {} remain; retry after {}",
                        show(resource, u64::from(self.acquire[*index].cost)),
                        show(resource, *left),
                        self.acquire_owner[*index].describe,
                        Human(*retry_after),
                        resource = resource.as_str(),
                    ),
                    _ => format!(
                        "rate limit of {} reached; retry after {}",
                        self.acquire_owner[*index].describe,
                        Human(*retry_after)
                    ),
                },
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
            approval: None,
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

fn key_scope(l: &CompiledLimit) -> &'static str {
    match (l.key_namespace, l.key_source) {
        (true, true) => " per namespace and source VM",
        (true, false) => " per namespace",
        (false, true) => " per source VM",
        (false, false) => "",
    }
}

/// The bucket of `l` this call counts in. A limit keyed by nothing has one
/// bucket, whose digest is taken once per process rather than per call.
fn bucket_of(l: &CompiledLimit, call: &ToolCall<'_>, op: Option<&Op>) -> BucketKey {
    static UNKEYED: LazyLock<BucketKey> = LazyLock::new(|| BucketKey::of([]));
    let keyed = !l.key_arguments.is_empty()
        || l.key_session
        || l.key_namespace
        || l.key_source
        || l.key_subject;
    if !keyed {
        return *UNKEYED;
    }
    BucketKey::of(key_parts(l, call, op).iter().map(Vec::as_slice))
}

/// The parts selecting a limit's bucket, each distinct from every other
/// kind of part.
fn key_parts(l: &CompiledLimit, call: &ToolCall<'_>, op: Option<&Op>) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(l.key_arguments.len() + 3);
    for pointer in &l.key_arguments {
        parts.push(match pointer.get(call.arguments) {
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

/// A canonical byte encoding of a key value: object keys sorted, integral
/// numbers written as integers, so `5` and `5.0` share a budget.
pub(super) fn canonical(v: &Value) -> Vec<u8> {
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
