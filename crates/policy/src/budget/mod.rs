//! Budgets a call spends once the policies allow it — sliding-window rate
//! limits ([`ratelimit`]) and in-flight caps ([`inflight`]) — and [`decide`],
//! the one sequence that judges a call and spends its budgets.
//!
//! The sidecar's gate runs [`decide`] on every `tools/call`; the policy
//! tests and benchmarks run exactly the same function. Where the budgets
//! live is behind [`Budgets`]: memory ([`ratelimit::MemoryCounter`]), or
//! memory beside a store shared by every replica ([`Tiered`], Redis in the
//! sidecar), so a test of this sequence is a test of production's.

mod caller;
mod digest;
pub mod inflight;
pub mod ratelimit;
mod starters;
mod tiered;
pub mod weighted;

#[cfg(test)]
mod tests;

use std::future::{Future, ready};
use std::time::{Instant, SystemTime};

use crate::compile::resource_rules::ClusterView;
use crate::evaluate::{Decision, Evaluation, PolicySet, ToolCall};

use inflight::InFlight;
use ratelimit::{Acquire, MemoryCounter, Refusal};

pub use caller::{CallerKey, TableStats};
pub use tiered::{Admission, BudgetUsage, Shared, SharedOutcome, StoreDown, Tiered};

/// Where rate-limit admissions are counted.
pub trait Budgets: Sync {
    /// Admits one call's acquisitions, every one or none; new buckets count
    /// against `caller`'s share.
    fn acquire(
        &self,
        all: &[Acquire],
        caller: CallerKey,
        now: Instant,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;
}

impl Budgets for MemoryCounter {
    fn acquire(
        &self,
        all: &[Acquire],
        caller: CallerKey,
        now: Instant,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        ready(self.try_acquire_as(all, caller, now))
    }
}

/// What a decision reads and spends besides the call and the policies.
#[derive(Clone, Copy)]
pub struct Stores<'a, B: ?Sized> {
    /// Rate-limit budgets.
    pub budgets: &'a B,
    /// In-flight counts.
    pub in_flight: &'a dyn InFlight,
    /// What the cluster knows (VM labels).
    pub view: &'a dyn ClusterView,
}

/// Decides one call: the pure evaluation, then `Enforce` policies' in-flight
/// caps, then their rate limits (all or nothing; an in-flight admission is
/// taken back if a rate limit then refuses), then — only for a call that goes
/// through — what `Audit` policies' caps and limits would have said.
pub async fn decide<B: Budgets + ?Sized>(
    set: &PolicySet,
    call: &ToolCall<'_>,
    stores: Stores<'_, B>,
    now: Instant,
    wall: SystemTime,
) -> Decision {
    let eval = set.evaluate(call, stores.view);
    if eval.decided().is_some() || eval.spends_nothing() {
        // Most calls: denied outright, or allowed by rules without caps or
        // limits. No store is touched and no caller digest is taken.
        return eval.finish(Ok(()), Some(Ok(())), Some(Ok(())));
    }
    spend(eval, call, stores, now, wall).await
}

/// The budget half of [`decide`], for a call that needs some.
async fn spend<B: Budgets + ?Sized>(
    eval: Evaluation,
    call: &ToolCall<'_>,
    stores: Stores<'_, B>,
    now: Instant,
    wall: SystemTime,
) -> Decision {
    // Whose share of the budget tables the call's new entries take.
    let caller = CallerKey::new(call.subject, call.session);
    let ticket = match stores.in_flight.try_claim(eval.claims(), caller, wall) {
        Ok(t) => t,
        Err(full) => return eval.in_flight_refusal(&full),
    };
    let enforce = stores
        .budgets
        .acquire(eval.acquisitions(), caller, now)
        .await;
    if enforce.is_err() {
        stores.in_flight.release(ticket);
        return eval.finish(enforce, None, None);
    }
    let audit_in_flight = stores.in_flight.check(eval.audit_claims(), wall);
    let audit = stores
        .budgets
        .acquire(eval.audit_acquisitions(), caller, now)
        .await;
    eval.finish(enforce, Some(audit_in_flight), Some(audit))
}
