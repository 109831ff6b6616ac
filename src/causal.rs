//! Tagged keys for read-your-writes across connections: a write tagged
//! `/* pgroute: key=wallet:42 */` records when it committed, in a map shared by every
//! session of this pgroute; a read tagged with the same key, from any connection, is routed
//! as if it were the writing session's own read.
//!
//! The map is bounded (size and TTL). Eviction is fail-safe: the latest commit time among
//! evicted entries is kept as a floor, and a tagged read whose key is not in the map must
//! see everything up to that floor (it may be one of the evicted keys).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub struct KeyMap {
    entries: DashMap<String, Instant>,
    capacity: AtomicUsize,
    /// The TTL in nanoseconds (both limits change on a reload).
    ttl: AtomicU64,
    floor: Mutex<Option<Instant>>,
}

impl KeyMap {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let map = KeyMap {
            entries: DashMap::new(),
            capacity: AtomicUsize::new(1),
            ttl: AtomicU64::new(0),
            floor: Mutex::new(None),
        };
        map.set_limits(capacity, ttl);
        map
    }

    /// New limits from a reload; a smaller capacity takes effect at the next write.
    pub fn set_limits(&self, capacity: usize, ttl: Duration) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        self.ttl.store(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn raise_floor(&self, to: Instant) {
        crate::metrics::key_evicted();
        let mut f = self.floor.lock().unwrap_or_else(|p| p.into_inner());
        *f = Some(f.map_or(to, |old| old.max(to)));
    }

    /// A tagged write committed at `at`.
    pub fn record(&self, keys: &[String], at: Instant) {
        for k in keys {
            self.entries.insert(k.clone(), at);
        }
        while self.entries.len() > self.capacity.load(Ordering::Relaxed) {
            let oldest = self.entries.iter().min_by_key(|e| *e.value()).map(|e| (e.key().clone(), *e.value()));
            let Some((k, t)) = oldest else { break };
            self.entries.remove(&k);
            self.raise_floor(t);
        }
        crate::metrics::key_map_size(self.entries.len());
    }

    /// The latest commit a read tagged with `keys` must see, if any.
    pub fn since(&self, keys: &[String], now: Instant) -> Option<Instant> {
        let ttl = Duration::from_nanos(self.ttl.load(Ordering::Relaxed));
        let mut latest: Option<Instant> = None;
        for k in keys {
            let found = self.entries.get(k).map(|e| *e.value());
            let at = match found {
                Some(t) if now.saturating_duration_since(t) > ttl => {
                    self.entries.remove(k);
                    self.raise_floor(t);
                    *self.floor.lock().unwrap_or_else(|p| p.into_inner())
                }
                Some(t) => Some(t),
                None => *self.floor.lock().unwrap_or_else(|p| p.into_inner()),
            };
            latest = latest.max(at);
        }
        latest
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_remember_commits_and_eviction_fails_safe() {
        let m = KeyMap::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let k = |s: &str| vec![s.to_string()];
        assert_eq!(m.since(&k("a"), t0), None, "nothing written, nothing to wait for");
        m.record(&k("a"), t0);
        m.record(&k("b"), t0 + Duration::from_millis(1));
        assert_eq!(m.since(&k("a"), t0), Some(t0));
        m.record(&k("c"), t0 + Duration::from_millis(2));
        assert_eq!(m.len(), 2, "bounded");
        assert_eq!(m.since(&k("a"), t0), Some(t0), "an evicted key falls back to the floor");
        assert_eq!(m.since(&k("zzz"), t0), Some(t0), "so does any unknown key once something was evicted");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(m.since(&k("c"), later), Some(t0 + Duration::from_millis(2)), "expired: the floor covers it");
    }
}
