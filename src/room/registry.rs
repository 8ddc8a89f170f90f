//! The room actors by name, live or parked. Each actor's mailbox depth is
//! kept beside its address, so the room's bookkeeping leaves with the actor.
//!
//! It never holds two actors for one name: actors are started inside the
//! map's entry lock, and an actor loads its state after it is registered
//! (its first message waits for that).
//!
//! A room with nobody in parks its actor here between events: the actor's
//! fields stay, boxed, and its task and mailbox go (about 1.1 KB of the
//! 2.3 KB an idle room cost). The room's next event starts a task with the
//! parked actor, exactly as it was committed, without a load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::actor::RoomActor;
use super::messages::Claim;

/// A room's actor and the messages waiting in its mailbox.
pub struct RoomEntry {
    actor: Held,
    depth: Arc<AtomicUsize>,
    /// When the actor may retire (`Moment`), as the actor last said; a
    /// new entry is due at once, so its actor is asked and says.
    retire_at: AtomicU64,
}

/// How a room's actor is held.
enum Held {
    Live(Addr<RoomActor>),
    /// Between events of a room with nobody in: no task, no mailbox.
    Parked(Box<RoomActor>),
    /// Only while the entry's lock is held, as an actor starts.
    Moving,
}

impl RoomEntry {
    fn of(addr: Addr<RoomActor>) -> Self {
        Self {
            actor: Held::Live(addr),
            depth: Arc::default(),
            retire_at: AtomicU64::new(0),
        }
    }

    fn live(&self) -> Option<&Addr<RoomActor>> {
        match &self.actor {
            Held::Live(addr) => Some(addr),
            Held::Parked(_) | Held::Moving => None,
        }
    }

    fn is(&self, addr: &Addr<RoomActor>) -> bool {
        self.live() == Some(addr)
    }
}

/// A moment as milliseconds since the process began: when an actor last
/// changed its room, and when it may retire (what its registry entry
/// keeps). Eight bytes where an `Instant` takes sixteen, in every actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Moment {
    pub const NEVER: Self = Self(u64::MAX);

    /// Rounded up, as every moment is: a deadline is never seen due
    /// before its time.
    pub fn now() -> Self {
        let millis = EPOCH.elapsed().as_nanos().div_ceil(1_000_000);
        u64::try_from(millis).map_or(Self::NEVER, Self)
    }

    /// `wait` after this moment. A wait past what a clock can hold
    /// (`idle_timeout_secs = 2^64 - 1`, say) is never.
    pub fn after(self, wait: Duration) -> Self {
        let millis = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// How long ago this moment was, to the millisecond.
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(Self::now().0.saturating_sub(self.0))
    }
}

/// Whether `actor` found the room's actor or had to start one.
pub enum Found {
    Live,
    Started,
    /// The registered actor had died without unregistering (it panicked).
    Restarted,
    /// The room's parked actor took up its task again.
    Unparked,
}

#[derive(Default)]
pub struct Registry {
    /// Keyed by the name the room's actor holds (one copy).
    actors: DashMap<Arc<str>, RoomEntry>,
}

impl Registry {
    /// The live actor for `name` (else one `start`ed in its place, from
    /// the parked actor if there is one) with a slot in its mailbox, or no
    /// slot when the mailbox holds `capacity`. The slot is taken while the
    /// entry is held, so the actor cannot retire or park between the two
    /// (both refuse while a slot is taken).
    pub fn actor(
        &self,
        name: &str,
        capacity: usize,
        start: impl FnOnce(Arc<str>, Option<Box<RoomActor>>) -> Addr<RoomActor>,
    ) -> (Option<(Addr<RoomActor>, Claim)>, Found) {
        let with_slot = |e: &RoomEntry| {
            let addr = e.live()?.clone();
            Claim::take(&e.depth, capacity).map(|slot| (addr, slot))
        };
        if let Some(entry) = self.actors.get(name)
            && entry.live().is_some_and(Addr::connected)
        {
            return (with_slot(&entry), Found::Live);
        }
        match self.actors.entry(Arc::from(name)) {
            Entry::Occupied(slot) if slot.get().live().is_some_and(Addr::connected) => {
                (with_slot(slot.get()), Found::Live)
            }
            Entry::Occupied(mut slot) => {
                let key = slot.key().clone();
                let entry = slot.get_mut();
                let (parked, found) = match std::mem::replace(&mut entry.actor, Held::Moving) {
                    Held::Parked(parked) => (Some(parked), Found::Unparked),
                    Held::Live(_) | Held::Moving => (None, Found::Restarted),
                };
                entry.actor = Held::Live(start(key, parked));
                (with_slot(slot.get()), found)
            }
            Entry::Vacant(slot) => {
                let actor = start(slot.key().clone(), None);
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
            waiting = entry.is(addr) && entry.depth.load(Ordering::Acquire) > 0;
            entry.is(addr) && !waiting
        });
        !waiting
    }

