//! The rules in force, swapped atomically.
//!
//! Requests read the current [`Rules`] without locking (an `ArcSwap`), so a
//! reload never blocks or half-applies: a request sees the old set or the
//! new one, entirely.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use tollgate_policy::PolicySet;

/// One version of the rules.
#[derive(Debug)]
pub struct Rules {
    /// The compiled policies.
    pub set: PolicySet,
    /// When they were loaded.
    pub loaded_at: SystemTime,
    /// With no policies at all: refuse every call (a controller-managed
    /// pod no policy selects) rather than allow it.
    pub deny_when_empty: bool,
}

/// Holds the rules in force and tells listeners when they change.
#[derive(Debug)]
pub struct RuleStore {
    current: ArcSwapOption<Rules>,
    changed: watch::Sender<u64>,
}

impl Default for RuleStore {
    fn default() -> Self {
        RuleStore {
            current: ArcSwapOption::empty(),
            changed: watch::Sender::new(0),
        }
    }
}

impl RuleStore {
    /// A store with no rules yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rules in force, if any have been loaded.
    pub fn current(&self) -> Option<Arc<Rules>> {
        self.current.load_full()
    }

    /// Puts `set` in force. Returns false, changing nothing, if the same
    /// version is already in force.
    pub fn replace(&self, set: PolicySet) -> bool {
        self.replace_with(set, false)
    }

    /// Like [`replace`](Self::replace), saying what an empty set means.
    pub fn replace_with(&self, set: PolicySet, deny_when_empty: bool) -> bool {
        if self
            .current()
            .is_some_and(|r| r.set.version() == set.version())
        {
            return false;
        }
        self.current.store(Some(Arc::new(Rules {
            set,
            loaded_at: SystemTime::now(),
            deny_when_empty,
        })));

        self.changed.send_modify(|n| *n += 1);
        true
    }

    /// A receiver that wakes whenever the rules change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
