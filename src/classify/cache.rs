//! The bounded classification cache, keyed by normalised statement text, and in front of
//! it one keyed by the exact bytes of Parse bodies with no literal in their text
//! (parameterised: drivers, ORMs), which skips decoding, lexing and normalising when the
//! same Parse comes again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::Class;
use crate::prehashed::BuildPreHashed;

/// Statement texts longer than this (normalised, in bytes) are classified every time,
/// never kept: the cache's memory stays bounded however large the texts clients send.
const MAX_KEY: usize = 16 * 1024;
/// All keys together, in bytes: past this the cache starts over.
const MAX_BYTES: usize = 32 * 1024 * 1024;

pub struct Cache {
    map: DashMap<String, Arc<Class>>,
    /// Parse bodies (text and parameter types, as the client sent them, read in one
    /// encoding with the default dialect) whose text has no literal: the same bytes always
    /// normalise to the same key, so to the same class. Keyed by the caller's keyed hash of
    /// the bytes (`Exact::hash`), which the entry's bytes are checked against.
    front: DashMap<u64, FrontEntry, BuildPreHashed>,
    capacity: usize,
    /// Bytes of the keys held (their classes hold at most as much again in names)...
    bytes: AtomicUsize,
    /// ... and of the front's.
    front_bytes: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A Parse body as the front cache knows it.
#[derive(Clone, Copy)]
pub struct Exact<'a> {
    /// A hash of `bytes` keyed per process (a client cannot aim two bodies at one entry).
    pub hash: u64,
    pub bytes: &'a [u8],
    /// How the bytes are read (the client's encoding, as the caller numbers them).
    pub reading: usize,
}

struct FrontEntry {
    bytes: Box<[u8]>,
    reading: usize,
    class: Arc<Class>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: DashMap::new(),
            front: DashMap::default(),
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

    /// The class of exactly these bytes read this way, if the front holds it (counted as
    /// a hit).
    pub fn get_exact(&self, key: Exact<'_>) -> Option<Arc<Class>> {
        let entry = self.front.get(&key.hash)?;
        if *entry.bytes != *key.bytes || entry.reading != key.reading {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry.class.clone())
    }

    /// Keeps `class` for exactly these bytes, bounded as the main map is.
    pub fn insert_exact(&self, key: Exact<'_>, class: Arc<Class>) {
        let len = key.bytes.len();
        if self.capacity == 0 || len > MAX_KEY {
            return;
        }
        if self.front.len() >= self.capacity || self.front_bytes.load(Ordering::Relaxed) + len > MAX_BYTES {
            self.front.clear();
            self.front_bytes.store(0, Ordering::Relaxed);
        }
        let entry = FrontEntry { bytes: key.bytes.into(), reading: key.reading, class };
        if let Some(old) = self.front.insert(key.hash, entry) {
            self.front_bytes.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
        self.front_bytes.fetch_add(len, Ordering::Relaxed);
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
