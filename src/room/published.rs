//! The snapshots the actors publish, kept in name order, so a page of rooms
//! or of actors costs O(log rooms + page) and never copies or sorts every
//! room. A page of active rooms also steps over the finished rooms in its
//! range, which are few: a finished room's actor retires a minute after
//! (`rooms.retire_after_finish_secs`), and its snapshot with it.

use std::ops::Bound;
use std::sync::{Arc, RwLock};

use crossbeam_skiplist::SkipMap;

use super::snapshot::{RoomSnapshot, RoomView};

/// One page, and the name to continue after when more follow.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Ordered, and lock-free to find a room: one actor publishes per room (on
/// every commit), while any number of readers page through.
#[derive(Default)]
pub struct Published {
    /// A room's entry is made once and its snapshot replaced in place,
    /// through a handle its actor keeps: a new skip-list entry per commit
    /// cost a node, a copy of the name and two searches with every event.
    ///
    /// One map, not a second index of the active names beside it: that
    /// cost every live room a skip-list node and a copy of its name (about
    /// 110 bytes of an idle room's 2.9 KB).
    all: SkipMap<Arc<str>, Arc<Slot>>,
}

impl Published {
    pub fn insert(&self, name: &Arc<str>, snapshot: Arc<RoomSnapshot>) {
        self.publish(name, snapshot, &mut None);
    }

    /// Publishes `snapshot` as `name`'s. `held` is the caller's handle to
    /// the room's entry, kept between calls so that a publish costs no
    /// search. Only the room's own actor (or recovery, before it) publishes
    /// or removes a name, so a held entry is still the one listed.
    pub fn publish(
        &self,
        name: &Arc<str>,
        snapshot: Arc<RoomSnapshot>,
        held: &mut Option<Arc<Slot>>,
    ) {
        let slot = match held {
            Some(slot) => slot,
            None => held.insert(match self.all.get(name) {
                Some(entry) => entry.value().clone(),
                None => {
                    let slot = Arc::new(Slot::new(snapshot.clone()));
                    self.all.insert(name.clone(), slot.clone());
                    slot
                }
            }),
        };
        *slot.write() = snapshot;
    }

    pub fn remove(&self, name: &str) {
        self.all.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
        self.all.get(name).map(|e| e.value().read())
    }

    /// Every published snapshot after `after`, in name order.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Page<(String, Arc<RoomSnapshot>)> {
        let mut items: Vec<_> = self
            .all
            .range::<str, _>(from(after))
            .take(limit + 1)
            .map(|e| (e.key().to_string(), e.value().read()))
            .collect();
        let next = (items.len() > limit).then(|| items[limit - 1].0.clone());
        items.truncate(limit);
        Page { items, next }
    }

    /// The active rooms after `after`, in name order.
    pub fn active_page(&self, after: Option<&str>, limit: usize) -> Page<RoomView> {
        // Rooms that are not active are skipped before counting, so a full
        // page always says what follows.
        let mut items: Vec<RoomView> = self
            .all
            .range::<str, _>(from(after))
            .filter_map(|e| e.value().read().room.clone().filter(RoomView::is_active))
            .take(limit + 1)
            .collect();
        let next = (items.len() > limit).then(|| items[limit - 1].name.to_string());
        items.truncate(limit);
        Page { items, next }
    }
}

/// One room's latest snapshot.
pub struct Slot {
    snapshot: RwLock<Arc<RoomSnapshot>>,
}

impl Slot {
    fn new(snapshot: Arc<RoomSnapshot>) -> Self {
        Self {
            snapshot: RwLock::new(snapshot),
        }
    }

    fn read(&self) -> Arc<RoomSnapshot> {
        // A panic elsewhere cannot leave a half-written Arc: take it anyway.
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Arc<RoomSnapshot>> {
        self.snapshot.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn from(after: Option<&str>) -> (Bound<&str>, Bound<&str>) {
    (
        after.map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Unbounded,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::record::RoomStatus;
    use crate::room::snapshot::Counters;

    fn snapshot(name: &str, status: RoomStatus) -> Arc<RoomSnapshot> {
        Arc::new(RoomSnapshot {
            room: Some(RoomView {
                name: name.into(),
                sid: None,
                status,
                participant_count: 1,
                counts_by_kind: BTreeMap::new(),
                started_at: Utc::now(),
                ended_at: None,
                end_reason: None,
            }),
            participants: Default::default(),
            closed_sessions: 0,
            last_event: None,
            recent_events: Vec::new(),
            counters: Counters::default(),
            actor_started_at: Utc::now(),
        })
    }

    fn names(page: &Page<RoomView>) -> Vec<&str> {
        page.items.iter().map(|r| &*r.name).collect()
    }

    // A finished room among the active ones is skipped, and the page is
    // still full and says where to go on.
    #[test]
    fn a_finished_room_does_not_cut_the_page_short() {
        let published = Published::default();
        for name in ["a", "b", "c", "d"] {
            published.insert(&name.into(), snapshot(name, RoomStatus::Active));
        }
        published.insert(&"b".into(), snapshot("b", RoomStatus::Ended));
        let first = published.active_page(None, 2);
        assert_eq!(names(&first), ["a", "c"]);
        assert_eq!(first.next.as_deref(), Some("c"));
        let second = published.active_page(first.next.as_deref(), 2);
        assert_eq!(names(&second), ["d"]);
        assert_eq!(second.next, None);
    }
}
