//! The bounded classification cache, keyed by normalised statement text, and in front of
//! it one keyed by the exact text of statements with no literal (parameterised: the
//! extended protocol's Parse, ORMs, drivers), which skips lexing and normalising when the
//! same text comes again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::Class;

/// Statement texts longer than this (normalised, in bytes) are classified every time,
/// never kept: the cache's memory stays bounded however large the texts clients send.
const MAX_KEY: usize = 16 * 1024;
/// All keys together, in bytes: past this the cache starts over.
const MAX_BYTES: usize = 32 * 1024 * 1024;

pub struct Cache {
    map: DashMap<String, Arc<Class>>,
    /// Exact texts (as decoded, read with the default dialect) of statements without
    /// literals: the same text always normalises to the same key, so to the same class.
    front: DashMap<Box<str>, Arc<Class>>,
    capacity: usize,
    /// Bytes of the keys held (their classes hold at most as much again in names)...
    bytes: AtomicUsize,
    /// ... and of the front's.
    front_bytes: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: DashMap::new(),
            front: DashMap::new(),
            capacity,
            bytes: AtomicUsize::new(0),
            front_bytes: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Class>> {
        let hit = self.map.get(key).map(|e| e.value().clone());
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Inserts; when full, the cache is emptied first. Statement shapes in an application
    /// are few, so a full cache means churn (ad-hoc literals the lexer could not fold), and
    /// starting over is cheaper and simpler than tracking recency on every hit.
    pub fn insert(&self, key: String, class: Arc<Class>) {
        if self.capacity == 0 || key.len() > MAX_KEY {
            return;
        }
        if self.map.len() >= self.capacity || self.bytes.load(Ordering::Relaxed) + key.len() > MAX_BYTES {
            self.clear();
        }
        self.bytes.fetch_add(key.len(), Ordering::Relaxed);
        self.map.insert(key, class);
    }

    /// The class of exactly this text, if the front holds it (counted as a hit).
    pub fn get_exact(&self, text: &str) -> Option<Arc<Class>> {
        let hit = self.front.get(text).map(|e| e.value().clone())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// Keeps `class` for exactly this text, bounded as the main map is.
    pub fn insert_exact(&self, text: &str, class: Arc<Class>) {
        if self.capacity == 0 || text.len() > MAX_KEY {
            return;
        }
        if self.front.len() >= self.capacity || self.front_bytes.load(Ordering::Relaxed) + text.len() > MAX_BYTES {
            self.front.clear();
            self.front_bytes.store(0, Ordering::Relaxed);
        }
        self.front_bytes.fetch_add(text.len(), Ordering::Relaxed);
        self.front.insert(text.into(), class);
    }

    pub fn clear(&self) {
        self.map.clear();
        self.bytes.store(0, Ordering::Relaxed);
        self.front.clear();
        self.front_bytes.store(0, Ordering::Relaxed);
    }

    /// Bytes of the keys held (both maps).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed) + self.front_bytes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}