    /// Parks `addr`, if it is still `name`'s actor and nothing waits in its
    /// mailbox, as the actor `park` makes of it (its fields, taken), unless
    /// `park` declines under the entry's lock: true if it did, and the
    /// actor's task may stop. The entry keeps its retirement time, and its
    /// depth for the next task.
    pub fn park(
        &self,
        name: &str,
        addr: &Addr<RoomActor>,
        park: impl FnOnce() -> Option<RoomActor>,
    ) -> bool {
        let Some(mut entry) = self.actors.get_mut(name) else {
            return false;
        };
        if !entry.is(addr) || entry.depth.load(Ordering::Acquire) > 0 {
            return false;
        }
        let Some(parked) = park() else {
            return false;
        };
        entry.actor = Held::Parked(Box::new(parked));
        true
    }

    /// Records when `addr`, if still `name`'s actor, may retire.
    pub fn set_retire_at(&self, name: &str, addr: &Addr<RoomActor>, at: Moment) {
        if let Some(entry) = self.actors.get(name)
            && entry.is(addr)
        {
            entry.retire_at.store(at.0, Ordering::Relaxed);
        }
    }

    /// The live actors whose retirement time has come.
    pub fn due(&self, now: Moment) -> Vec<Addr<RoomActor>> {
        self.actors
            .iter()
            .filter(|e| e.retire_at.load(Ordering::Relaxed) <= now.0)
            .filter_map(|e| e.live().cloned())
            .collect()
    }

    /// Takes off the parked actors whose retirement time has come.
    pub fn take_due_parked(&self, now: Moment) -> Vec<RoomActor> {
        self.take_parked(|_, entry| entry.retire_at.load(Ordering::Relaxed) <= now.0)
    }

    /// Takes off the parked actors of the rooms `select` names.
    pub fn take_parked_where(&self, select: impl Fn(&str) -> bool) -> Vec<RoomActor> {
        self.take_parked(|name, _| select(name))
    }

    /// Found under read locks, then each taken under its entry's lock if
    /// it is still parked and picked: a sweep must not hold every shard.
    fn take_parked(&self, pick: impl Fn(&str, &RoomEntry) -> bool) -> Vec<RoomActor> {
        let pick = |name: &str, entry: &RoomEntry| {
            matches!(entry.actor, Held::Parked(_)) && pick(name, entry)
        };
        let names: Vec<Arc<str>> = self
            .actors
            .iter()
            .filter(|e| pick(e.key(), e.value()))
            .map(|e| e.key().clone())
            .collect();
        names
            .iter()
            .filter_map(|name| self.actors.remove_if(name, |name, entry| pick(name, entry)))
            .filter_map(|(_, entry)| match entry.actor {
                Held::Parked(parked) => Some(*parked),
                Held::Live(_) | Held::Moving => None,
            })
            .collect()
    }

    /// Takes `addr` off the registry, if it is still the one registered for `name`.
    pub fn remove(&self, name: &str, addr: &Addr<RoomActor>) {
        self.actors.remove_if(name, |_, entry| entry.is(addr));
    }

    /// The live actors of the rooms `select` names.
    pub fn matching(&self, select: impl Fn(&str) -> bool) -> Vec<(String, Addr<RoomActor>)> {
        self.actors
            .iter()
            .filter(|e| select(e.key()))
            .filter_map(|e| Some((e.key().to_string(), e.live()?.clone())))
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

    /// Rooms whose actors are parked: O(rooms), for admins.
    pub fn parked(&self) -> usize {
        self.actors
            .iter()
            .filter(|e| matches!(e.actor, Held::Parked(_)))
            .count()
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
        let now = Moment::now();
        assert_eq!(now.after(Duration::MAX), Moment::NEVER);
        assert_eq!(now.after(Duration::from_secs(u64::MAX)), Moment::NEVER);
        assert!(now.after(Duration::from_secs(1)) > Moment::now());
        assert!(now.after(Duration::from_secs(1)) < Moment::NEVER);
        assert!(now.elapsed() < Duration::from_secs(1));
    }
}
