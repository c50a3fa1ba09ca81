//! MCP sessions the upstream issued through this proxy.
//!
//! A rate limit keyed by session must not be escapable by inventing session
//! ids, so only ids seen in the upstream's own `initialize` response (or
//! legacy `endpoint` event) count as sessions; any other id is treated as no
//! session, which shares one budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most sessions remembered; the least recently used go first.
pub(crate) const MAX_SESSIONS: usize = 65_536;
/// A session unused this long is forgotten.
pub(crate) const IDLE: Duration = Duration::from_secs(24 * 3600);

/// Known session ids with their last use.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// No sessions.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Remembers a session the upstream issued.
    pub(crate) fn insert(&self, id: &str, now: Instant) {
        let mut seen = self.lock();
        if seen.len() >= MAX_SESSIONS && !seen.contains_key(id) {
            seen.retain(|_, last| now.saturating_duration_since(*last) < IDLE);
            if seen.len() >= MAX_SESSIONS
                && let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(id.to_owned(), now);
    }

    /// Whether `id` is a session the upstream issued and used within
    /// [`IDLE`]; marks it used.
    pub(crate) fn touch(&self, id: &str, now: Instant) -> bool {
        let mut seen = self.lock();
        match seen.get_mut(id) {
            Some(last) if now.saturating_duration_since(*last) < IDLE => {
                *last = now;
                true
            }
            Some(_) => {
                seen.remove(id);
                false
            }
            None => false,
        }
    }

    /// Forgets a session (after DELETE).
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many sessions are known.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_sessions_are_known() {
        let s = Sessions::new();
        let now = Instant::now();
        assert!(!s.touch("made-up", now));
        s.insert("issued", now);
        assert!(s.touch("issued", now));
        s.remove("issued");
        assert!(!s.touch("issued", now));
    }

    #[test]
    fn idle_sessions_are_forgotten() {
        let s = Sessions::new();
        let t0 = Instant::now();
        s.insert("a", t0);
        assert!(s.touch("a", t0 + IDLE / 2));
        assert!(!s.touch("a", t0 + IDLE / 2 + IDLE));
        assert_eq!(s.len(), 0);
    }
}
