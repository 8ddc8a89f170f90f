//! The snapshots the actors publish, kept in name order with the names of the
//! active rooms beside them, so a page of rooms or of actors costs
//! O(log rooms + page) and never copies or sorts every room, however many
//! finished rooms wait for their actors to retire. Both indexes share the
//! room's one copy of its name.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_skiplist::{SkipMap, SkipSet};

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
    all: SkipMap<Arc<str>, Arc<Slot>>,
    /// Rooms whose snapshot shows a live instance.
    active: SkipSet<Arc<str>>,
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
        let active = snapshot.room.as_ref().is_some_and(RoomView::is_active);
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
        // Most commits leave the room as active as it was: no write then.
        match (slot.active.swap(active, Ordering::AcqRel), active) {
            (false, true) => {
                self.active.insert(name.clone());
            }
            (true, false) => {
                self.active.remove(name);
            }
            _ => {}
        }
    }

    pub fn remove(&self, name: &str) {
        self.all.remove(name);
        self.active.remove(name);
    }

    /// Removes every room `gone` names: O(rooms), for a node giving up shards.
    pub fn remove_where(&self, gone: impl Fn(&str) -> bool) {
        for entry in self.all.iter().filter(|e| gone(e.key())) {
            self.active.remove(entry.key());
            entry.remove();
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
        self.all.get(name).map(|e| e.value().read())
    }

    /// The published snapshots after `after` that `keep` names, in name
    /// order. Entries `keep` refuses (rooms whose actors retired) are
    /// skipped, but no page looks at more than `limit` + `SKIP_AT_MOST`
    /// entries, so however many lie between, a page costs about its own
    /// size; one cut short says where to go on (`next`), with fewer items.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Page<(String, Arc<RoomSnapshot>)> {
        const SKIP_AT_MOST: usize = 1_000;
        let mut items = Vec::new();
        let mut budget = limit.saturating_add(SKIP_AT_MOST);
        let mut cut_after = None;
        for entry in self.all.range::<str, _>(from(after)) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if keep(entry.key()) {
                items.push((entry.key().to_string(), entry.value().read()));
                if items.len() > limit {
                    break;
                }
            }
            cut_after = Some(entry.key().clone());
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(name, _)| name.clone())
        } else if budget == 0 {
            cut_after.map(|name| name.to_string())
        } else {
            None
        };
        Page { items, next }
    }

    /// The active rooms after `after`, in name order.
    pub fn active_page(&self, after: Option<&str>, limit: usize) -> Page<RoomView> {
        // A room that ended (or retired) since its name was listed is
        // skipped before counting, so a full page always says what follows.
        let mut items: Vec<RoomView> = self
            .active
            .range::<str, _>(from(after))
            .filter_map(|name| self.get(name.value()))
            .filter_map(|s| s.room.clone().filter(RoomView::is_active))
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
    /// Whether the room is in `Published::active`.
    active: AtomicBool,
}

impl Slot {
    fn new(snapshot: Arc<RoomSnapshot>) -> Self {
        Self {
            snapshot: RwLock::new(snapshot),
            active: AtomicBool::new(false),
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

    // A reader can find a name in the active index whose snapshot has just
    // ended: that room is skipped, and the page is still full and says
    // where to go on.
    #[test]
    fn a_room_that_ended_under_a_reader_does_not_cut_the_page_short() {
        let published = Published::default();
        for name in ["a", "b", "c", "d"] {
            published.insert(&name.into(), snapshot(name, RoomStatus::Active));
        }
        // "b" ended after its name was indexed (the reader's view of the race).
        published.all.insert(
            "b".into(),
            Arc::new(Slot::new(snapshot("b", RoomStatus::Ended))),
        );
        let first = published.active_page(None, 2);
        assert_eq!(names(&first), ["a", "c"]);
        assert_eq!(first.next.as_deref(), Some("c"));
        let second = published.active_page(first.next.as_deref(), 2);
        assert_eq!(names(&second), ["d"]);
        assert_eq!(second.next, None);
    }
}
