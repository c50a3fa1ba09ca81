//! Rate limits in two tiers: `scope: Shared` limits in a store every replica
//! sees (Redis, in the sidecar), the rest in this process's memory — admitted
//! together, all or nothing.
//!
//! The shared tier is asked first (one round trip for all of a call's shared
//! limits). If it admits and a local limit then refuses, the shared admission
//! is taken back, so a refused call never spends a shared budget. When the
//! shared store cannot be reached, each shared limit follows its
//! `onStoreError`: `Deny` refuses the call, `LocalFallback` counts it in
//! memory instead (a per-replica budget for the outage).

use std::future::Future;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::ratelimit::{Acquire, LimitId, MemoryCounter, Refusal, SizeResource};
use super::{Budgets, CallerKey};

/// What the shared store said.
#[derive(Debug, PartialEq, Eq)]
pub enum SharedOutcome {
    /// Every acquisition was admitted; `last` identifies the admissions so
    /// they can be taken back.
    Admitted {
        /// The store's sequence number of the last admission.
        last: i64,
        /// The store's clock at admission (ms), to find the entry of a size
        /// budget's draw when it is taken back.
        at: i64,
    },
    /// The acquisition at `index` (into those passed) has no room.
    Full {
        /// Which acquisition.
        index: usize,
        /// When it will have room.
        retry_after: Duration,
        /// For a size budget: how much is left (in its unit).
        left: Option<u64>,
    },
}

/// The shared store did not answer. The store's own error is its source,
/// typed: this crate knows no store, so it travels boxed.
#[derive(Debug, thiserror::Error)]
#[error("the shared rate-limit store is unavailable: {0}")]
pub struct StoreDown(#[source] Box<dyn std::error::Error + Send + Sync>);

impl StoreDown {
    /// The store is down because of `why` (the store's own error type).
    pub fn new(why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreDown(why.into())
    }
}

/// A store of rate-limit budgets shared by every replica.
pub trait Shared: Sync {
    /// Admits every acquisition, or none.
    fn try_acquire(
        &self,
        all: &[&Acquire],
        now: Instant,
    ) -> impl Future<Output = Result<SharedOutcome, StoreDown>> + Send;
    /// Takes back what [`try_acquire`](Self::try_acquire) admitted.
    fn release(&self, all: &[&Acquire], admitted: Admission) -> impl Future<Output = ()> + Send;
}

/// What identifies one admission of the shared store, to take it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The store's sequence number of the last unit admitted.
    pub last: i64,
    /// The store's clock at admission, in ms.
    pub at: i64,
}

/// Local budgets, and shared ones when a shared store is configured.
#[derive(Debug, Default)]
pub struct Tiered<S> {
    local: MemoryCounter,
    pub(super) shared: Option<S>,
    /// What size budgets admitted in total, by budget (for metrics).
    consumed: Mutex<BTreeMap<LimitId, (SizeResource, u64)>>,
}

/// The most size budgets whose consumption is kept for metrics; a policy
/// churning through more keeps its first ones.
const MAX_CONSUMED: usize = 1024;

/// One size budget, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetUsage {
    /// The budget (policy, rule, resource, window and key shape).
    pub id: LimitId,
    /// What it measures.
    pub resource: SizeResource,
    /// Everything admitted since start, in the budget's unit.
    pub consumed: u64,
    /// The least left in any of this sidecar's buckets of it (`Pod`
    /// budgets; `None` for budgets kept only in the shared store).
    pub remaining: Option<u64>,
}

impl<S: Shared> Tiered<S> {
    /// Budgets in memory, beside `shared` if there is one (without it,
    /// shared limits behave as if the store were down).
    pub fn new(shared: Option<S>) -> Self {
        Tiered {
            local: MemoryCounter::new(),
            shared,
            consumed: Mutex::default(),
        }
    }

    /// Consumption and what is left of every size budget used so far.
    pub fn size_usage(&self, now: Instant) -> Vec<BudgetUsage> {
        let remaining: BTreeMap<LimitId, u64> =
            self.local.lowest_remaining(now).into_iter().collect();
        self.consumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, (resource, consumed))| BudgetUsage {
                id: id.clone(),
                resource: *resource,
                consumed: *consumed,
                remaining: remaining.get(id).copied(),
            })
            .collect()
    }

    fn record(&self, all: &[Acquire]) {
        let mut consumed = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        for a in all {
            let Some(resource) = a.limit.size else {
                continue;
            };
            if consumed.len() >= MAX_CONSUMED && !consumed.contains_key(&a.limit.id) {
                continue;
            }
            let entry = consumed.entry(a.limit.id.clone()).or_insert((resource, 0));
            entry.1 = entry.1.saturating_add(u64::from(a.cost));
        }
    }

    /// The in-memory tier (for sweeping idle buckets, and for metrics).
    pub fn local(&self) -> &MemoryCounter {
        &self.local
    }
}

impl<S: Shared> Budgets for Tiered<S> {
    async fn acquire(
        &self,
        all: &[Acquire],
        caller: CallerKey,
        now: Instant,
    ) -> Result<(), Refusal> {
        if all.is_empty() {
            return Ok(());
        }
        let admitted = self.acquire_all(all, caller, now).await;
        if admitted.is_ok() && all.iter().any(|a| a.limit.size.is_some()) {
            self.record(all);
        }
        admitted
    }
}

impl<S: Shared> Tiered<S> {
    async fn acquire_all(
        &self,
        all: &[Acquire],
        caller: CallerKey,
        now: Instant,
    ) -> Result<(), Refusal> {
        let shared_idx: Vec<usize> = (0..all.len()).filter(|&i| all[i].limit.shared).collect();
        if shared_idx.is_empty() {
            return self.local.try_acquire_as(all, caller, now);
        }
        let mut local_idx: Vec<usize> = (0..all.len()).filter(|&i| !all[i].limit.shared).collect();
        let mut taken = None;
        match &self.shared {
            Some(store) => {
                let shared: Vec<&Acquire> = shared_idx.iter().map(|&i| &all[i]).collect();
                // Boxed: a shared store's future (a Redis round trip) is
                // large, and unboxed it would be part of every decision's
                // future, copied on every call whether it has shared limits
                // or not.
                match Box::pin(store.try_acquire(&shared, now)).await {
                    Ok(SharedOutcome::Admitted { last, at }) => {
                        taken = Some((store, shared, Admission { last, at }))
                    }
                    Ok(SharedOutcome::Full {
                        index,
                        retry_after,
                        left,
                    }) => {
                        return Err(Refusal::Exhausted {
                            index: shared_idx[index.min(shared_idx.len() - 1)],
                            retry_after,
                            left,
                        });
                    }
                    Err(_) => fall_back(all, &shared_idx, &mut local_idx)?,
                }
            }
            // No shared store configured: as if it were down.
            None => fall_back(all, &shared_idx, &mut local_idx)?,
        }
        let local: Vec<Acquire> = local_idx.iter().map(|&i| all[i].clone()).collect();
        match self.local.try_acquire_as(&local, caller, now) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                if let Some((store, shared, last)) = taken {
                    Box::pin(store.release(&shared, last)).await;
                }
                Err(refusal.reindexed(&local_idx))
            }
        }
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
