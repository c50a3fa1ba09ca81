//! A bounded cache of answers that go stale: tokens reviewed by the
//! apiserver, JWTs verified against a key set.
//!
//! Full, it forgets its least recently used entry to make room — O(1), no
//! scan and no global clear, so a flood of new tokens costs every caller one
//! slot each instead of emptying the cache for everyone at once (which sent
//! every request of every caller back to the apiserver together).

use std::hash::Hash;
use std::time::Instant;

use hashlink::LruCache;

/// Entries with a deadline, at most `capacity` of them.
pub struct ExpiringCache<K: Hash + Eq, V> {
    entries: LruCache<K, (Instant, V)>,
}

impl<K: Hash + Eq, V: Clone> ExpiringCache<K, V> {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        ExpiringCache {
            entries: LruCache::new(capacity.max(1)),
        }
    }

    /// The value for `key` if it is still valid at `now`; a stale entry is
    /// dropped.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((until, value)) if now < *until => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` for `key` until `until`, forgetting the least
    /// recently used entry when full.
    pub fn insert(&mut self, key: K, value: V, until: Instant) {
        self.entries.insert(key, (until, value));
    }

    /// Forgets everything: for when what the entries were checked against
    /// changed (a new key set), not for making room.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many entries are held, stale ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn full_it_forgets_the_least_recently_used_not_everything() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut cache = ExpiringCache::new(3);
        for k in 0..3 {
            cache.insert(k, k * 10, later);
        }
        // 0 is used, so 1 is now the least recently used.
        assert_eq!(cache.get(&0, now), Some(0));
        cache.insert(3, 30, later);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1, now), None);
        assert_eq!(cache.get(&0, now), Some(0));
        assert_eq!(cache.get(&2, now), Some(20));
        assert_eq!(cache.get(&3, now), Some(30));
    }

    #[test]
    fn a_stale_entry_is_not_returned_and_is_dropped() {
        let now = Instant::now();
        let mut cache = ExpiringCache::new(4);
        cache.insert("a", 1, now + Duration::from_secs(5));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(5)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_flood_of_new_keys_keeps_the_cache_bounded() {
        let now = Instant::now();
        let mut cache = ExpiringCache::new(1_000);
        for k in 0..100_000u32 {
            cache.insert(k, (), now + Duration::from_secs(60));
            assert!(cache.len() <= 1_000);
        }
        // The newest thousand survive.
        assert!(cache.get(&99_999, now).is_some());
        assert!(cache.get(&99_000, now).is_some());
        assert!(cache.get(&98_999, now).is_none());
    }
}
