//! How many VirtualMachineClones are in flight — created and not yet
//! `Succeeded` or `Failed` — per namespace, per source VM and overall.
//!
//! The cluster's count comes from the controller, which watches
//! `virtualmachineclones.clone.kubevirt.io`; but a watch lags, and a burst of
//! calls arriving before it catches up must not overshoot the cap. So the
//! store also remembers every clone it admitted itself, and keeps counting
//! one until the controller's count was observed at least [`SETTLE`] after
//! the admission — by then the clone (or its failure) is in the count.
//! Without any count from the controller (file mode), an admission counts
//! for `assume_done_after`, the only bound a sidecar blind to the cluster
//! can keep.
//!
//! Time is wall-clock time, since the controller's observations come from
//! another machine; [`SETTLE`] absorbs ordinary clock skew.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::resources::CloneCounts;
use crate::spec::InFlightScope;

/// How long after an admission the controller's count is trusted to
/// include it.
pub const SETTLE: Duration = Duration::from_secs(3);

/// One object class a call wants to add to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Counted over.
    pub scope: InFlightScope,
    /// Namespace, `namespace/source`, or `""` for the cluster.
    pub key: String,
    /// The cap.
    pub max: u32,
    /// How many the call adds.
    pub cost: u32,
}

/// An admission, to release if the call is refused later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// Why a claim was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Full {
    /// Index into the claims.
    pub index: usize,
    /// How many are in flight now.
    pub current: u32,
}

/// A store of in-flight counts.
pub trait InFlight: Send + Sync {
    /// Admits every claim, or none.
    fn try_claim(&self, claims: &[Claim], now: SystemTime) -> Result<Ticket, Full>;
    /// Takes back an admission (the call was refused after all).
    fn release(&self, ticket: Ticket);
    /// Whether every claim would be admitted, taking nothing (for `Audit`
    /// policies, which report but never block).
    fn check(&self, claims: &[Claim], now: SystemTime) -> Result<(), Full>;
}

#[derive(Debug)]
struct Pending {
    ticket: u64,
    at: SystemTime,
    scope: InFlightScope,
    key: String,
    cost: u32,
}

#[derive(Debug, Default)]
struct State {
    cluster: Option<(CloneCounts, SystemTime)>,
    pending: Vec<Pending>,
    next: u64,
}

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryInFlight {
    state: Mutex<State>,
    assume_done_after: Duration,
}

impl Default for MemoryInFlight {
    fn default() -> Self {
        MemoryInFlight::new(Duration::from_secs(600))
    }
}

impl MemoryInFlight {
    /// A store that, without cluster counts, counts its own admissions for
    /// `assume_done_after`.
    pub fn new(assume_done_after: Duration) -> Self {
        MemoryInFlight {
            state: Mutex::default(),
            assume_done_after,
        }
    }

    /// The controller's latest counts, observed at `observed_at`.
    pub fn set_cluster(&self, counts: CloneCounts, observed_at: SystemTime) {
        let mut s = self.lock();
        s.cluster = Some((counts, observed_at));
    }

    /// In flight now under `scope`/`key`.
    pub fn count(&self, scope: InFlightScope, key: &str, now: SystemTime) -> u32 {
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        current(&s, scope, key)
    }

