//! One hash seed for the process's small tables: every room's, and the
//! shared labels (`event::label`). A `HashMap` with the standard
//! `RandomState` carries its own 16-byte seed, and a live room holds
//! several maps: thousands of idle rooms paid for seeds they never needed
//! apart. The one seed is still random per process.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::LazyLock;

static SEED: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The process's seed, zero bytes in each map that uses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seed;

impl BuildHasher for Seed {
    type Hasher = <RandomState as BuildHasher>::Hasher;

    fn build_hasher(&self) -> Self::Hasher {
        SEED.build_hasher()
    }
}

/// `key` hashed with the process's seed.
pub fn hash(key: impl Hash) -> u64 {
    SEED.hash_one(key)
}

/// A `HashMap` seeded once per process.
pub type HashMap<K, V> = std::collections::HashMap<K, V, Seed>;
