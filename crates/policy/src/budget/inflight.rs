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
//!
//! Running VMs per caller cannot be counted from the cluster: nothing there
//! says who started a VM. So the store also remembers which VMs it let each
//! caller start (`per: Caller` claims name them), and counts those that the
//! controller's running set (VirtualMachineInstances) still holds
//! ([`super::starters`]). This is the sidecar's own knowledge: calls
//! through another replica are not seen.
//!
//! What the store remembers is bounded: each admission keeps a 16-byte
//! digest of its key (never the agent's namespace text), at most
//! [`MAX_RECORDS`] are kept, and one caller may hold at most
//! [`MAX_RECORDS_PER_CALLER`] of them. A call that would pass a bound is
//! refused (`crowded`), never admitted unremembered: an admission the store
//! forgot would let the next call past the cap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::resources::CloneCounts;
use crate::spec::InFlightScope;

use super::caller::{CallerKey, TableStats};
use super::ratelimit::BucketKey;
use super::starters::Starters;

/// How long after an admission the controller's count is trusted to
/// include it.
pub(crate) const SETTLE: Duration = Duration::from_secs(3);

/// The most admissions remembered at once. Each is one claim of one
/// admitted call, kept until the cluster count includes it (or, without
/// one, for `assume_done_after`); its key is kept as a 16-byte digest.
pub(crate) const MAX_RECORDS: usize = 65_536;

/// The most admissions one caller ([`CallerKey`]) may have remembered: a
/// caller spraying namespaces is refused once it holds this many, and
/// every other caller keeps finding room.
pub(crate) const MAX_RECORDS_PER_CALLER: usize = MAX_RECORDS / 16;

/// What a claim counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Counted {
    /// VirtualMachineClones in flight.
    #[default]
    Clones,
    /// Running VMs (VirtualMachineInstances).
    RunningVms,
}

/// One object class a call wants to add to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// What is counted.
    pub counted: Counted,
    /// Counted over.
    pub scope: InFlightScope,
    /// Namespace, `namespace/source`, or `""` for the cluster.
    pub key: String,
    /// The cap.
    pub max: u32,
    /// How many the call adds.
    pub cost: u32,
    /// For running VMs: which (`namespace/name`), to count a caller's VMs
    /// while they run.
    pub vms: Vec<String>,
}

/// Which of the controller's counts its watches vouch for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Covers {
    /// The VirtualMachineClone watch is current.
    pub clones: bool,
    /// The VirtualMachineInstance watch is current.
    pub running: bool,
}

impl Covers {
    /// Both watches current.
    pub const ALL: Covers = Covers {
        clones: true,
        running: true,
    };
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
    /// The cap had room, but the store keeps no more admissions for this
    /// caller (or at all) until some settle.
    pub crowded: bool,
}

/// A store of in-flight counts.
pub trait InFlight: Send + Sync {
    /// Admits every claim, or none; the admissions it remembers count
    /// against `caller`'s share.
    fn try_claim(
        &self,
        claims: &[Claim],
        caller: CallerKey,
        now: SystemTime,
    ) -> Result<Ticket, Full>;
    /// Takes back an admission (the call was refused after all).
    fn release(&self, ticket: Ticket);
    /// Whether every claim would be admitted, taking nothing (for `Audit`
    /// policies, which report but never block).
    fn check(&self, claims: &[Claim], now: SystemTime) -> Result<(), Full>;
}

/// One remembered admission.
#[derive(Debug)]
struct Pending {
    ticket: u64,
    at: SystemTime,
    counted: Counted,
    scope: InFlightScope,
    key: BucketKey,
    cost: u32,
    caller: CallerKey,
}