    fn forget_settled(&self, s: &mut State, now: SystemTime) {
        let observed = s.cluster.as_ref().map(|(_, at)| *at);
        let keep_for = self.assume_done_after;
        s.pending.retain(|p| match observed {
            Some(observed) => observed.duration_since(p.at).map_or(true, |d| d < SETTLE),
            None => now.duration_since(p.at).map_or(true, |d| d < keep_for),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn current(s: &State, scope: InFlightScope, key: &str) -> u32 {
    let base = s.cluster.as_ref().map_or(0, |(c, _)| match scope {
        InFlightScope::Namespace => c.by_namespace.get(key).copied().unwrap_or(0),
        InFlightScope::Source => c.by_source.get(key).copied().unwrap_or(0),
        InFlightScope::Cluster => c.total,
    });
    let pending: u32 = s
        .pending
        .iter()
        .filter(|p| p.scope == scope && p.key == key)
        .map(|p| p.cost)
        .sum();
    base + pending
}

impl InFlight for MemoryInFlight {
    fn try_claim(&self, claims: &[Claim], now: SystemTime) -> Result<Ticket, Full> {
        if claims.is_empty() {
            return Ok(Ticket(0));
        }
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        fits(&s, claims)?;
        s.next += 1;
        let ticket = s.next;
        for c in claims {
            s.pending.push(Pending {
                ticket,
                at: now,
                scope: c.scope,
                key: c.key.clone(),
                cost: c.cost,
            });
        }
        Ok(Ticket(ticket))
    }

    fn release(&self, ticket: Ticket) {
        if ticket.0 != 0 {
            self.lock().pending.retain(|p| p.ticket != ticket.0);
        }
    }

    fn check(&self, claims: &[Claim], now: SystemTime) -> Result<(), Full> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        fits(&s, claims)
    }
}

/// The first claim that does not fit, if any.
fn fits(s: &State, claims: &[Claim]) -> Result<(), Full> {
    for (index, c) in claims.iter().enumerate() {
        let current = current(s, c.scope, &c.key);
        if current + c.cost > c.max {
            return Err(Full { index, current });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, max: u32, cost: u32) -> Claim {
        Claim {
            scope: InFlightScope::Namespace,
            key: key.into(),
            max,
            cost,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn own_admissions_count_until_the_cluster_count_includes_them() {
        let s = MemoryInFlight::default();
        s.set_cluster(CloneCounts::default(), at(0));
        for _ in 0..5 {
            s.try_claim(&[claim("vms", 5, 1)], at(1)).unwrap();
        }
        // The watch has not caught up: the burst cannot overshoot.
        assert_eq!(
            s.try_claim(&[claim("vms", 5, 1)], at(2)),
            Err(Full {
                index: 0,
                current: 5
            })
        );
        // The controller now sees the 5 clones (observed well after them).
        let five = CloneCounts {
            by_namespace: [("vms".to_owned(), 5)].into(),
            total: 5,
            ..Default::default()
        };
        s.set_cluster(five, at(10));
        assert_eq!(
            s.count(InFlightScope::Namespace, "vms", at(10)),
            5,
            "not counted twice"
        );
        // Two of them finish.
        let three = CloneCounts {
            by_namespace: [("vms".to_owned(), 3)].into(),
            total: 3,
            ..Default::default()
        };
        s.set_cluster(three, at(20));
        assert!(s.try_claim(&[claim("vms", 5, 2)], at(21)).is_ok());
        assert!(s.try_claim(&[claim("vms", 5, 1)], at(21)).is_err());
        // Other namespaces have their own count.
        assert!(s.try_claim(&[claim("other", 5, 5)], at(21)).is_ok());
    }

    #[test]
    fn all_or_nothing_and_release() {
        let s = MemoryInFlight::default();
        let cluster = Claim {
            scope: InFlightScope::Cluster,
            key: String::new(),
            max: 3,
            cost: 2,
        };
        let t = s
            .try_claim(&[claim("a", 10, 2), cluster.clone()], at(0))
            .unwrap();
        assert_eq!(
            s.try_claim(&[claim("a", 10, 2), cluster.clone()], at(0)),
            Err(Full {
                index: 1,
                current: 2
            })
        );
        assert_eq!(
            s.count(InFlightScope::Namespace, "a", at(0)),
            2,
            "the refused call added nothing"
        );
        s.release(t);
        assert_eq!(s.count(InFlightScope::Cluster, "", at(0)), 0);
    }

    #[test]
    fn without_the_cluster_admissions_count_for_a_while() {
        let s = MemoryInFlight::new(Duration::from_secs(60));
        s.try_claim(&[claim("a", 1, 1)], at(0)).unwrap();
        assert!(s.try_claim(&[claim("a", 1, 1)], at(59)).is_err());
        assert!(s.try_claim(&[claim("a", 1, 1)], at(60)).is_ok());
    }
}
