//! The snapshots the actors publish, kept in name order with the names of the
//! active rooms beside them, so a page of rooms or of actors costs
//! O(log rooms + page) and never copies or sorts every room.

use std::ops::Bound;
use std::sync::Arc;

use crossbeam_skiplist::{SkipMap, SkipSet};

use super::snapshot::{RoomSnapshot, RoomView};

/// One page, and the name to continue after when more follow.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Lock-free and ordered: one actor publishes per room (on every commit),
/// while any number of readers page through.
#[derive(Default)]
pub struct Published {
    all: SkipMap<String, Arc<RoomSnapshot>>,
    /// Rooms whose snapshot shows a live instance.
    active: SkipSet<String>,
}

impl Published {
    pub fn insert(&self, name: &str, snapshot: Arc<RoomSnapshot>) {
        let active = snapshot.room.as_ref().is_some_and(RoomView::is_active);
        self.all.insert(name.to_owned(), snapshot);
        // Most commits leave the room as active as it was: no write then.
        if active && !self.active.contains(name) {
            self.active.insert(name.to_owned());
        } else if !active {
            self.active.remove(name);
        }
    }

    pub fn remove(&self, name: &str) {
        self.all.remove(name);
        self.active.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
        self.all.get(name).map(|e| e.value().clone())
    }

    /// Every published snapshot after `after`, in name order.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Page<(String, Arc<RoomSnapshot>)> {
        let mut items: Vec<_> = self
            .all
            .range::<str, _>(from(after))
            .take(limit + 1)
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let next = (items.len() > limit).then(|| items[limit - 1].0.clone());
        items.truncate(limit);
        Page { items, next }
    }

    /// The active rooms after `after`, in name order.
    pub fn active_page(&self, after: Option<&str>, limit: usize) -> Page<RoomView> {
        // A room that ends between the two reads is left out of this page.
        let mut items: Vec<RoomView> = self
            .active
            .range::<str, _>(from(after))
            .take(limit + 1)
            .filter_map(|name| self.get(name.value()))
            .filter_map(|s| s.room.clone().filter(RoomView::is_active))
            .collect();
        let next = (items.len() > limit).then(|| items[limit - 1].name.clone());
        items.truncate(limit);
        Page { items, next }
    }
}

fn from(after: Option<&str>) -> (Bound<&str>, Bound<&str>) {
    (
        after.map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Unbounded,
    )
}