#[derive(Debug, Default)]
struct State {
    /// The controller's counts as last vouched for by the clone watch, and
    /// by the VMI watch: each count comes from its own watch, and a report
    /// in which one watch is not current leaves that count as it was.
    clones: Option<(CloneCounts, SystemTime)>,
    running: Option<(CloneCounts, SystemTime)>,
    /// The running VMs (`namespace/name`) as last vouched for by the VMI
    /// watch.
    running_vms: HashSet<String>,
    /// Which caller was let start which VM.
    started: Starters,
    /// In ticket order, which is admission order.
    pending: VecDeque<Pending>,
    /// The sum of `pending` costs per scope and key.
    sums: HashMap<(Counted, InFlightScope, BucketKey), u32>,
    /// `pending` records per caller.
    held: HashMap<CallerKey, usize>,
    next: u64,
    refused_caller: u64,
    refused_total: u64,
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

/// The digest a claim's key is remembered by.
fn digest(key: &str) -> BucketKey {
    BucketKey::of([key.as_bytes()])
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

    /// The controller's latest counts, observed at `observed_at`, both
    /// clones and running VMs vouched for.
    pub fn set_cluster(&self, counts: CloneCounts, observed_at: SystemTime) {
        self.set_observed(counts, observed_at, Covers::ALL);
    }

    /// The controller's latest counts, of which only what `covers` names is
    /// vouched for (its watch is current); for the rest the last vouched
    /// count stays (or none, which counts only this sidecar's admissions).
    pub fn set_observed(&self, counts: CloneCounts, observed_at: SystemTime, covers: Covers) {
        let mut s = self.lock();
        match (covers.clones, covers.running) {
            (true, true) => {
                s.running = Some((counts.clone(), observed_at));
                s.clones = Some((counts, observed_at));
            }
            (true, false) => s.clones = Some((counts, observed_at)),
            (false, true) => s.running = Some((counts, observed_at)),
            (false, false) => {}
        }
    }

    /// The VMs the controller's current VMI watch sees running, observed at
    /// `observed_at`: what callers' running counts are read against.
    pub fn set_running_vms(&self, vms: impl IntoIterator<Item = String>, observed_at: SystemTime) {
        self.running_vms_are(vms);
        self.observe_running_vms(observed_at);
    }

    /// The VMs the controller reports running, not yet vouched for.
    pub fn running_vms_are(&self, vms: impl IntoIterator<Item = String>) {
        self.lock().running_vms = vms.into_iter().collect();
    }

    /// The running VMs held are vouched for as of `observed_at` (by a
    /// current VMI watch): starts are forgotten as [`super::starters`]
    /// says.
    pub fn observe_running_vms(&self, observed_at: SystemTime) {
        let mut s = self.lock();
        let State {
            running_vms,
            started,
            ..
        } = &mut *s;
        started.observe(running_vms, observed_at);
    }

    /// In flight now under `scope`/`key`.
    pub fn count(&self, scope: InFlightScope, key: &str, now: SystemTime) -> u32 {
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        s.current(Counted::Clones, scope, key)
    }

    /// Running VMs now under `scope`/`key`, with this sidecar's own starts.
    pub fn running(&self, scope: InFlightScope, key: &str, now: SystemTime) -> u32 {
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        s.current(Counted::RunningVms, scope, key)
    }

    /// Remembered admissions and refused ones, for metrics.
    pub fn stats(&self) -> TableStats {
        let s = self.lock();
        TableStats {
            entries: s.pending.len(),
            refused_caller: s.refused_caller,
            refused_total: s.refused_total,
        }
    }

    /// Forgets admissions the cluster count includes by now (or, without
    /// one, that are old enough). Admissions are in time order, so this
    /// looks only at the oldest; should the clock step back, a younger
    /// admission may be kept a little longer, which only counts more.
    fn forget_settled(&self, s: &mut State, now: SystemTime) {
        let keep_for = self.assume_done_after;
        let (clones, running) = (s.observed(Counted::Clones), s.observed(Counted::RunningVms));
        let settled = |p: &Pending| match if p.counted == Counted::Clones {
            clones
        } else {
            running
        } {
            Some(observed) => observed.duration_since(p.at).is_ok_and(|d| d >= SETTLE),
            None => now.duration_since(p.at).is_ok_and(|d| d >= keep_for),
        };
        while s.pending.front().is_some_and(settled) {
            if let Some(p) = s.pending.pop_front() {
                s.forget(&p);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The controller's counts as last vouched for `counted`, and when.
    fn vouched(&self, counted: Counted) -> Option<&(CloneCounts, SystemTime)> {
        match counted {
            Counted::Clones => self.clones.as_ref(),
            Counted::RunningVms => self.running.as_ref(),
        }
    }

    /// When the controller last vouched for its count of `counted`.
    fn observed(&self, counted: Counted) -> Option<SystemTime> {
        self.vouched(counted).map(|(_, at)| *at)
    }

    fn current(&self, counted: Counted, scope: InFlightScope, key: &str) -> u32 {
        let base = self
            .vouched(counted)
            .map_or(0, |(c, _)| match (counted, scope) {
                (Counted::Clones, InFlightScope::Namespace) => {
                    c.by_namespace.get(key).copied().unwrap_or(0)
                }
                (Counted::Clones, InFlightScope::Source) => {
                    c.by_source.get(key).copied().unwrap_or(0)
                }
                (Counted::Clones, InFlightScope::Cluster) => c.total,
                // Refused when compiled: clones are not attributed to callers.
                (Counted::Clones, InFlightScope::Caller) => 0,
                (Counted::RunningVms, InFlightScope::Namespace) => {
                    c.running_by_namespace.get(key).copied().unwrap_or(0)
                }
                (Counted::RunningVms, InFlightScope::Caller) => {
                    let running = self.started.running(&digest(key), &self.running_vms);
                    u32::try_from(running).unwrap_or(u32::MAX)
                }
                (Counted::RunningVms, _) => c.running_total,
            });
        base + self
            .sums
            .get(&(counted, scope, digest(key)))
            .copied()
            .unwrap_or(0)
    }

    /// The first claim that does not fit, if any.
    fn fits(&self, claims: &[Claim]) -> Result<(), Full> {
        for (index, c) in claims.iter().enumerate() {
            let current = self.current(c.counted, c.scope, &c.key);
            if current + c.cost > c.max {
                return Err(Full {
                    index,
                    current,
                    crowded: false,
                });
            }
        }
        Ok(())
    }

    /// Whether `caller` may have `more` admissions remembered.
    fn room(&mut self, claims: &[Claim], caller: CallerKey) -> Result<(), Full> {
        let more = claims.len();
        let held = self.held.get(&caller).copied().unwrap_or(0);
        // Starts per caller are remembered by the caller the cap counts
        // (the verified subject), for as long as their VMs run.
        let starts = |c: &Claim| (c.scope == InFlightScope::Caller).then_some(c.vms.len());
        let started = claims.iter().filter_map(starts).sum::<usize>();
        let starters_full = claims.iter().any(|c| {
            starts(c).is_some()
                && self.started.of(&digest(&c.key)) + c.vms.len() > MAX_RECORDS_PER_CALLER
        });
        let crowded = if held + more > MAX_RECORDS_PER_CALLER || starters_full {
            self.refused_caller += 1;
            true
        } else if self.pending.len() + more > MAX_RECORDS
            || self.started.len() + started > MAX_RECORDS
        {
            self.refused_total += 1;
            true
        } else {
            false
        };
        match claims.first() {
            Some(c) if crowded => Err(Full {
                index: 0,
                current: self.current(c.counted, c.scope, &c.key),
                crowded,
            }),
            _ => Ok(()),
        }
    }

    fn forget(&mut self, p: &Pending) {
        let k = (p.counted, p.scope, p.key);
        if let Some(sum) = self.sums.get_mut(&k) {
            *sum = sum.saturating_sub(p.cost);
            if *sum == 0 {
                self.sums.remove(&k);
            }
        }
        if let Some(n) = self.held.get_mut(&p.caller) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&p.caller);
            }
        }
    }
}

impl InFlight for MemoryInFlight {
    fn try_claim(
        &self,
        claims: &[Claim],
        caller: CallerKey,
        now: SystemTime,
    ) -> Result<Ticket, Full> {
        if claims.is_empty() {
            return Ok(Ticket(0));
        }
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        s.fits(claims)?;
        s.room(claims, caller)?;
        s.next += 1;
        let ticket = s.next;
        for c in claims {
            let key = digest(&c.key);
            *s.sums.entry((c.counted, c.scope, key)).or_default() += c.cost;
            *s.held.entry(caller).or_default() += 1;
            s.pending.push_back(Pending {
                ticket,
                at: now,
                counted: c.counted,
                scope: c.scope,
                key,
                cost: c.cost,
                caller,
            });
            if c.scope == InFlightScope::Caller {
                for vm in &c.vms {
                    s.started.insert(vm, key, ticket, now);
                }
            }
        }
        Ok(Ticket(ticket))
    }

