//! Sliding-window rate limits.
//!
//! A limit of N per window W admits a call at time `t` only if fewer than N
//! calls were admitted in `(t - W, t]`. That is the promise operators read in
//! "30 per minute": no 60-second span ever holds 31 admissions, including
//! spans that straddle what a fixed-window counter would call a window edge.
//! Approximations (fixed windows, token buckets, the weighted two-window
//! counter) all break that promise by up to 2×, so the in-memory store keeps
//! the exact log: the last N admission times per bucket, which is all the
//! rule needs to look back at.
//!
//! Admission is all-or-nothing across every limit a call is subject to, so a
//! call refused by one limit never spends another's budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::caller::{CallerKey, TableStats};
use super::digest::digest;
use super::weighted::AmountLog;
pub use crate::spec::SizeResource;

/// The most live buckets one limit keeps. Keys come from call arguments,
/// which the agent chooses; past this many a limit refuses new keys rather
/// than letting memory grow without bound (or forgetting admissions, which
/// would let calls through). The cap is per limit, so an agent spraying one
/// keyed argument cannot exhaust the buckets of other limits.
pub(crate) const MAX_BUCKETS_PER_LIMIT: usize = 10_000;

/// The most live buckets one caller ([`CallerKey`]) may open in one limit:
/// a caller spraying keys is refused new ones once it holds this many,
/// while every other caller keeps finding room. Filling a limit takes ten
/// callers each holding their whole share within one window.
pub(crate) const MAX_BUCKETS_PER_CALLER: usize = MAX_BUCKETS_PER_LIMIT / 10;

/// The stable identity of one compiled limit: policy, rule, position and key
/// shape. Budgets survive a policy reload as long as this stays the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitId(pub Arc<str>);

/// One compiled limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit {
    /// Identity of the budget.
    pub id: LimitId,
    /// Calls (or objects) admitted per window; for a size budget, the
    /// budget in the resource's unit (see [`SizeResource::unit`]).
    pub requests: u32,
    /// `Some` for a size budget (`storage: 500Gi per 1h`): amounts, kept in
    /// a [`weighted`](super::weighted) log instead of one timestamp per unit.
    pub size: Option<SizeResource>,
    /// Window length.
    pub window: Duration,
    /// Kept in the shared store (Redis), not in the sidecar.
    pub shared: bool,
    /// Without the shared store: count in the sidecar instead of denying.
    pub local_fallback: bool,
}

/// Which budget of a limit a call draws on: a digest of the key values,
/// stable across processes so that a shared store sees the same bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey(pub [u8; 16]);

impl BucketKey {
    /// Digests the key parts; parts are length-prefixed so `("ab","c")` and
    /// `("a","bc")` differ.
    pub fn of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> BucketKey {
        BucketKey(digest(parts))
    }

    /// Hex form, for shared-store keys.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Admissions a call needs from one bucket of a limit.
#[derive(Clone, Debug)]
pub struct Acquire {
    /// The limit.
    pub limit: Arc<Limit>,
    /// The bucket within it.
    pub bucket: BucketKey,
    /// How many: 1 per call, or per object for resource rules (a call
    /// creating 10 clones draws 10).
    pub cost: u32,
}

/// Why an acquisition failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The limit at this index of the request list has no room; the earliest
    /// moment it will is `retry_after` from now.
    Exhausted {
        /// Index into the acquisitions passed in.
        index: usize,
        /// How long until one slot frees up.
        retry_after: Duration,
        /// For a size budget: how much of it is left now (in its unit).
        left: Option<u64>,
    },
    /// The shared store cannot be reached and the limit fails closed.
    StoreUnavailable {
        /// Index into the acquisitions passed in.
        index: usize,
    },
    /// The limit cannot take a new bucket (see [`MAX_BUCKETS_PER_LIMIT`]).
    TooManyBuckets {
        /// Index into the acquisitions passed in.
        index: usize,
    },
}

