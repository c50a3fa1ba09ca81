//! MCP sessions the upstream issued through this proxy.
//!
//! A rate limit keyed by session must not be escapable by inventing session
//! ids, so only ids seen in the upstream's own `initialize` response (or
//! legacy `endpoint` event) count as sessions; any other id is treated as no
//! session, which shares one budget.
//!
//! The table is bounded and every operation is O(1): at most
//! [`MAX_SESSIONS`] are remembered, the least recently used forgotten first
//! (a linked hash map keeps them in order of use), and one verified subject
//! holds at most [`MAX_SESSIONS_PER_SUBJECT`] of them (its own least
//! recently used go first), so a subject opening sessions cannot push
//! everyone else's out. Callers without a subject cannot be told apart:
//! together they can fill the table. Ids are kept as 16-byte digests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LruCache;
use tollgate_policy::budget::TableStats;
use tollgate_policy::budget::ratelimit::BucketKey;

/// The most sessions remembered; the least recently used go first.
pub(crate) const MAX_SESSIONS: usize = 65_536;
/// The most sessions remembered for one verified subject.
pub(crate) const MAX_SESSIONS_PER_SUBJECT: usize = 64;
/// A session unused this long is forgotten.
pub(crate) const IDLE: Duration = Duration::from_secs(24 * 3600);

/// A session id or subject, as a digest.
type Key = [u8; 16];

fn key(kind: &[u8], text: &str) -> Key {
    BucketKey::of([kind, text.as_bytes()]).0
}

/// Known session ids with their last use.
pub struct Sessions {
    table: Mutex<Table>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

struct Table {
    /// Every session, least recently used first.
    seen: LruCache<Key, Seen>,
    /// Each subject's sessions, least recently used first.
    subjects: HashMap<Key, LruCache<Key, ()>>,
    /// Sessions forgotten to make room: for a subject over its share, or
    /// for a full table.
    forgot_subject: u64,
    forgot_total: u64,
}

struct Seen {
    last: Instant,
    subject: Option<Key>,
}

impl Sessions {
    /// No sessions.
    pub fn new() -> Self {
        Sessions {
            table: Mutex::new(Table {
                seen: LruCache::new_unbounded(),
                subjects: HashMap::new(),
                forgot_subject: 0,
                forgot_total: 0,
            }),
        }
    }

    /// Remembers a session the upstream issued to a caller with `subject`.
    pub fn insert(&self, id: &str, subject: Option<&str>, now: Instant) {
        let mut guard = self.lock();
        let t = &mut *guard;
        let id = key(b"session", id);
        t.forget_idle(now);
        t.forget(&id);
        let subject = subject.map(|s| key(b"subject", s));
        if let Some(subject) = subject {
            let theirs = t
                .subjects
                .entry(subject)
                .or_insert_with(LruCache::new_unbounded);
            let oldest = (theirs.len() >= MAX_SESSIONS_PER_SUBJECT)
                .then(|| theirs.remove_lru())
                .flatten();
            theirs.insert(id, ());
            if let Some((oldest, ())) = oldest {
                t.seen.remove(&oldest);
                t.forgot_subject += 1;
            }
        }
        if t.seen.len() >= MAX_SESSIONS
            && let Some((oldest, seen)) = t.seen.remove_lru()
        {
            t.unlink(&oldest, seen.subject);
            t.forgot_total += 1;
        }
        t.seen.insert(id, Seen { last: now, subject });
    }

    /// Whether `id` is a session the upstream issued and used within
    /// [`IDLE`]; marks it used.
    pub fn touch(&self, id: &str, now: Instant) -> bool {
        let mut guard = self.lock();
        let t = &mut *guard;
        let id = key(b"session", id);
        let Some(seen) = t.seen.get_mut(&id) else {
            return false;
        };
        if now.saturating_duration_since(seen.last) >= IDLE {
            t.forget(&id);
            return false;
        }
        seen.last = now;
        if let Some(subject) = seen.subject
            && let Some(theirs) = t.subjects.get_mut(&subject)
        {
            theirs.get(&id);
        }
        true
    }

    /// Forgets a session (after DELETE).
    pub fn remove(&self, id: &str) {
        self.lock().forget(&key(b"session", id));
    }

