//! The bounded classification cache, keyed by normalised statement text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::Class;

pub struct Cache {
    map: DashMap<String, Arc<Class>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache { map: DashMap::new(), capacity, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
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
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        self.map.insert(key, class);
    }

    pub fn clear(&self) {
        self.map.clear();
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