impl Refusal {
    /// The same refusal for a list that was a subset of another: `indices`
    /// maps positions in the subset to positions in the whole.
    pub(crate) fn reindexed(self, indices: &[usize]) -> Refusal {
        match self {
            Refusal::Exhausted {
                index,
                retry_after,
                left,
            } => Refusal::Exhausted {
                index: indices[index],
                retry_after,
                left,
            },
            Refusal::TooManyBuckets { index } => Refusal::TooManyBuckets {
                index: indices[index],
            },
            Refusal::StoreUnavailable { index } => Refusal::StoreUnavailable {
                index: indices[index],
            },
        }
    }
}

/// The last admission times of one bucket, oldest first, at most `requests`
/// long.
#[derive(Debug, Default)]
struct Log(VecDeque<Instant>);

impl Log {
    /// Forgets admissions that left the window ending at `now`.
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some(&t) = self.0.front() {
            if now.saturating_duration_since(t) >= window {
                self.0.pop_front();
            } else {
                break;
            }
        }
    }

    /// How long until this bucket has room for `cost` more, or `None` if it
    /// has now. More than the limit ever admits at once waits a window and
    /// is refused again.
    fn wait(&self, limit: &Limit, cost: u32, now: Instant) -> Option<Duration> {
        let (n, cost) = (limit.requests as usize, cost as usize);
        if self.0.len() + cost <= n {
            return None;
        }
        if cost > n {
            return Some(limit.window);
        }
        // Enough of the oldest admissions must leave the window first.
        let pivot = self.0[self.0.len() + cost - n - 1];
        Some((pivot + limit.window).saturating_duration_since(now))
    }

    fn admit(&mut self, limit: &Limit, cost: u32, now: Instant) {
        for _ in 0..cost {
            self.0.push_back(now);
        }
        while self.0.len() > limit.requests as usize {
            self.0.pop_front();
        }
    }
}

/// The in-memory store: exact, per process, behind one short lock.
#[derive(Debug, Default)]
pub struct MemoryCounter {
    buckets: Mutex<Buckets>,
}

/// The counter's maps hash with foldhash, not SipHash: every rate-limited
/// call looks up its limit and bucket, the limit keys come from the policy
/// and the bucket keys are SHA-256 digests, so a caller cannot aim keys at
/// one hash slot; the seed is per process.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Buckets {
    limits: Map<LimitId, LimitBuckets>,
    /// Admissions since the last sweep.
    since_sweep: usize,
    /// New buckets refused: the caller's share, or the limit, was full.
    refused_caller: u64,
    refused_total: u64,
}

#[derive(Debug, Default)]
struct LimitBuckets {
    logs: Map<BucketKey, Bucket>,
    /// Live buckets each caller opened.
    owned: Map<CallerKey, usize>,
    /// Longest window seen for this limit, for sweeping idle buckets.
    window: Duration,
    /// For a size budget: its capacity, as last admitted under.
    capacity: Option<u64>,
}

/// One bucket's admissions, and the caller who opened it (who it counts
/// against until it empties, whoever else draws on it).
#[derive(Debug)]
struct Bucket {
    log: Window,
    owner: CallerKey,
}

/// What a bucket keeps: one time per admitted unit for counts, entries of
/// amounts for size budgets.
#[derive(Debug)]
enum Window {
    Count(Log),
    Amount(AmountLog),
}

impl Window {
    fn new(limit: &Limit) -> Window {
        match limit.size {
            None => Window::Count(Log::default()),
            Some(_) => Window::Amount(AmountLog::default()),
        }
    }

    fn expire(&mut self, window: Duration, now: Instant) {
        match self {
            Window::Count(l) => l.expire(window, now),
            Window::Amount(l) => l.expire(window, now),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Window::Count(l) => l.0.is_empty(),
            Window::Amount(l) => l.is_empty(),
        }
    }

    fn used(&self) -> u64 {
        match self {
            Window::Count(l) => l.0.len() as u64,
            Window::Amount(l) => l.used(),
        }
    }

    fn wait(&self, limit: &Limit, cost: u32, now: Instant) -> Option<Duration> {
        match self {
            Window::Count(l) => l.wait(limit, cost, now),
            Window::Amount(l) => l.wait(
                u64::from(limit.requests),
                limit.window,
                u64::from(cost),
                now,
            ),
        }
    }

    fn admit(&mut self, limit: &Limit, cost: u32, now: Instant) {
        match self {
            Window::Count(l) => l.admit(limit, cost, now),
            Window::Amount(l) => l.admit(limit.window, u64::from(cost), now),
        }
    }
}

