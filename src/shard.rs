//! Which rooms this node may write when several nodes share one PostgreSQL.
//!
//! A room belongs to a shard by a hash of its name that never changes across
//! Rust releases or machines (xxh3), and a shard to at most one node at a
//! time, under an epoch that every takeover raises. A node writes a room only
//! while it holds the room's shard, and every commit proves it still does
//! (`Fence`), so a node that lost its shard without knowing it (paused, cut
//! off) cannot write over the new owner. Imports nothing of roomd.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64;

/// The shard of a room name among `shards`.
pub fn shard_of(room: &str, shards: u32) -> u32 {
    (xxh3_64(room.as_bytes()) % u64::from(shards.max(1))) as u32
}

/// What a commit must find in the shard table to be let through: the shard
/// still owned by this node under the epoch the room was loaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub shard: u32,
    pub epoch: i64,
}

/// The shards this node holds now, with their epochs, while its lease is
/// valid: a node that was paused past its lease holds nothing until it has
/// renewed and read the shard map again, so it neither writes nor serves
/// reads from memory that another node may have moved past.
#[derive(Debug)]
pub struct Ownership {
    shards: u32,
    owned: RwLock<HashMap<u32, i64>>,
    /// When the lease runs out, by this process's monotonic clock (counted
    /// from when the renewal was sent, so never later than the database's).
    valid_until: RwLock<Option<Instant>>,
}

impl Ownership {
    pub fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            owned: RwLock::default(),
            valid_until: RwLock::default(),
        }
    }

    /// The lease now runs until `until`.
    pub fn renewed(&self, until: Instant) {
        *self.valid_until.write().expect("ownership lock") = Some(until);
    }

    pub fn lease_valid(&self) -> bool {
        self.valid_until
            .read()
            .expect("ownership lock")
            .is_some_and(|until| Instant::now() < until)
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    pub fn shard_of(&self, room: &str) -> u32 {
        shard_of(room, self.shards)
    }

    /// The fence for writing `room` from here; `None` when this node does not
    /// hold the room's shard.
    pub fn fence(&self, room: &str) -> Option<Fence> {
        if !self.lease_valid() {
            return None;
        }
        let shard = self.shard_of(room);
        let epoch = *self.read().get(&shard)?;
        Some(Fence { shard, epoch })
    }

    pub fn owns(&self, room: &str) -> bool {
        self.fence(room).is_some()
    }

    pub fn owned(&self) -> HashMap<u32, i64> {
        self.read().clone()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn insert(&self, shard: u32, epoch: i64) {
        self.owned
            .write()
            .expect("ownership lock")
            .insert(shard, epoch);
    }

    /// Forgets `shard`; whether it was held.
    pub fn remove(&self, shard: u32) -> bool {
        self.owned
            .write()
            .expect("ownership lock")
            .remove(&shard)
            .is_some()
    }

    /// Forgets every shard; returns the ones that were held.
    pub fn clear(&self) -> Vec<u32> {
        let mut owned = self.owned.write().expect("ownership lock");
        owned.drain().map(|(shard, _)| shard).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, i64>> {
        self.owned.read().expect("ownership lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_STANDUP: u32 = 50;

    #[test]
    fn the_shard_of_a_name_never_changes() {
        // Pinned: nodes of different builds must agree on every room's shard.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(shard_of("", 256), 0xc2);
        assert_eq!(shard_of("standup", 256), PINNED_STANDUP);
    }

    #[test]
    fn a_fence_is_the_shard_and_the_epoch_it_was_taken_under() {
        let ownership = Ownership::new(16);
        let shard = ownership.shard_of("standup");
        assert_eq!(ownership.fence("standup"), None);
        ownership.insert(shard, 7);
        assert_eq!(ownership.fence("standup"), None, "no lease, no fence");
        ownership.renewed(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(ownership.fence("standup"), Some(Fence { shard, epoch: 7 }));
        ownership.renewed(Instant::now());
        assert_eq!(ownership.fence("standup"), None, "a lease run out");
        ownership.renewed(Instant::now() + std::time::Duration::from_secs(60));
        assert!(ownership.remove(shard));
        assert!(!ownership.owns("standup"));
    }
}