    fn release(&self, ticket: Ticket) {
        if ticket.0 == 0 {
            return;
        }
        let mut s = self.lock();
        // A ticket's admissions sit together, in ticket order.
        let start = s.pending.partition_point(|p| p.ticket < ticket.0);
        let end = s.pending.partition_point(|p| p.ticket <= ticket.0);
        let released: Vec<Pending> = s.pending.drain(start..end).collect();
        for p in &released {
            s.forget(p);
        }
        s.started.release(ticket.0);
    }

    fn check(&self, claims: &[Claim], now: SystemTime) -> Result<(), Full> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        self.forget_settled(&mut s, now);
        s.fits(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, max: u32, cost: u32) -> Claim {
        Claim {
            counted: Counted::Clones,
            scope: InFlightScope::Namespace,
            key: key.into(),
            max,
            cost,
            vms: Vec::new(),
        }
    }

    fn anyone() -> CallerKey {
        CallerKey::ANONYMOUS
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn own_admissions_count_until_the_cluster_count_includes_them() {
        let s = MemoryInFlight::default();
        s.set_cluster(CloneCounts::default(), at(0));
        for _ in 0..5 {
            s.try_claim(&[claim("vms", 5, 1)], anyone(), at(1)).unwrap();
        }
        // The watch has not caught up: the burst cannot overshoot.
        assert_eq!(
            s.try_claim(&[claim("vms", 5, 1)], anyone(), at(2)),
            Err(Full {
                index: 0,
                current: 5,
                crowded: false
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
        assert!(s.try_claim(&[claim("vms", 5, 2)], anyone(), at(21)).is_ok());
        assert!(
            s.try_claim(&[claim("vms", 5, 1)], anyone(), at(21))
                .is_err()
        );
        // Other namespaces have their own count.
        assert!(
            s.try_claim(&[claim("other", 5, 5)], anyone(), at(21))
                .is_ok()
        );
    }

    #[test]
    fn a_count_whose_watch_is_not_current_is_not_used() {
        let s = MemoryInFlight::default();
        let running = Claim {
            counted: Counted::RunningVms,
            ..claim("vms", 3, 1)
        };
        // Clone watch current, VMI watch not: the clone count is used and
        // settles clone admissions; the running count (0) is not trusted,
        // so this sidecar's own starts keep counting.
        let counts = CloneCounts {
            by_namespace: [("vms".to_owned(), 2)].into(),
            running_by_namespace: [("vms".to_owned(), 0)].into(),
            total: 2,
            ..Default::default()
        };
        let clones_only = Covers {
            clones: true,
            running: false,
        };
        s.set_observed(counts.clone(), at(0), clones_only);
        // (Admissions settle oldest first: the clone is admitted first.)
        s.try_claim(&[claim("vms", 5, 1)], anyone(), at(1)).unwrap();
        s.try_claim(&[running], anyone(), at(1)).unwrap();
        s.set_observed(counts.clone(), at(10), clones_only);
        assert_eq!(s.count(InFlightScope::Namespace, "vms", at(10)), 2);
        assert_eq!(
            s.running(InFlightScope::Namespace, "vms", at(10)),
            1,
            "the start is not settled by a count nobody vouched for"
        );
        // The reverse: a VMI watch alone says nothing of clones, whose
        // count stays as the clone watch last vouched for it (2, not the
        // report's 7).
        let running_only = Covers {
            clones: false,
            running: true,
        };
        let later = CloneCounts {
            by_namespace: [("vms".to_owned(), 7)].into(),
            total: 7,
            ..counts
        };
        s.set_observed(later, at(20), running_only);
        assert_eq!(s.count(InFlightScope::Namespace, "vms", at(20)), 2);
        assert_eq!(s.running(InFlightScope::Namespace, "vms", at(20)), 0);
    }

    #[test]
    fn all_or_nothing_and_release() {
        let s = MemoryInFlight::default();
        let cluster = Claim {
            counted: Counted::Clones,
            scope: InFlightScope::Cluster,
            key: String::new(),
            max: 3,
            cost: 2,
            vms: Vec::new(),
        };
        let t = s
            .try_claim(&[claim("a", 10, 2), cluster.clone()], anyone(), at(0))
            .unwrap();
        assert_eq!(
            s.try_claim(&[claim("a", 10, 2), cluster.clone()], anyone(), at(0)),
            Err(Full {
                index: 1,
                current: 2,
                crowded: false
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
        s.try_claim(&[claim("a", 1, 1)], anyone(), at(0)).unwrap();
        assert!(s.try_claim(&[claim("a", 1, 1)], anyone(), at(59)).is_err());
        assert!(s.try_claim(&[claim("a", 1, 1)], anyone(), at(60)).is_ok());
    }

    #[test]
    fn one_caller_spraying_namespaces_fills_only_its_own_share() {
        let s = MemoryInFlight::default();
        let hostile = CallerKey::new(None, Some("hostile"));
        for i in 0..MAX_RECORDS_PER_CALLER {
            s.try_claim(&[claim(&format!("ns-{i}"), 5, 1)], hostile, at(0))
                .unwrap();
        }
        assert_eq!(
            s.try_claim(&[claim("ns-new", 5, 1)], hostile, at(1)),
            Err(Full {
                index: 0,
                current: 0,
                crowded: true
            })
        );
        assert!(
            s.try_claim(
                &[claim("ns-new", 5, 1)],
                CallerKey::new(Some("alice"), None),
                at(1)
            )
            .is_ok()
        );
        assert!(
            s.try_claim(&[claim("ns-new", 5, 1)], anyone(), at(1))
                .is_ok()
        );
        let stats = s.stats();
        assert_eq!(stats.entries, MAX_RECORDS_PER_CALLER + 2);
        assert_eq!((stats.refused_caller, stats.refused_total), (1, 0));
        // Its admissions settle, and it has room again.
        assert!(
            s.try_claim(&[claim("ns-new", 5, 1)], hostile, at(600))
                .is_ok()
        );
        assert_eq!(s.stats().entries, 3);
    }

    #[test]
    fn a_long_key_costs_a_digest() {
        let s = MemoryInFlight::default();
        let long = "n".repeat(1 << 20);
        s.try_claim(&[claim(&long, 1, 1)], anyone(), at(0)).unwrap();
        assert_eq!(s.count(InFlightScope::Namespace, &long, at(1)), 1);
        assert_eq!(s.count(InFlightScope::Namespace, "n", at(1)), 0);
        assert!(s.try_claim(&[claim(&long, 1, 1)], anyone(), at(1)).is_err());
    }

    #[test]
    fn a_released_ticket_takes_back_only_its_own_admissions() {
        let s = MemoryInFlight::default();
        let first = s.try_claim(&[claim("a", 9, 1)], anyone(), at(0)).unwrap();
        let second = s
            .try_claim(&[claim("a", 9, 2), claim("b", 9, 3)], anyone(), at(0))
            .unwrap();
        let third = s.try_claim(&[claim("b", 9, 1)], anyone(), at(0)).unwrap();
        s.release(second);
        assert_eq!(s.count(InFlightScope::Namespace, "a", at(0)), 1);
        assert_eq!(s.count(InFlightScope::Namespace, "b", at(0)), 1);
        s.release(first);
        s.release(third);
        assert_eq!(s.stats().entries, 0);
    }

    /// A per-caller claim starting `vm`.
    fn start(caller: &str, vm: &str, max: u32) -> Claim {
        Claim {
            counted: Counted::RunningVms,
            scope: InFlightScope::Caller,
            key: caller.into(),
            max,
            cost: 1,
            vms: vec![vm.into()],
        }
    }

    #[test]
    fn a_callers_running_vms_are_those_it_started_that_still_run() {
        let s = MemoryInFlight::default();
        let counts = CloneCounts::default();
        s.set_cluster(counts.clone(), at(0));
        s.set_running_vms(["vms/other".to_owned()], at(0));
        let running = |who: &str, t: u64| s.running(InFlightScope::Caller, who, at(t));
        // VMs running that nobody started here are nobody's.
        assert_eq!(running("ann", 0), 0);
        s.try_claim(&[start("ann", "vms/a", 2)], anyone(), at(1))
            .unwrap();
        s.try_claim(&[start("ann", "vms/b", 2)], anyone(), at(1))
            .unwrap();
        let full = s.try_claim(&[start("ann", "vms/c", 2)], anyone(), at(1));
        assert_eq!(full.unwrap_err().current, 2);
        // Another caller has a cap of its own.
        s.try_claim(&[start("bob", "vms/d", 2)], anyone(), at(1))
            .unwrap();
        // The controller sees a and d run, and b never started: once its
        // count includes the starts, ann runs one VM and may start another.
        s.set_cluster(counts.clone(), at(5));
        s.set_running_vms(["vms/a".to_owned(), "vms/d".to_owned()], at(5));
        assert_eq!(running("ann", 5), 1);
        assert_eq!(running("bob", 5), 1);
        s.try_claim(&[start("ann", "vms/c", 2)], anyone(), at(6))
            .unwrap();
        assert_eq!(running("ann", 6), 2);
        // a stops: it no longer counts for ann.
        s.set_cluster(counts, at(10));
        s.set_running_vms(["vms/c".to_owned(), "vms/d".to_owned()], at(10));
        assert_eq!(running("ann", 10), 1);
        // A released start is not ann's.
        let t = s
            .try_claim(&[start("ann", "vms/e", 2)], anyone(), at(11))
            .unwrap();
        s.release(t);
        s.set_running_vms(
            ["vms/c".to_owned(), "vms/d".to_owned(), "vms/e".to_owned()],
            at(11),
        );
        assert_eq!(running("ann", 11), 1);
        // b's VMI comes late, long after its start settled: still ann's.
        s.set_cluster(CloneCounts::default(), at(60));
        s.set_running_vms(["vms/b".to_owned(), "vms/c".to_owned()], at(60));
        assert_eq!(running("ann", 60), 2);
    }
}
