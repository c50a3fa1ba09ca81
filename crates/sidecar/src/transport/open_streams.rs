//! Open server-to-client event streams the proxy can add events to, and the
//! legacy (2024-11-05) sessions among them.
//!
//! In the legacy transport a POST only gets `202 Accepted`; its response
//! travels on the session's SSE stream. A denial must take the same way, so
//! each legacy session is registered here under the endpoint URL the
//! upstream announced, with the sender that feeds its stream.
//!
//! A stream holds a client connection (and an upstream one) for as long as
//! it is open, so streams are bounded: at most `total` at once, each caller
//! ([`CallerKey`]: subject, else session) at most `per_caller`, and every
//! stream with neither (legacy clients without identity) together at most
//! half of `total`. So streams never take every connection slot, and one
//! caller opening streams leaves room for everyone else's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tollgate_policy::budget::ratelimit::BucketKey;
use tollgate_policy::budget::{CallerKey, TableStats};

use crate::metrics::Metrics;

/// How many proxy events may wait for a slow client before more are dropped.
const INJECT_BUFFER: usize = 64;

/// How many `tools/list` requests of one legacy session may await their
/// answer; past that the session's new lists are refused, not forwarded
/// unfiltered.
pub(crate) const MAX_PENDING_LISTS: usize = 1024;

/// How many streams may be open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// At once, over all callers.
    pub total: usize,
    /// At once, for one caller with a subject or a session.
    pub per_caller: usize,
}

/// The open streams.
pub(crate) struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    legacy: Mutex<HashMap<String, Arc<LegacySession>>>,
    limits: StreamLimits,
    held: Mutex<Held>,
}

/// Streams reserved, per caller, and the reservations refused.
#[derive(Default)]
struct Held {
    total: usize,
    by_caller: HashMap<CallerKey, usize>,
    refused_caller: u64,
    refused_total: u64,
}

/// A reserved place for one stream, given back when dropped.
pub(crate) struct StreamPermit {
    streams: Arc<Streams>,
    caller: CallerKey,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut held = self.streams.lock_held();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

/// A legacy session: where its responses go, and which of its requests are
/// `tools/list` calls whose responses must be filtered.
pub(crate) struct LegacySession {
    /// The endpoint URL (path and query) the client POSTs to; also the
    /// session's identity for rate-limit keys.
    endpoint: String,
    /// Feeds the session's SSE stream.
    inject: mpsc::Sender<Bytes>,
    /// Pending `tools/list` requests by a digest of their id, with who asked.
    pending_lists: Mutex<HashMap<BucketKey, Option<String>>>,
}

/// A request id as a pending list is kept by.
fn id_key(id: &serde_json::Value) -> BucketKey {
    BucketKey::of([id.to_string().as_bytes()])
}

impl LegacySession {
    /// The endpoint (path and query) the client POSTs to: the session's
    /// identity, for rate-limit keys.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `message` to the client as a `message` event on the session's
    /// stream; false when the stream is gone.
    pub(crate) async fn answer(&self, message: &serde_json::Value) -> bool {
        let event = tollgate_mcp::sse::encode(Some("message"), None, &message.to_string());
        self.inject.send(event).await.is_ok()
    }

    /// Notes that the responses to requests `ids` are `tools/list` results,
    /// asked for by `subject` (what it may see depends on who asks). False,
    /// noting none, when the session has too many lists pending.
    pub(crate) fn expect_lists(&self, ids: &[serde_json::Value], subject: Option<&str>) -> bool {
        let mut pending = self.lock();
        if pending.len() + ids.len() > MAX_PENDING_LISTS {
            return false;
        }
        for id in ids {
            pending.insert(id_key(id), subject.map(str::to_owned));
        }
        true
    }

