//! What reads must see, shared by every session of this pgroute: the commits it
//! acknowledged ([`Acked`], for `causal_scope = "instance"`), and tagged keys.
//!
//! Tagged keys for read-your-writes across connections: a write tagged
//! `/* pgroute: key=wallet:42 */` records when it committed, in a map shared by every
//! session of this pgroute; a read tagged with the same key, from any connection, is routed
//! as if it were the writing session's own read.
//!
//! A key's entry is its latest commit's time and, once the writing session has learned it
//! (`lsn` mode asks right behind the commit), that commit's exact WAL position: a tagged
//! read then needs a replica at that position and nothing else.
//!
//! The map is bounded (size and TTL). Eviction is fail-safe: the latest commit time among
//! evicted entries is kept as a floor, and a tagged read whose key is not in the map must
//! see everything up to that floor (it may be one of the evicted keys).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// What a tagged read must see: commits up to `at`, and where known, exactly the WAL
/// position `(lsn, timeline)` that covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCommit {
    pub at: Instant,
    pub position: Option<(u64, Option<u32>)>,
}

impl KeyCommit {
    /// Both at once: the later time; a position only when both have one on one timeline.
    fn and(self, other: KeyCommit) -> KeyCommit {
        let position = match (self.position, other.position) {
            (Some((a, ta)), Some((b, tb))) if ta == tb => Some((a.max(b), ta)),
            _ => None,
        };
        KeyCommit { at: self.at.max(other.at), position }
    }
}

/// The latest commit pgroute acknowledged to a client: the highest exact position (on
/// the newest timeline seen), and the time of the latest acknowledged commit whose
/// position was not learned (a COPY, a failed position query), which a read then takes
/// from the primary's position sampled after it.
#[derive(Default)]
pub struct Acked {
    state: Mutex<AckedState>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckedState {
    /// `(lsn, timeline)`: every acknowledged commit with a known position is at or before it.
    pub position: Option<(u64, Option<u32>)>,
    /// The latest acknowledged commit whose position is not known.
    pub unpositioned: Option<Instant>,
}

impl Acked {
    fn lock(&self) -> std::sync::MutexGuard<'_, AckedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self) -> AckedState {
        *self.lock()
    }

    /// A commit at `(lsn, timeline)` is about to be acknowledged; also what stands in for
    /// the acknowledged commits of an older timeline or of unknown positions once the
    /// primary's position after them is known (`settled`: the unpositioned time it covers).
    pub fn record(&self, lsn: u64, timeline: Option<u32>, settled: Option<Instant>) {
        let mut s = self.lock();
        s.position = Some(match s.position {
            // A later timeline's positions follow all of an earlier one's that survived.
            Some((old, tl)) if tl == timeline || tl.is_none() || timeline.is_none() => (old.max(lsn), tl.or(timeline)),
            Some((old, tl)) if tl > timeline => (old, tl),
            _ => (lsn, timeline),
        });
        if settled.is_some() && s.unpositioned <= settled {
            s.unpositioned = None;
        }
    }

    /// A commit whose position is not known is about to be acknowledged.
    pub fn record_unpositioned(&self, at: Instant) {
        let mut s = self.lock();
        s.unpositioned = Some(s.unpositioned.map_or(at, |t| t.max(at)));
    }
}