impl MemoryCounter {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live buckets, for metrics and tests.
    pub fn buckets(&self) -> usize {
        self.lock().limits.values().map(|l| l.logs.len()).sum()
    }

    /// Live buckets and refused new ones, for metrics.
    pub fn stats(&self) -> TableStats {
        let b = self.lock();
        TableStats {
            entries: b.limits.values().map(|l| l.logs.len()).sum(),
            refused_caller: b.refused_caller,
            refused_total: b.refused_total,
        }
    }

    /// For each size budget this store holds buckets of: the least any of
    /// its buckets has left (in the budget's unit), for metrics.
    pub(crate) fn lowest_remaining(&self, now: Instant) -> Vec<(LimitId, u64)> {
        let mut b = self.lock();
        let mut out = Vec::new();
        for (id, limit) in b.limits.iter_mut() {
            let Some(capacity) = limit.capacity else {
                continue;
            };
            let window = limit.window;
            let most = limit
                .logs
                .values_mut()
                .map(|bucket| {
                    bucket.log.expire(window, now);
                    bucket.log.used()
                })
                .max()
                .unwrap_or(0);
            out.push((id.clone(), capacity.saturating_sub(most)));
        }
        out
    }

    /// Drops buckets whose every admission has left the window.
    pub fn sweep(&self, now: Instant) {
        let mut b = self.lock();
        b.sweep(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A panic while holding this lock cannot leave a log half-written
        // (every mutation is a single push/pop), so a poisoned lock is safe
        // to keep using.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Buckets {
    fn sweep(&mut self, now: Instant) {
        for limit in self.limits.values_mut() {
            limit.sweep(now);
        }
        self.limits.retain(|_, l| !l.logs.is_empty());
        self.since_sweep = 0;
    }
}

impl LimitBuckets {
    fn sweep(&mut self, now: Instant) {
        let window = self.window;
        let owned = &mut self.owned;
        self.logs.retain(|_, bucket| {
            bucket.log.expire(window, now);
            let live = !bucket.log.is_empty();
            if !live && let Some(n) = owned.get_mut(&bucket.owner) {
                *n -= 1;
                if *n == 0 {
                    owned.remove(&bucket.owner);
                }
            }
            live
        });
    }

    /// Whether `caller` may open `more` buckets (after those it opens in
    /// the same call): `None`, or which share is full.
    fn full(&self, caller: CallerKey, more: usize) -> Option<Share> {
        let owned = self.owned.get(&caller).copied().unwrap_or(0);
        if owned + more > MAX_BUCKETS_PER_CALLER {
            Some(Share::Caller)
        } else if self.logs.len() + more > MAX_BUCKETS_PER_LIMIT {
            Some(Share::Total)
        } else {
            None
        }
    }
}

/// Which bound refused a new bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Share {
    Caller,
    Total,
}

impl MemoryCounter {
    /// Admits one call of the anonymous caller in every acquisition, or in
    /// none of them (see [`try_acquire_as`](Self::try_acquire_as)).
    pub fn try_acquire(&self, acquisitions: &[Acquire], now: Instant) -> Result<(), Refusal> {
        self.try_acquire_as(acquisitions, CallerKey::ANONYMOUS, now)
    }

