//! The live room actors by name. Each actor's mailbox depth is kept beside
//! its address, so the room's bookkeeping leaves with the actor.
//!
//! It never holds two actors for one name: actors are started inside the
//! map's entry lock, and an actor loads its state after it is registered
//! (its first message waits for that).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::actor::RoomActor;
use super::messages::Claim;

/// A live actor and the messages waiting in its mailbox.
pub struct RoomEntry {
    pub addr: Addr<RoomActor>,
    pub depth: Arc<AtomicUsize>,
    /// When the actor may retire (`Deadline`), as the actor last said; a
    /// new entry is due at once, so its actor is asked and says.
    retire_at: AtomicU64,
}

impl RoomEntry {
    fn of(addr: Addr<RoomActor>) -> Self {
        Self {
            addr,
            depth: Arc::default(),
            retire_at: AtomicU64::new(0),
        }
    }
}

/// A moment as milliseconds since the process began: what a registry
/// entry keeps of an actor's retirement time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(u64);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Deadline {
    pub const NEVER: Self = Self(u64::MAX);

    pub fn now() -> Self {
        Self::after(Duration::ZERO)
    }

    /// Rounded up: a deadline is never seen due before its time. A wait
    /// past what a clock can hold (`idle_timeout_secs = 2^64 - 1`, say)
    /// is never.
    pub fn after(wait: Duration) -> Self {
        let Some(at) = Instant::now().checked_add(wait) else {
            return Self::NEVER;
        };
        let millis = at
            .saturating_duration_since(*EPOCH)
            .as_nanos()
            .div_ceil(1_000_000);
        u64::try_from(millis).map_or(Self::NEVER, Self)
    }
}

/// Whether `actor` found the room's actor or had to start one.
pub enum Found {
    Live,
    Started,
    /// The registered actor had died without unregistering (it panicked).
    Restarted,
}

#[derive(Default)]
pub struct Registry {
    /// Keyed by the name the room's actor holds (one copy).
    actors: DashMap<Arc<str>, RoomEntry>,
}

impl Registry {
    /// The live actor for `name` (else one `start`ed in its place) with a
    /// slot in its mailbox, or no slot when the mailbox holds `capacity`.
    /// The slot is taken while the entry is held, so the actor cannot retire
    /// between the two (`retire` refuses while a slot is taken).
    pub fn actor(
        &self,
        name: &str,
        capacity: usize,
        start: impl FnOnce(Arc<str>) -> Addr<RoomActor>,
    ) -> (Option<(Addr<RoomActor>, Claim)>, Found) {
        let with_slot =
            |e: &RoomEntry| Claim::take(&e.depth, capacity).map(|slot| (e.addr.clone(), slot));
        if let Some(entry) = self.actors.get(name)
            && entry.addr.connected()
        {
            return (with_slot(&entry), Found::Live);
        }
        match self.actors.entry(Arc::from(name)) {
            Entry::Occupied(slot) if slot.get().addr.connected() => {
                (with_slot(slot.get()), Found::Live)
            }
            Entry::Occupied(mut slot) => {
                slot.insert(RoomEntry::of(start(slot.key().clone())));
                (with_slot(slot.get()), Found::Restarted)
            }
            Entry::Vacant(slot) => {
                let actor = start(slot.key().clone());
                (
                    with_slot(&slot.insert(RoomEntry::of(actor))),
                    Found::Started,
                )
            }
        }
    }

    /// Registers an actor `start`ed for `name` unless one is registered.
    pub fn start_if_absent(&self, name: Arc<str>, start: impl FnOnce() -> Addr<RoomActor>) {
        if let Entry::Vacant(slot) = self.actors.entry(name) {
            slot.insert(RoomEntry::of(start()));
        }
    }

    /// Takes `addr` off the registry so it can stop, unless a delivery holds
    /// a slot in its mailbox: then false, and the actor must stay.
    pub fn retire(&self, name: &str, addr: &Addr<RoomActor>) -> bool {
        let mut waiting = false;
        self.actors.remove_if(name, |_, entry| {
            waiting = entry.addr == *addr && entry.depth.load(Ordering::Acquire) > 0;
            entry.addr == *addr && !waiting
        });
        !waiting
    }

    /// Records when `addr`, if still `name`'s actor, may retire.
    pub fn set_retire_at(&self, name: &str, addr: &Addr<RoomActor>, at: Deadline) {
        if let Some(entry) = self.actors.get(name)
            && entry.addr == *addr
        {
            entry.retire_at.store(at.0, Ordering::Relaxed);
        }
    }

    /// The actors whose retirement time has come.
    pub fn due(&self, now: Deadline) -> Vec<Addr<RoomActor>> {
        self.actors
            .iter()
            .filter(|e| e.retire_at.load(Ordering::Relaxed) <= now.0)
            .map(|e| e.addr.clone())
            .collect()
    }

    /// Takes `addr` off the registry, if it is still the one registered for `name`.
    pub fn remove(&self, name: &str, addr: &Addr<RoomActor>) {
        self.actors.remove_if(name, |_, entry| entry.addr == *addr);
    }

    /// The actors of the rooms `select` names.
    pub fn matching(&self, select: impl Fn(&str) -> bool) -> Vec<(String, Addr<RoomActor>)> {
        self.actors
            .iter()
            .filter(|e| select(e.key()))
            .map(|e| (e.key().to_string(), e.value().addr.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.actors.contains_key(name)
    }

    /// Messages waiting in a room's mailbox.
    pub fn depth(&self, name: &str) -> usize {
        self.actors
            .get(name)
            .map_or(0, |e| e.depth.load(Ordering::Relaxed))
    }

    /// Messages waiting in every mailbox.
    pub fn total_depth(&self) -> usize {
        self.actors
            .iter()
            .map(|e| e.depth.load(Ordering::Relaxed))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_no_clock_can_hold_is_never() {
        assert_eq!(Deadline::after(Duration::MAX), Deadline::NEVER);
        assert_eq!(
            Deadline::after(Duration::from_secs(u64::MAX)),
            Deadline::NEVER
        );
        assert!(Deadline::after(Duration::from_secs(1)) > Deadline::now());
        assert!(Deadline::after(Duration::from_secs(1)) < Deadline::NEVER);
    }
}