    /// How many sessions are known.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no session is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions known, and forgotten to make room, for metrics.
    pub(crate) fn stats(&self) -> TableStats {
        let t = self.lock();
        TableStats {
            entries: t.seen.len(),
            refused_caller: t.forgot_subject,
            refused_total: t.forgot_total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Forgets sessions idle for [`IDLE`]: the least recently used first,
    /// so it stops at the first one still in use.
    fn forget_idle(&mut self, now: Instant) {
        while let Some((id, seen)) = self.seen.iter().next() {
            if now.saturating_duration_since(seen.last) < IDLE {
                break;
            }
            let id = *id;
            self.forget(&id);
        }
    }

    fn forget(&mut self, id: &Key) {
        if let Some(seen) = self.seen.remove(id) {
            self.unlink(id, seen.subject);
        }
    }

    /// Removes `id` from its subject's sessions.
    fn unlink(&mut self, id: &Key, subject: Option<Key>) {
        let Some(subject) = subject else { return };
        if let Some(theirs) = self.subjects.get_mut(&subject) {
            theirs.remove(id);
            if theirs.is_empty() {
                self.subjects.remove(&subject);
            }
        }
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
        s.insert("issued", None, now);
        assert!(s.touch("issued", now));
        s.remove("issued");
        assert!(!s.touch("issued", now));
    }

    #[test]
    fn idle_sessions_are_forgotten() {
        let s = Sessions::new();
        let t0 = Instant::now();
        s.insert("a", None, t0);
        assert!(s.touch("a", t0 + IDLE / 2));
        assert!(!s.touch("a", t0 + IDLE / 2 + IDLE));
        assert_eq!(s.len(), 0);
        // An idle session goes when a new one arrives, used ones stay.
        s.insert("old", None, t0);
        s.insert("used", None, t0);
        assert!(s.touch("used", t0 + IDLE / 2));
        s.insert("new", None, t0 + IDLE);
        assert_eq!(s.len(), 2);
        assert!(s.touch("used", t0 + IDLE));
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used() {
        let s = Sessions::new();
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS {
            s.insert(&i.to_string(), None, t0);
        }
        // Session 0 is in use; 1 is the least recently used now.
        assert!(s.touch("0", t0));
        s.insert("newcomer", None, t0);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.touch("0", t0) && s.touch("newcomer", t0));
        assert!(!s.touch("1", t0));
        assert_eq!(s.stats().refused_total, 1);
    }

    #[test]
    fn a_subject_opening_sessions_pushes_out_only_its_own() {
        let s = Sessions::new();
        let t0 = Instant::now();
        s.insert("honest", Some("bob"), t0);
        s.insert("anonymous", None, t0);
        for i in 0..MAX_SESSIONS_PER_SUBJECT * 4 {
            s.insert(&format!("hostile-{i}"), Some("mallory"), t0);
        }
        assert_eq!(s.len(), MAX_SESSIONS_PER_SUBJECT + 2);
        assert!(s.touch("honest", t0) && s.touch("anonymous", t0));
        // Mallory keeps her most recent sessions.
        let last = MAX_SESSIONS_PER_SUBJECT * 4 - 1;
        assert!(s.touch(&format!("hostile-{last}"), t0));
        assert!(!s.touch("hostile-0", t0));
        assert_eq!(
            s.stats().refused_caller,
            (MAX_SESSIONS_PER_SUBJECT * 3) as u64
        );
        // A session she uses moves to the back of her line.
        let first_kept = MAX_SESSIONS_PER_SUBJECT * 3;
        assert!(s.touch(&format!("hostile-{first_kept}"), t0));
        s.insert("hostile-more", Some("mallory"), t0);
        assert!(s.touch(&format!("hostile-{first_kept}"), t0));
        assert!(!s.touch(&format!("hostile-{}", first_kept + 1), t0));
    }

    #[test]
    fn a_session_issued_again_is_one_session() {
        let s = Sessions::new();
        let t0 = Instant::now();
        s.insert("same", Some("bob"), t0);
        s.insert("same", Some("bob"), t0);
        s.insert("same", None, t0);
        assert_eq!(s.len(), 1);
        s.remove("same");
        assert_eq!(s.len(), 0);
        assert_eq!(s.stats(), TableStats::default());
    }
}