    /// Admits one call of `caller` in every acquisition, or in none of
    /// them. Buckets the call opens count against `caller`'s share.
    pub(crate) fn try_acquire_as(
        &self,
        acquisitions: &[Acquire],
        caller: CallerKey,
        now: Instant,
    ) -> Result<(), Refusal> {
        if acquisitions.is_empty() {
            return Ok(());
        }
        let mut b = self.lock();
        b.since_sweep += 1;
        if b.since_sweep >= 4096 {
            b.sweep(now);
        }
        // Check every bucket before admitting into any; count the buckets
        // this call opens per limit, so one call cannot overrun a share.
        let mut opening: Vec<(&LimitId, usize)> = Vec::new();
        for (index, a) in acquisitions.iter().enumerate() {
            let limit = b.limits.entry(a.limit.id.clone()).or_default();
            if let Some(bucket) = limit.logs.get_mut(&a.bucket) {
                bucket.log.expire(a.limit.window, now);
                if let Some(retry_after) = bucket.log.wait(&a.limit, a.cost, now) {
                    let left = a
                        .limit
                        .size
                        .map(|_| u64::from(a.limit.requests).saturating_sub(bucket.log.used()));
                    return Err(Refusal::Exhausted {
                        index,
                        retry_after,
                        left,
                    });
                }
                continue;
            }
            if a.cost > a.limit.requests {
                return Err(Refusal::Exhausted {
                    index,
                    retry_after: a.limit.window,
                    left: a.limit.size.map(|_| u64::from(a.limit.requests)),
                });
            }
            let more = match opening.iter_mut().find(|(id, _)| **id == a.limit.id) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    opening.push((&a.limit.id, 1));
                    1
                }
            };
            if limit.full(caller, more).is_some() {
                limit.sweep(now);
                if let Some(share) = limit.full(caller, more) {
                    match share {
                        Share::Caller => b.refused_caller += 1,
                        Share::Total => b.refused_total += 1,
                    }
                    return Err(Refusal::TooManyBuckets { index });
                }
            }
        }
        for a in acquisitions {
            let limit = b.limits.entry(a.limit.id.clone()).or_default();
            limit.window = limit.window.max(a.limit.window);
            if a.limit.size.is_some() {
                limit.capacity = Some(u64::from(a.limit.requests));
            }
            let bucket = limit.logs.entry(a.bucket).or_insert_with(|| {
                *limit.owned.entry(caller).or_default() += 1;
                Bucket {
                    log: Window::new(&a.limit),
                    owner: caller,
                }
            });
            bucket.log.admit(&a.limit, a.cost, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(id: &str, requests: u32, secs: u64) -> Arc<Limit> {
        Arc::new(Limit {
            id: LimitId(id.into()),
            requests,
            window: Duration::from_secs(secs),
            shared: false,
            local_fallback: false,
            size: None,
        })
    }

    fn acq(l: &Arc<Limit>, key: &str) -> Acquire {
        acq_n(l, key, 1)
    }

    fn acq_n(l: &Arc<Limit>, key: &str, cost: u32) -> Acquire {
        Acquire {
            limit: l.clone(),
            bucket: BucketKey::of([key.as_bytes()]),
            cost,
        }
    }

    #[test]
    fn a_call_creating_several_objects_draws_them_all_or_none() {
        let c = MemoryCounter::new();
        let l = limit("objects", 30, 60);
        let t0 = Instant::now();
        assert_eq!(c.try_acquire(&[acq_n(&l, "k", 25)], t0), Ok(()));
        // 10 more do not fit in the 5 left: nothing is drawn.
        assert!(matches!(
            c.try_acquire(&[acq_n(&l, "k", 10)], t0),
            Err(Refusal::Exhausted { .. })
        ));
        assert_eq!(c.try_acquire(&[acq_n(&l, "k", 5)], t0), Ok(()));
        assert!(c.try_acquire(&[acq(&l, "k")], t0).is_err());
        // More than a window ever admits.
        assert!(c.try_acquire(&[acq_n(&l, "other", 31)], t0).is_err());
    }

    #[test]
    fn admits_n_then_refuses_with_the_time_until_a_slot_frees() {
        let c = MemoryCounter::new();
        let l = limit("p/r#0", 3, 60);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                c.try_acquire(&[acq(&l, "a")], t0 + Duration::from_secs(i)),
                Ok(())
            );
        }
        assert_eq!(
            c.try_acquire(&[acq(&l, "a")], t0 + Duration::from_secs(10)),
            Err(Refusal::Exhausted {
                index: 0,
                retry_after: Duration::from_secs(50),
                left: None,
            })
        );
        // Another bucket of the same limit has its own budget.
        assert_eq!(
            c.try_acquire(&[acq(&l, "b")], t0 + Duration::from_secs(10)),
            Ok(())
        );
        // At exactly t0+60s the first admission has left (t0+60-60, t0+60].
        assert_eq!(
            c.try_acquire(&[acq(&l, "a")], t0 + Duration::from_secs(60)),
            Ok(())
        );
        assert!(
            c.try_acquire(&[acq(&l, "a")], t0 + Duration::from_secs(60))
                .is_err()
        );
    }