    /// If `id` answers a pending `tools/list`, who asked; forgets it.
    pub(crate) fn take_list(&self, id: &serde_json::Value) -> Option<Option<String>> {
        self.lock().remove(&id_key(id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Option<String>>> {
        self.pending_lists.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Unregisters a stream (and its legacy session) when dropped.
pub(crate) struct StreamGuard {
    streams: Arc<Streams>,
    id: u64,
    legacy: Option<String>,
    metrics: Metrics,
    _permit: StreamPermit,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams.lock_open().remove(&self.id);
        if let Some(endpoint) = &self.legacy {
            self.streams.lock_legacy().remove(endpoint);
        }
        self.metrics.stream_closed();
    }
}

impl Streams {
    /// No streams, room for `limits`.
    pub(crate) fn new(limits: StreamLimits) -> Self {
        Streams {
            next: AtomicU64::new(0),
            open: Mutex::default(),
            legacy: Mutex::default(),
            limits,
            held: Mutex::default(),
        }
    }

    /// Reserves a place for one stream of `caller`, or says which bound is
    /// full.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        caller: CallerKey,
    ) -> Result<StreamPermit, StreamsFull> {
        let mut held = self.lock_held();
        let theirs = held.by_caller.get(&caller).copied().unwrap_or(0);
        let share = if caller == CallerKey::ANONYMOUS {
            (self.limits.total / 2).max(1)
        } else {
            self.limits.per_caller
        };
        if theirs >= share {
            held.refused_caller += 1;
            return Err(StreamsFull::Caller(share));
        }
        if held.total >= self.limits.total {
            held.refused_total += 1;
            return Err(StreamsFull::Total(self.limits.total));
        }
        held.total += 1;
        *held.by_caller.entry(caller).or_default() += 1;
        Ok(StreamPermit {
            streams: self.clone(),
            caller,
        })
    }

    /// Streams reserved, and reservations refused, for metrics.
    pub(crate) fn stats(&self) -> TableStats {
        let held = self.lock_held();
        TableStats {
            entries: held.total,
            refused_caller: held.refused_caller,
            refused_total: held.refused_total,
        }
    }

    /// Registers a new stream in the place `permit` reserved: its guard,
    /// the receiver the relay reads proxy events from, and a sender to
    /// feed it.
    pub(crate) fn open(
        self: &Arc<Self>,
        metrics: &Metrics,
        permit: StreamPermit,
    ) -> (StreamGuard, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel(INJECT_BUFFER);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_open().insert(id, tx.clone());
        metrics.stream_opened();
        let guard = StreamGuard {
            streams: self.clone(),
            id,
            legacy: None,
            metrics: metrics.clone(),
            _permit: permit,
        };
        (guard, rx, tx)
    }

    /// Makes the stream of `guard` a legacy session reachable at `endpoint`.
    pub(crate) fn register_legacy(
        &self,
        guard: &mut StreamGuard,
        endpoint: String,
        inject: mpsc::Sender<Bytes>,
    ) -> Arc<LegacySession> {
        let session = Arc::new(LegacySession {
            endpoint: endpoint.clone(),
            inject,
            pending_lists: Mutex::new(HashMap::new()),
        });
        self.lock_legacy().insert(endpoint.clone(), session.clone());
        guard.legacy = Some(endpoint);
        session
    }

    /// The legacy session whose endpoint is `path_and_query`, if any.
    pub(crate) fn legacy(&self, path_and_query: &str) -> Option<Arc<LegacySession>> {
        self.lock_legacy().get(path_and_query).cloned()
    }

    /// Sends `event` on every open stream; a stream whose client is not
    /// reading misses it rather than holding up the others.
    pub(crate) fn broadcast(&self, event: Bytes) {
        for tx in self.lock_open().values() {
            let _ = tx.try_send(event.clone());
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_legacy(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LegacySession>>> {
        self.legacy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which bound refused a stream, with its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamsFull {
    /// The caller has this many streams open.
    #[error("this caller already has {0} event streams open; close one first")]
    Caller(usize),
    /// The proxy has this many streams open.
    #[error("the proxy already holds {0} event streams open; retry later")]
    Total(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(total: usize, per_caller: usize) -> Arc<Streams> {
        Arc::new(Streams::new(StreamLimits { total, per_caller }))
    }

    #[test]
    fn one_caller_holds_at_most_its_share_and_gets_it_back() {
        let s = streams(10, 2);
        let hostile = CallerKey::new(None, Some("hostile"));
        let first = s.reserve(hostile).unwrap();
        let _second = s.reserve(hostile).unwrap();
        assert_eq!(s.reserve(hostile).err(), Some(StreamsFull::Caller(2)));
        assert!(s.reserve(CallerKey::new(Some("alice"), None)).is_ok());
        drop(first);
        assert!(s.reserve(hostile).is_ok());
        assert_eq!(s.stats().refused_caller, 1);
    }

    #[test]
    fn the_anonymous_share_is_half_and_the_total_is_a_ceiling() {
        let s = streams(4, 4);
        let anonymous: Vec<_> = (0..2)
            .map(|_| s.reserve(CallerKey::ANONYMOUS).unwrap())
            .collect();
        assert_eq!(
            s.reserve(CallerKey::ANONYMOUS).err(),
            Some(StreamsFull::Caller(2))
        );
        let _a = s.reserve(CallerKey::new(None, Some("a"))).unwrap();
        let _b = s.reserve(CallerKey::new(None, Some("b"))).unwrap();
        assert_eq!(
            s.reserve(CallerKey::new(None, Some("c"))).err(),
            Some(StreamsFull::Total(4))
        );
        drop(anonymous);
        assert_eq!(s.stats().entries, 2);
    }

    #[test]
    fn a_legacy_session_refuses_lists_past_its_bound() {
        let (tx, _rx) = mpsc::channel(1);
        let session = LegacySession {
            endpoint: "/message?sessionId=x".into(),
            inject: tx,
            pending_lists: Mutex::default(),
        };
        let ids: Vec<serde_json::Value> = (0..MAX_PENDING_LISTS).map(|i| i.into()).collect();
        assert!(session.expect_lists(&ids, Some("bob")));
        assert!(!session.expect_lists(&[serde_json::Value::from("one more")], None));
        assert_eq!(session.take_list(&5.into()), Some(Some("bob".to_owned())));
        assert!(session.expect_lists(&[serde_json::Value::from("one more")], None));
        assert_eq!(session.take_list(&5.into()), None);
    }
}
