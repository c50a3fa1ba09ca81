//! Open server-to-client event streams the proxy can add events to, and the
//! legacy (2024-11-05) sessions among them.
//!
//! In the legacy transport a POST only gets `202 Accepted`; its response
//! travels on the session's SSE stream. A denial must take the same way, so
//! each legacy session is registered here under the endpoint URL the
//! upstream announced, with the sender that feeds its stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// How many proxy events may wait for a slow client before more are dropped.
const INJECT_BUFFER: usize = 64;

/// The open streams.
#[derive(Default)]
pub(crate) struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    legacy: Mutex<HashMap<String, Arc<LegacySession>>>,
}

/// A legacy session: where its responses go, and which of its requests are
/// `tools/list` calls whose responses must be filtered.
pub(crate) struct LegacySession {
    /// The endpoint URL (path and query) the client POSTs to; also the
    /// session's identity for rate-limit keys.
    pub endpoint: String,
    /// Feeds the session's SSE stream.
    pub inject: mpsc::Sender<Bytes>,
    pending_lists: Mutex<HashMap<String, Option<String>>>,
}

impl LegacySession {
    /// Notes that the response to request `id` is a `tools/list` result,
    /// asked for by `subject` (what it may see depends on who asks).
    pub(crate) fn expect_list(&self, id: &serde_json::Value, subject: Option<&str>) {
        self.lock()
            .insert(id.to_string(), subject.map(str::to_owned));
    }

    /// If `id` answers a pending `tools/list`, who asked; forgets it.
    pub(crate) fn take_list(&self, id: &serde_json::Value) -> Option<Option<String>> {
        self.lock().remove(&id.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.pending_lists.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Unregisters a stream (and its legacy session) when dropped.
pub(crate) struct StreamGuard {
    streams: Arc<Streams>,
    id: u64,
    legacy: Option<String>,
    metrics: Metrics,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams.lock_open().remove(&self.id);
        if let Some(endpoint) = &self.legacy {
            self.streams.lock_legacy().remove(endpoint);
        }
        self.metrics.streams.dec();
    }
}

impl Streams {
    /// Registers a new stream: its guard, the receiver the relay reads
    /// proxy events from, and a sender to feed it.
    pub(crate) fn open(
        self: &Arc<Self>,
        metrics: &Metrics,
    ) -> (StreamGuard, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel(INJECT_BUFFER);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_open().insert(id, tx.clone());
        metrics.streams.inc();
        let guard = StreamGuard {
            streams: self.clone(),
            id,
            legacy: None,
            metrics: metrics.clone(),
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
}
