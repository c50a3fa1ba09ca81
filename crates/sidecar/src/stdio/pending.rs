//! Requests forwarded to a stdio server and not answered yet, so that none
//! waits forever: each has a deadline, and a server that dies fails them
//! all at once.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

/// Forwarded requests by id, each with its deadline and what the
/// transport wants to remember about it.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    by_id: HashMap<String, Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    id: Value,
    deadline: Instant,
    what: T,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            by_id: HashMap::new(),
        }
    }
}

/// Ids `1` and `"1"` are different requests; the JSON text tells them apart.
fn key(id: &Value) -> String {
    id.to_string()
}

impl<T> Pending<T> {
    /// Remembers a request until `deadline`.
    pub(crate) fn insert(&mut self, id: &Value, deadline: Instant, what: T) {
        self.by_id.insert(
            key(id),
            Entry {
                id: id.clone(),
                deadline,
                what,
            },
        );
    }

    /// The request a response with `id` answers, if it is still waiting.
    pub(crate) fn take(&mut self, id: &Value) -> Option<T> {
        self.by_id.remove(&key(id)).map(|e| e.what)
    }

    /// Removes and returns the requests whose deadline has passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(Value, T)> {
        let late: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|k| self.by_id.remove(&k))
            .map(|e| (e.id, e.what))
            .collect()
    }

    /// Removes and returns every waiting request.
    pub(crate) fn drain(&mut self) -> Vec<(Value, T)> {
        self.by_id.drain().map(|(_, e)| (e.id, e.what)).collect()
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn requests_leave_when_answered_late_or_drained() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.insert(&json!(1), now + Duration::from_secs(1), "a");
        p.insert(&json!("1"), now + Duration::from_secs(5), "b");
        p.insert(&json!(2), now + Duration::from_secs(9), "c");
        assert_eq!(p.take(&json!("1")), Some("b"));
        assert_eq!(p.take(&json!("1")), None);
        assert_eq!(
            p.expired(now + Duration::from_secs(2)),
            vec![(json!(1), "a")]
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p.drain(), vec![(json!(2), "c")]);
        assert_eq!(p.len(), 0);
    }
}
