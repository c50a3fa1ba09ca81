//! What `Enforce` would have denied: the sidecar's tally of `audited`
//! decisions per policy and rule over the last hour, which it reports to the
//! controller with its acks so that `kubectl get mtp` answers "what would
//! happen if I switched this Audit policy to Enforce" without Prometheus.
//!
//! Minute buckets, so old calls fall out of the window without a timer; the
//! number of buckets, and of keys per bucket, is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tollgate_policy::snapshot::{AUDIT_WINDOW_SECONDS, MAX_WOULD_DENY, WouldDeny};

/// Seconds per bucket.
const BUCKET_SECONDS: u64 = 60;
/// Distinct (policy, rule) pairs one bucket keeps; more only happens when
/// policies change very often, and then the newest pairs are not counted.
const MAX_KEYS: usize = 256;

type Key = (Arc<str>, Arc<str>);

/// The tally; cheap to share (one short lock per audited call).
#[derive(Default)]
pub(crate) struct WouldDenyTally {
    buckets: Mutex<VecDeque<(u64, BTreeMap<Key, u64>)>>,
}

impl WouldDenyTally {
    /// Counts one audited call of `policy`/`rule` at `now` (Unix seconds).
    pub(crate) fn record(&self, policy: Arc<str>, rule: Arc<str>, now: u64) {
        let bucket = now / BUCKET_SECONDS;
        let mut buckets = self.lock();
        if buckets.back().is_none_or(|(b, _)| *b != bucket) {
            buckets.push_back((bucket, BTreeMap::new()));
        }
        Self::expire(&mut buckets, now);
        let Some((_, counts)) = buckets.back_mut() else {
            return;
        };
        let key = (policy, rule);
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
        } else if counts.len() < MAX_KEYS {
            counts.insert(key, 1);
        }
    }

    /// The counts of the window ending at `now`, largest first (then by
    /// name), at most [`MAX_WOULD_DENY`] of them.
    pub(crate) fn summary(&self, now: u64) -> Vec<WouldDeny> {
        let mut buckets = self.lock();
        Self::expire(&mut buckets, now);
        let mut sums: BTreeMap<&Key, u64> = BTreeMap::new();
        for (_, counts) in buckets.iter() {
            for (key, n) in counts {
                *sums.entry(key).or_default() += n;
            }
        }
        let mut out: Vec<WouldDeny> = sums
            .into_iter()
            .map(|((policy, rule), count)| WouldDeny {
                policy: policy.to_string(),
                rule: rule.to_string(),
                count,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
        out.truncate(MAX_WOULD_DENY);
        out
    }

    fn expire(buckets: &mut VecDeque<(u64, BTreeMap<Key, u64>)>, now: u64) {
        // A bucket counts while any of its minute is inside the window.
        let oldest = now.saturating_sub(AUDIT_WINDOW_SECONDS) / BUCKET_SECONDS;
        while buckets.front().is_some_and(|(b, _)| *b < oldest) {
            buckets.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, BTreeMap<Key, u64>)>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: &WouldDenyTally, policy: &str, rule: &str, now: u64) {
        t.record(policy.into(), rule.into(), now);
    }

    fn counts(t: &WouldDenyTally, now: u64) -> Vec<(String, String, u64)> {
        t.summary(now)
            .into_iter()
            .map(|w| (w.policy, w.rule, w.count))
            .collect()
    }

    #[test]
    fn sums_per_rule_largest_first() {
        let t = WouldDenyTally::default();
        let start = 1_000_000;
        record(&t, "p", "a", start);
        for i in 0..3 {
            record(&t, "p", "b", start + 100 * i);
        }
        record(&t, "q", "(default)", start + 500);
        assert_eq!(
            counts(&t, start + 600),
            [
                ("p".into(), "b".into(), 3),
                ("p".into(), "a".into(), 1),
                ("q".into(), "(default)".into(), 1)
            ]
        );
    }

    #[test]
    fn calls_leave_the_window_after_an_hour() {
        let t = WouldDenyTally::default();
        let start = 1_000_020;
        record(&t, "p", "a", start);
        record(&t, "p", "a", start + 1800);
        assert_eq!(counts(&t, start + 1800)[0].2, 2);
        assert_eq!(counts(&t, start + AUDIT_WINDOW_SECONDS + 120)[0].2, 1);
        assert!(counts(&t, start + 1800 + AUDIT_WINDOW_SECONDS + 120).is_empty());
    }

    #[test]
    fn the_report_is_bounded() {
        let t = WouldDenyTally::default();
        for i in 0..(MAX_KEYS + 10) {
            record(&t, "p", &format!("r{i}"), 1_000_000);
        }
        assert_eq!(t.summary(1_000_000).len(), MAX_WOULD_DENY);
        assert_eq!(t.lock()[0].1.len(), MAX_KEYS);
    }
}
