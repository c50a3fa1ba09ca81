//! Sliding windows over amounts (`500Gi of storage per 1h`), for size
//! budgets.
//!
//! A call-count limit keeps one timestamp per admitted unit (at most
//! `requests` of them). That does not carry over to amounts: a budget of
//! 500Gi counted in MiB would be half a million timestamps. So a bucket keeps
//! a log of *entries* — `(first, last, amount)` — and an admission joins the
//! newest entry when that entry began less than [`SLOT_DIVISOR`]th of a
//! window ago, else starts a new one. An entry leaves the window when its
//! `last` admission does, so:
//!
//! - **it never admits more than the budget** in any window-long span: every
//!   amount is counted at least as long as the exact rule counts it;
//! - **it is exact for admissions spaced at least `window / 64` apart** (each
//!   is its own entry) and otherwise refills at most `window / 64` late — for
//!   `1h`, under 57 s;
//! - **it is bounded**: entries begin at least `window / 64` apart and live
//!   at most `window + window / 64`, so a bucket holds at most 66 entries
//!   whatever the traffic.
//!
//! The property tests below check all three against a naive model that
//! keeps every admission.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A window is cut into this many spans at most: admissions within one span
/// of an entry's start share the entry.
pub(crate) const SLOT_DIVISOR: u32 = 64;

/// The most entries one bucket can hold (see the module docs).
pub const MAX_ENTRIES: usize = SLOT_DIVISOR as usize + 2;

/// Admissions sharing one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    first: Instant,
    last: Instant,
    amount: u64,
}

/// One bucket of a size budget: entries, oldest first.
#[derive(Debug, Default)]
pub(super) struct AmountLog(VecDeque<Entry>);