pub struct KeyMap {
    entries: DashMap<String, KeyCommit>,
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
            self.entries.insert(k.clone(), KeyCommit { at, position: None });
        }
        let capacity = self.capacity.load(Ordering::Relaxed);
        if self.entries.len() > capacity {
            // The oldest eighth goes at once (and what is over capacity): one pass over the
            // map every capacity/8 new keys, not one per key.
            let mut all: Vec<(Instant, String)> =
                self.entries.iter().map(|e| (e.value().at, e.key().clone())).collect();
            let evict = (all.len() - capacity + capacity / 8).min(all.len());
            if evict > 0 {
                all.select_nth_unstable_by_key(evict - 1, |(at, _)| *at);
                let newest = all[..evict].iter().map(|(at, _)| *at).max();
                for (_, k) in &all[..evict] {
                    self.entries.remove(k);
                }
                if let Some(t) = newest {
                    self.raise_floor(t);
                }
            }
        }
        crate::metrics::key_map_size(self.entries.len());
    }

    /// The writing session learned the exact position of the commit it recorded at `at`:
    /// the keys whose entry is still that commit get it (a later commit of a key through
    /// another session keeps its own entry).
    pub fn record_position(&self, keys: &[String], at: Instant, position: (u64, Option<u32>)) {
        for k in keys {
            if let Some(mut e) = self.entries.get_mut(k).filter(|e| e.at == at) {
                e.position = Some(position);
            }
        }
    }

    /// What a read tagged with `keys` must see, if anything.
    pub fn since(&self, keys: &[String], now: Instant) -> Option<KeyCommit> {
        let ttl = Duration::from_nanos(self.ttl.load(Ordering::Relaxed));
        let floor = || self.floor.lock().unwrap_or_else(|p| p.into_inner()).map(|at| KeyCommit { at, position: None });
        let mut latest: Option<KeyCommit> = None;
        for k in keys {
            let found = self.entries.get(k).map(|e| *e.value());
            let needs = match found {
                Some(e) if now.saturating_duration_since(e.at) > ttl => {
                    self.entries.remove(k);
                    self.raise_floor(e.at);
                    floor()
                }
                Some(e) => Some(e),
                None => floor(),
            };
            latest = match (latest, needs) {
                (Some(a), Some(b)) => Some(a.and(b)),
                (a, b) => a.or(b),
            };
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
    fn acknowledged_positions_only_rise_and_a_newer_timeline_wins() {
        let a = Acked::default();
        assert_eq!(a.get(), AckedState::default(), "nothing acknowledged: nothing to see");
        a.record(100, Some(1), None);
        a.record(90, Some(1), None);
        assert_eq!(a.get().position, Some((100, Some(1))), "an answer that arrives late lowers nothing");
        a.record(10, Some(2), None);
        assert_eq!(a.get().position, Some((10, Some(2))), "after a failover the new timeline's position");
        a.record(500, Some(1), None);
        assert_eq!(a.get().position, Some((10, Some(2))), "the old timeline's later answer does not undo it");
        let t0 = Instant::now();
        a.record_unpositioned(t0 + Duration::from_millis(5));
        a.record(20, Some(2), Some(t0));
        assert!(a.get().unpositioned.is_some(), "a sample from before the commit does not cover it");
        a.record(30, Some(2), Some(t0 + Duration::from_millis(6)));
        assert_eq!(a.get(), AckedState { position: Some((30, Some(2))), unpositioned: None });
    }

    #[test]
    fn keys_remember_commits_and_eviction_fails_safe() {
        let m = KeyMap::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let k = |s: &str| vec![s.to_string()];
        let at = |t: Instant| Some(KeyCommit { at: t, position: None });
        let since = |keys: &[&str], now| m.since(&keys.iter().map(|s| s.to_string()).collect::<Vec<_>>(), now);
        assert_eq!(since(&["a"], t0), None, "nothing written, nothing to wait for");
        m.record(&k("a"), t0);
        m.record(&k("b"), t0 + Duration::from_millis(1));
        assert_eq!(since(&["a"], t0), at(t0));
        m.record(&k("c"), t0 + Duration::from_millis(2));
        assert_eq!(m.len(), 2, "bounded");
        assert_eq!(since(&["a"], t0), at(t0), "an evicted key falls back to the floor");
        assert_eq!(since(&["zzz"], t0), at(t0), "so does any unknown key once something was evicted");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(since(&["c"], later), at(t0 + Duration::from_millis(2)), "expired: the floor covers it");
    }

    #[test]
    fn exact_positions_join_the_commit_they_belong_to() {
        let m = KeyMap::new(10, Duration::from_secs(10));
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let keys = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        m.record(&keys(&["a", "b"]), t0);
        m.record_position(&keys(&["a", "b"]), t0, (100, Some(1)));
        assert_eq!(m.since(&keys(&["a"]), t0), Some(KeyCommit { at: t0, position: Some((100, Some(1))) }));
        // b is committed again through another session before the first learns its
        // position: that later commit's entry is not overwritten by the older position.
        m.record(&keys(&["c"]), t0);
        m.record(&keys(&["c"]), t1);
        m.record_position(&keys(&["c"]), t0, (90, Some(1)));
        assert_eq!(m.since(&keys(&["c"]), t1), Some(KeyCommit { at: t1, position: None }));
        // Several keys: the later time, and the later position while all have one.
        m.record(&keys(&["d"]), t1);
        m.record_position(&keys(&["d"]), t1, (200, Some(1)));
        assert_eq!(m.since(&keys(&["a", "d"]), t1), Some(KeyCommit { at: t1, position: Some((200, Some(1))) }));
        assert_eq!(m.since(&keys(&["a", "c"]), t1), Some(KeyCommit { at: t1, position: None }));
    }
}
