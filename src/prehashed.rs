//! Sets and maps keyed by a hash that is already keyed and uniform (a statement's
//! `prepared::statement_hash`, SipHash with per-process keys): hashing it again would
//! only cost time. The key is used as its own hash.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` key through as its hash.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are meant to come here; anything else is folded in, not lost.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type BuildPreHashed = BuildHasherDefault<PreHashed>;

/// A set of keyed hashes.
pub type PreHashedSet = HashSet<u64, BuildPreHashed>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_u64_key_is_its_own_hash() {
        assert_eq!(BuildPreHashed::default().hash_one(0x1234_5678_9abc_def0u64), 0x1234_5678_9abc_def0);
        let mut set = PreHashedSet::default();
        assert!(set.insert(7) && !set.insert(7) && set.contains(&7));
    }
}
