//! Connection slots: how many connections a listener serves, what each one
//! is doing, and which one to close when a new client needs a slot.
//!
//! A listener serves at most `max` connections. A connection that is not
//! serving anyone — opened but with no request yet (idle, or sending its
//! headers slowly), stalled in the middle of a request body, or idle
//! between keep-alive requests — holds a slot it does not use. When every
//! slot is taken and a new client arrives, the listener reclaims one of
//! those instead of making the newcomer wait, in this order:
//!
//! 1. a connection that has never had a request (oldest first): honest
//!    clients send their request at once, hostile ones sit;
//! 2. a connection still receiving its request body (oldest request first):
//!    nothing of that request has been acted on yet;
//! 3. an idle keep-alive connection (longest idle first): its client has
//!    been served and opens a new connection when it needs one.
//!
//! A connection with a request in progress (a call waiting for the
//! upstream, an open event stream) is never reclaimed here; its own
//! timeouts and the stream caps bound those. Nor is one that entered its
//! phase less than `reclaim_after` ago: a new client must get the chance
//! to send its request (and a served one its next) before a flood of
//! newcomers can take its slot. When nothing can be reclaimed, newcomers
//! wait (see [`crate::serve`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::label_values;

label_values! {
    /// Why the server closed a client connection to free its slot
    /// (`tollgate_connections_reclaimed_total{reason}`).
    pub enum Reclaim {
        /// Its request headers, or its next request on an idle keep-alive
        /// connection, did not arrive within the header-read timeout.
        HeaderTimeout => "header_timeout",
        /// Reclaimed for a new client: it never sent a complete request.
        Unused => "unused",
        /// Reclaimed for a new client: it stalled while sending a request body.
        HalfSentBody => "half_sent_body",
        /// Reclaimed for a new client: idle between keep-alive requests.
        Idle => "idle",
    }
}

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Open, and no request has started yet.
    Fresh = 0,
    /// A request is being handled or its response sent.
    Busy = 1,
    /// A request's body is being received.
    Receiving = 2,
    /// Served at least one request; none in progress.
    Idle = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Fresh,
            2 => Phase::Receiving,
            3 => Phase::Idle,
            _ => Phase::Busy,
        }
    }

    /// The order in which idle slots are reclaimed; `None`: never.
    fn rank(self) -> Option<u8> {
        match self {
            Phase::Fresh => Some(0),
            Phase::Receiving => Some(1),
            Phase::Idle => Some(2),
            Phase::Busy => None,
        }
    }

    /// The reason a reclaimed connection in this phase is counted under.
    pub(crate) fn reclaim(self) -> Reclaim {
        match self {
            Phase::Fresh => Reclaim::Unused,
            Phase::Receiving => Reclaim::HalfSentBody,
            Phase::Idle | Phase::Busy => Reclaim::Idle,
        }
    }
}

/// One connection's slot, shared by its task, its requests and the
/// listener. Requests find it in their extensions (see
/// [`crate::body::read_request`]).
#[derive(Clone, Debug)]
pub(crate) struct Slot(Arc<SlotState>);

#[derive(Debug)]
struct SlotState {
    id: u64,
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds after `epoch` when the phase began.
    since: AtomicU64,
    /// Requests in progress (more than one only if pipelined).
    busy: AtomicU32,
    /// Chosen to be reclaimed.
    evicting: AtomicBool,
    evict: Notify,
    changed: Arc<Notify>,
}

impl Slot {
    fn set(&self, phase: Phase) {
        let since = self.0.epoch.elapsed().as_millis() as u64;
        self.0.since.store(since, Ordering::Relaxed);
        self.0.phase.store(phase as u8, Ordering::Release);
        if phase.rank().is_some() {
            // The listener may be waiting for a slot it can reclaim.
            self.0.changed.notify_waiters();
        }
    }

    /// What the connection is doing now.
    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.0.phase.load(Ordering::Acquire))
    }

    /// A request started: the slot is in use until the returned guard
    /// (held by the response body) is dropped.
    pub(crate) fn request(&self) -> InUse {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        self.set(Phase::Busy);
        InUse(self.clone())
    }

    /// The request's body is being received until the guard is dropped; a
    /// stalled sender may lose the slot meanwhile.
    pub(crate) fn receiving(&self) -> Receiving {
        if self.phase() == Phase::Busy {
            self.set(Phase::Receiving);
        }
        Receiving(self.clone())
    }

    /// Resolves when the listener chose this connection to be reclaimed.
    pub(crate) async fn evicted(&self) {
        self.0.evict.notified().await
    }
}

/// A request in progress on a slot.
#[derive(Debug)]
pub(crate) struct InUse(Slot);

impl Drop for InUse {
    fn drop(&mut self) {
        if self.0.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.set(Phase::Idle);
        }
    }
}

/// A request body being received on a slot.
#[derive(Debug)]
pub(crate) struct Receiving(Slot);

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.0.phase() == Phase::Receiving {
            self.0.set(Phase::Busy);
        }
    }
}

/// What [`Slots::admit`] did.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A slot for the new connection; `reclaimed` is the phase of a
    /// connection told to close to make room, if one was.
    Admitted {
        slot: Slot,
        reclaimed: Option<Phase>,
    },
    /// Every slot is in use by a request in progress.
    Full,
}

/// Every connection of one listener.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    /// How long a connection stays in a phase before it can be reclaimed.
    reclaim_after: Duration,
    epoch: Instant,
    changed: Arc<Notify>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Slot>,
    /// Of `live`, those told to close (they no longer count against `max`).
    evicting: usize,
}