impl AmountLog {
    /// Forgets entries whose last admission left the window ending at `now`.
    pub(super) fn expire(&mut self, window: Duration, now: Instant) {
        while let Some(e) = self.0.front() {
            if now.saturating_duration_since(e.last) >= window {
                self.0.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether nothing is counted any more.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the window holds now (after [`expire`](Self::expire)).
    pub(super) fn used(&self) -> u64 {
        self.0.iter().map(|e| e.amount).sum()
    }

    /// How long until `amount` more fits under `capacity`, or `None` if it
    /// fits now. An amount above the capacity never fits: it waits a window
    /// and is refused again.
    pub(super) fn wait(
        &self,
        capacity: u64,
        window: Duration,
        amount: u64,
        now: Instant,
    ) -> Option<Duration> {
        let mut used = self.used();
        if used.saturating_add(amount) <= capacity {
            return None;
        }
        if amount > capacity {
            return Some(window);
        }
        for e in &self.0 {
            used -= e.amount;
            if used + amount <= capacity {
                return Some((e.last + window).saturating_duration_since(now));
            }
        }
        Some(window)
    }

    /// Counts `amount` at `now`.
    pub(super) fn admit(&mut self, window: Duration, amount: u64, now: Instant) {
        let span = window / SLOT_DIVISOR;
        if let Some(e) = self.0.back_mut()
            && now.saturating_duration_since(e.first) < span
        {
            e.amount = e.amount.saturating_add(amount);
            e.last = e.last.max(now);
            return;
        }
        self.0.push_back(Entry {
            first: now,
            last: now,
            amount,
        });
    }

    /// Entries held, for tests.
    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every admission, kept: the rule stated plainly.
    #[derive(Default)]
    struct Naive(Vec<(Instant, u64)>);

    impl Naive {
        fn used(&self, window: Duration, now: Instant) -> u64 {
            self.0
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) < window)
                .map(|(_, a)| a)
                .sum()
        }
    }

    fn run(
        capacity: u64,
        window: Duration,
        steps: &[(u64, u64)],
    ) -> (Vec<(Instant, u64)>, Vec<bool>, usize) {
        let t0 = Instant::now();
        let mut log = AmountLog::default();
        let mut t = t0;
        let mut admitted = Vec::new();
        let mut decisions = Vec::new();
        let mut most = 0;
        for &(gap_ms, amount) in steps {
            t += Duration::from_millis(gap_ms);
            log.expire(window, t);
            let ok = log.wait(capacity, window, amount, t).is_none();
            if ok {
                log.admit(window, amount, t);
                admitted.push((t, amount));
            }
            decisions.push(ok);
            most = most.max(log.entries());
        }
        (admitted, decisions, most)
    }

    proptest! {
        /// No window-long span ever holds more than the budget, the log
        /// stays within its bound, and admissions spaced a slot apart are
        /// decided exactly as the naive model decides them.
        #[test]
        fn never_over_bounded_and_exact_when_sparse(
            capacity in 1u64..5_000,
            window_s in 1u64..120,
            steps in proptest::collection::vec((0u64..4_000, 0u64..2_000), 1..300),
        ) {
            let window = Duration::from_secs(window_s);
            let (admitted, _, most) = run(capacity, window, &steps);
            prop_assert!(most <= MAX_ENTRIES, "{most} entries");
            for (i, (start, _)) in admitted.iter().enumerate() {
                let within: u64 = admitted[i..]
                    .iter()
                    .take_while(|(t, _)| *t < *start + window)
                    .map(|(_, a)| a)
                    .sum();
                prop_assert!(within <= capacity, "{within} > {capacity} after {start:?}");
            }
            // Sparse traffic: the same steps spaced at least a slot apart.
            let span_ms = (window / SLOT_DIVISOR).as_millis() as u64 + 1;
            let sparse: Vec<(u64, u64)> =
                steps.iter().map(|&(g, a)| (g.max(span_ms), a)).collect();
            let (_, got, _) = run(capacity, window, &sparse);
            let t0 = Instant::now();
            let mut naive = Naive::default();
            let mut t = t0;
            for (&(gap, amount), &decided) in sparse.iter().zip(&got) {
                t += Duration::from_millis(gap);
                let ok = naive.used(window, t) + amount <= capacity;
                if ok {
                    naive.0.push((t, amount));
                }
                prop_assert_eq!(ok, decided);
            }
        }

        /// Under dense traffic the log admits no less than the naive model
        /// would with every refill delayed by one slot: it is late by at
        /// most `window / 64`, never by more.
        #[test]
        fn dense_traffic_refills_at_most_one_slot_late(
            capacity in 1u64..5_000,
            steps in proptest::collection::vec((0u64..200, 1u64..500), 1..400),
        ) {
            let window = Duration::from_secs(10);
            let slot = window / SLOT_DIVISOR;
            let (_, decisions, most) = run(capacity, window, &steps);
            prop_assert!(most <= MAX_ENTRIES);
            // Every refusal is justified by admissions within window + slot.
            let mut t = Instant::now();
            let mut before: Vec<(Instant, u64)> = Vec::new();
            for (&(gap, amount), &admitted) in steps.iter().zip(&decisions) {
                t += Duration::from_millis(gap);
                if admitted {
                    before.push((t, amount));
                    continue;
                }
                let held: u64 = before
                    .iter()
                    .filter(|(at, _)| t.saturating_duration_since(*at) < window + slot)
                    .map(|(_, a)| a)
                    .sum();
                prop_assert!(
                    held + amount > capacity,
                    "refused {amount} with only {held} of {capacity} held within a window and a slot"
                );
            }
        }
    }

    #[test]
    fn says_when_the_amount_fits_again() {
        let window = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut log = AmountLog::default();
        log.admit(window, 300, t0);
        log.admit(window, 120, t0 + Duration::from_secs(600));
        let now = t0 + Duration::from_secs(1200);
        // 80 of 500 left: 120 fits once the first 300 leave, at t0 + 1h.
        assert_eq!(log.used(), 420);
        assert_eq!(
            log.wait(500, window, 120, now),
            Some(Duration::from_secs(2400))
        );
        assert_eq!(log.wait(500, window, 80, now), None);
        assert_eq!(log.wait(500, window, 501, now), Some(window));
        log.expire(window, t0 + window);
        assert_eq!(log.used(), 120);
    }
}