    /// The window-edge case a fixed-window counter gets wrong: N calls at the
    /// end of one minute and N at the start of the next would be 2N within a
    /// few seconds.
    #[test]
    fn no_span_of_one_window_ever_holds_more_than_n_across_an_edge() {
        let c = MemoryCounter::new();
        let l = limit("edge", 30, 60);
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(59);
        let mut admitted = Vec::new();
        for _ in 0..30 {
            if c.try_acquire(&[acq(&l, "k")], late).is_ok() {
                admitted.push(late);
            }
        }
        // One second later a fixed window would have reset.
        let next = t0 + Duration::from_secs(61);
        for _ in 0..30 {
            assert!(c.try_acquire(&[acq(&l, "k")], next).is_err());
        }
        // The budget returns only once the first 30 are a full window old.
        assert!(
            c.try_acquire(&[acq(&l, "k")], late + Duration::from_millis(59_999))
                .is_err()
        );
        assert!(
            c.try_acquire(&[acq(&l, "k")], late + Duration::from_secs(60))
                .is_ok()
        );
        assert_eq!(admitted.len(), 30);
    }

    /// Simulates a minute of traffic at irregular times and checks the
    /// defining property over every 60 s span.
    #[test]
    fn every_window_long_span_holds_at_most_n_admissions() {
        let c = MemoryCounter::new();
        let l = limit("prop", 7, 10);
        let t0 = Instant::now();
        let mut admitted: Vec<Duration> = Vec::new();
        // A deterministic, irregular schedule: bursts and gaps.
        let mut t = Duration::ZERO;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += Duration::from_millis(x % 400);
            if c.try_acquire(&[acq(&l, "k")], t0 + t).is_ok() {
                admitted.push(t);
            }
        }
        assert!(
            admitted.len() > 100,
            "schedule should admit plenty: {}",
            admitted.len()
        );
        for (i, start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|&&a| a < *start + l.window)
                .count();
            assert!(
                within <= 7,
                "{within} admissions in the 10 s after {start:?}"
            );
        }
    }

    #[test]
    fn a_refused_call_spends_no_budget_of_its_other_limits() {
        let c = MemoryCounter::new();
        let per_minute = limit("m", 5, 60);
        let per_day = limit("d", 1, 86_400);
        let t0 = Instant::now();
        assert_eq!(
            c.try_acquire(&[acq(&per_minute, "k"), acq(&per_day, "k")], t0),
            Ok(())
        );
        for _ in 0..10 {
            assert!(matches!(
                c.try_acquire(&[acq(&per_minute, "k"), acq(&per_day, "k")], t0),
                Err(Refusal::Exhausted { index: 1, .. })
            ));
        }
        // The per-minute budget still has 4 left.
        for _ in 0..4 {
            assert_eq!(c.try_acquire(&[acq(&per_minute, "k")], t0), Ok(()));
        }
        assert!(c.try_acquire(&[acq(&per_minute, "k")], t0).is_err());
    }

    #[test]
    fn lowering_a_limit_keeps_the_history() {
        let c = MemoryCounter::new();
        let t0 = Instant::now();
        let wide = limit("same", 10, 60);
        for _ in 0..5 {
            c.try_acquire(&[acq(&wide, "k")], t0).unwrap();
        }
        let narrow = limit("same", 3, 60);
        assert!(c.try_acquire(&[acq(&narrow, "k")], t0).is_err());
    }

    #[test]
    fn idle_buckets_are_swept() {
        let c = MemoryCounter::new();
        let l = limit("s", 1, 1);
        let t0 = Instant::now();
        for i in 0..100u32 {
            c.try_acquire(&[acq(&l, &i.to_string())], t0).unwrap();
        }
        assert_eq!(c.buckets(), 100);
        c.sweep(t0 + Duration::from_secs(2));
        assert_eq!(c.buckets(), 0);
    }

    fn caller(name: &str) -> CallerKey {
        CallerKey::new(None, Some(name))
    }

    #[test]
    fn a_limit_full_of_keys_refuses_new_ones_without_touching_other_limits() {
        let c = MemoryCounter::new();
        let sprayed = limit("sprayed", 1, 3600);
        let other = limit("other", 5, 3600);
        let t0 = Instant::now();
        let callers = MAX_BUCKETS_PER_LIMIT / MAX_BUCKETS_PER_CALLER;
        for i in 0..MAX_BUCKETS_PER_LIMIT {
            let who = caller(&(i % callers).to_string());
            c.try_acquire_as(&[acq(&sprayed, &i.to_string())], who, t0)
                .unwrap();
        }
        assert_eq!(
            c.try_acquire_as(&[acq(&sprayed, "one-more")], caller("late"), t0),
            Err(Refusal::TooManyBuckets { index: 0 })
        );
        assert_eq!(c.stats().refused_total, 1);
        assert_eq!(c.try_acquire(&[acq(&other, "fresh")], t0), Ok(()));
        // Once the sprayed buckets age out, new keys are welcome again.
        assert_eq!(
            c.try_acquire(&[acq(&sprayed, "one-more")], t0 + Duration::from_secs(3600)),
            Ok(())
        );
    }

    #[test]
    fn one_caller_spraying_keys_fills_only_its_own_share() {
        let c = MemoryCounter::new();
        let l = limit("per-namespace", 1, 3600);
        let t0 = Instant::now();
        let hostile = caller("hostile");
        for i in 0..MAX_BUCKETS_PER_CALLER {
            c.try_acquire_as(&[acq(&l, &format!("ns-{i}"))], hostile, t0)
                .unwrap();
        }
        // Its next new key is refused; its existing keys still count.
        for key in ["ns-new", "ns-other"] {
            assert_eq!(
                c.try_acquire_as(&[acq(&l, key)], hostile, t0),
                Err(Refusal::TooManyBuckets { index: 0 })
            );
        }
        assert!(matches!(
            c.try_acquire_as(&[acq(&l, "ns-0")], hostile, t0),
            Err(Refusal::Exhausted { .. })
        ));
        // Everyone else still opens keys: other sessions and the anonymous.
        assert_eq!(
            c.try_acquire_as(&[acq(&l, "ns-new")], caller("honest"), t0),
            Ok(())
        );
        assert_eq!(
            c.try_acquire_as(&[acq(&l, "ns-third")], CallerKey::ANONYMOUS, t0),
            Ok(())
        );
        let stats = c.stats();
        assert_eq!(stats.refused_caller, 2);
        assert_eq!(stats.entries, MAX_BUCKETS_PER_CALLER + 2);
        // A bucket counts against whoever opened it until it empties.
        c.sweep(t0 + Duration::from_secs(3600));
        assert_eq!(c.stats().entries, 0);
        assert_eq!(
            c.try_acquire_as(
                &[acq(&l, "ns-new")],
                hostile,
                t0 + Duration::from_secs(3600)
            ),
            Ok(())
        );
    }

    #[test]
    fn one_call_cannot_open_more_buckets_than_its_callers_share() {
        let c = MemoryCounter::new();
        let l = limit("objects", 5, 60);
        let t0 = Instant::now();
        let many: Vec<Acquire> = (0..=MAX_BUCKETS_PER_CALLER)
            .map(|i| acq(&l, &format!("ns-{i}")))
            .collect();
        assert_eq!(
            c.try_acquire_as(&many, caller("one"), t0),
            Err(Refusal::TooManyBuckets {
                index: MAX_BUCKETS_PER_CALLER
            })
        );
        assert_eq!(c.buckets(), 0, "all or nothing");
        assert_eq!(c.try_acquire_as(&many[1..], caller("one"), t0), Ok(()));
    }

    #[test]
    fn bucket_keys_separate_parts() {
        assert_ne!(
            BucketKey::of([b"ab".as_slice(), b"c"]),
            BucketKey::of([b"a".as_slice(), b"bc"])
        );
        assert_eq!(
            BucketKey::of([b"x".as_slice()]),
            BucketKey::of([b"x".as_slice()])
        );
    }

    /// N of M simultaneous callers get through, exactly.
    #[test]
    fn concurrent_callers_admit_exactly_n() {
        let c = Arc::new(MemoryCounter::new());
        let l = limit("conc", 30, 60);
        let now = Instant::now();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (c, l, barrier) = (c.clone(), l.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..25)
                        .filter(|_| c.try_acquire(&[acq(&l, "k")], now).is_ok())
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 30);
    }
}