impl Slots {
    /// Room for `max` connections, reclaiming those that spent at least
    /// `reclaim_after` unused.
    pub(crate) fn new(max: usize, reclaim_after: Duration) -> Self {
        Slots {
            max: max.max(1),
            reclaim_after,
            epoch: Instant::now(),
            changed: Arc::new(Notify::new()),
            inner: Mutex::default(),
        }
    }

    /// A slot for a new connection, reclaiming an unused one if all are
    /// taken.
    pub(crate) fn admit(&self) -> Admission {
        let mut inner = self.lock();
        let mut reclaimed = None;
        if inner.live.len() - inner.evicting >= self.max {
            let Some(victim) = inner.victim(self.ripe()) else {
                return Admission::Full;
            };
            victim.0.evicting.store(true, Ordering::Release);
            victim.0.evict.notify_one();
            reclaimed = Some(victim.phase());
            inner.evicting += 1;
        }
        inner.next += 1;
        let slot = Slot(Arc::new(SlotState {
            id: inner.next,
            epoch: self.epoch,
            phase: AtomicU8::new(Phase::Fresh as u8),
            since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            busy: AtomicU32::new(0),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            changed: self.changed.clone(),
        }));
        inner.live.insert(slot.0.id, slot.clone());
        Admission::Admitted { slot, reclaimed }
    }

    /// Whether [`admit`](Self::admit) would find room now.
    pub(crate) fn has_room(&self) -> bool {
        let inner = self.lock();
        inner.live.len() - inner.evicting < self.max || inner.victim(self.ripe()).is_some()
    }

    /// Waits until [`has_room`](Self::has_room) may have changed.
    pub(crate) async fn wait_for_room(&self) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.has_room() {
            return;
        }
        notified.await;
    }

    /// Frees the slot of a closed connection.
    pub(crate) fn release(&self, slot: &Slot) {
        let mut inner = self.lock();
        if inner.live.remove(&slot.0.id).is_some() && slot.0.evicting.load(Ordering::Acquire) {
            inner.evicting -= 1;
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Open connections (including those being reclaimed).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Phases that began at or before this (milliseconds after `epoch`)
    /// are old enough to be reclaimed; `None` while none can be.
    fn ripe(&self) -> Option<u64> {
        let ripe = self.epoch.elapsed().checked_sub(self.reclaim_after)?;
        Some(ripe.as_millis() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// The connection to reclaim: of those in their phase since `ripe`,
    /// the lowest rank, then the longest in that phase. A linear pass over
    /// at most `max` slots, made only when every slot is taken.
    fn victim(&self, ripe: Option<u64>) -> Option<&Slot> {
        let ripe = ripe?;
        self.live
            .values()
            .filter(|s| !s.0.evicting.load(Ordering::Acquire))
            .filter_map(|s| {
                let rank = s.phase().rank()?;
                let since = s.0.since.load(Ordering::Relaxed);
                (since <= ripe).then_some(((rank, since), s))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(slots: &Slots) -> (Slot, Option<Phase>) {
        match slots.admit() {
            Admission::Admitted { slot, reclaimed } => (slot, reclaimed),
            Admission::Full => panic!("no slot"),
        }
    }

    #[test]
    fn a_full_listener_reclaims_unused_then_half_sent_then_idle_connections() {
        let slots = Slots::new(3, Duration::ZERO);
        let (idle, _) = admitted(&slots);
        let (receiving, _) = admitted(&slots);
        let (busy, _) = admitted(&slots);
        // One served and idle, one stalled in a body, one at work.
        drop(idle.request());
        let _in_use = receiving.request();
        let _body = receiving.receiving();
        let _working = busy.request();
        let (fresh, reclaimed) = admitted(&slots);
        assert_eq!(reclaimed, Some(Phase::Receiving));
        // The newcomer itself has not sent a request: it goes next.
        let (_, reclaimed) = admitted(&slots);
        assert_eq!(reclaimed, Some(Phase::Fresh));
        assert!(fresh.0.evicting.load(Ordering::Acquire));
        let (_, reclaimed) = admitted(&slots);
        assert_eq!(reclaimed, Some(Phase::Fresh));
        assert_eq!(
            slots.len(),
            6,
            "reclaimed connections stay until they close"
        );
        slots.release(&fresh);
        assert_eq!(slots.len(), 5);
    }

    #[test]
    fn connections_at_work_are_never_reclaimed() {
        let slots = Slots::new(2, Duration::ZERO);
        let (a, _) = admitted(&slots);
        let (b, _) = admitted(&slots);
        let _a = a.request();
        let _b = b.request();
        assert!(!slots.has_room());
        assert!(matches!(slots.admit(), Admission::Full));
        // A finished response makes its connection reclaimable.
        drop(_a);
        assert!(slots.has_room());
        let (_, reclaimed) = admitted(&slots);
        assert_eq!(reclaimed, Some(Phase::Idle));
    }

    #[test]
    fn a_received_body_makes_the_connection_busy_again() {
        let slots = Slots::new(1, Duration::ZERO);
        let (a, _) = admitted(&slots);
        let _req = a.request();
        drop(a.receiving());
        assert_eq!(a.phase(), Phase::Busy);
        assert!(matches!(slots.admit(), Admission::Full));
    }

    #[test]
    fn a_connection_new_to_its_phase_is_not_reclaimed_yet() {
        let slots = Slots::new(1, Duration::from_secs(3600));
        let (a, _) = admitted(&slots);
        assert!(
            !slots.has_room(),
            "it has not had the time to send a request"
        );
        drop(a.request());
        assert!(!slots.has_room(), "nor its next one");
    }
}
