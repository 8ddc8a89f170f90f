//! Reads for the frontend and admins: from the snapshots the actors publish
//! (never through a mailbox), else from the database for rooms no actor
//! holds. Each answer comes from one snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::feed::{Feeds, Subscription};
use super::presence::ParticipantList;
use super::published::Page;
use super::snapshot::{RoomSnapshot, RoomView};
use super::state::RoomState;
use super::supervisor::Supervisor;
use crate::event::ParticipantKind;
use crate::record::{RoomRecord, RoomStatus};
use crate::store::{self, StoreError};
use uuid::Uuid;

/// A room and who is in it, as one snapshot had them.
#[derive(Debug, Clone)]
pub struct RoomDetail {
    pub room: RoomView,
    pub participants: ParticipantList,
}

impl Supervisor {
    /// The latest published snapshot of a room with a live actor, or of an
    /// active one whose actor retired (nothing changed it since). On a
    /// cluster only while this node holds the room under a valid lease: a
    /// node resumed after a pause must not answer from memory that another
    /// node may have moved past.
    pub fn snapshot(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
        if !self.owns(name) {
            return None;
        }
        self.inner.parts.snapshots.get(name)
    }

    /// The room instance now or last live under `name`: from the snapshot when
    /// an actor holds the room, else from the database (retired actors, rooms
    /// that ended before a restart).
    pub async fn room_view(&self, name: &str) -> Result<Option<RoomView>, StoreError> {
        Ok(self.room_views(&[name]).await?.pop().flatten())
    }

    /// `room_view` for each of `names` (distinct), with one database query
    /// for all the rooms no actor holds.
    pub async fn room_views(&self, names: &[&str]) -> Result<Vec<Option<RoomView>>, StoreError> {
        let mut views: Vec<Option<RoomView>> = names
            .iter()
            .map(|name| self.snapshot(name).and_then(|s| s.room.clone()))
            .collect();
        // No room can have a NUL in its name (webhooks carrying one are
        // refused), and PostgreSQL would refuse the query.
        let missing: Vec<&str> = names
            .iter()
            .zip(&views)
            .filter(|(name, view)| view.is_none() && !name.contains('\0'))
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            let mut stored: HashMap<String, RoomRecord> = self
                .read(store::find_latest_rooms(&self.inner.parts.db, &missing))
                .await?
                .into_iter()
                .map(|room| (room.name.to_string(), room))
                .collect();
            let mut counts = self.counts_by_kind(stored.values()).await?;
            for (name, view) in names.iter().zip(&mut views) {
                if view.is_none() {
                    *view = stored
                        .remove(*name)
                        .map(|room| RoomView::of_record(&room).with_counts(&mut counts, &room));
                }
            }
        }
        Ok(views)
    }

    /// Live updates of a room, for a new subscriber.
    pub fn subscribe(&self, name: &str, last_event_id: Option<&str>) -> Subscription {
        self.inner.parts.feeds.subscribe(name, last_event_id)
    }

    /// Every room's live-update feed.
    pub fn feeds(&self) -> &Feeds {
        &self.inner.parts.feeds
    }

    /// A subscriber left: a room without an actor keeps no feed nobody reads.
    pub fn unsubscribe(&self, name: &str) {
        let keep = self.inner.parts.registry.contains(name);
        self.inner.parts.feeds.release(name, keep);
    }

    /// A room and who is in it now, both from one snapshot. A room without
    /// an actor is read from the database, with nobody in it: actors retire
    /// only when their room is empty or finished. On a cluster, another
    /// node's room is read whole from what its owner committed.
    pub async fn room_detail(&self, name: &str) -> Result<Option<RoomDetail>, StoreError> {
        if let Some(snapshot) = self.snapshot(name)
            && let Some(room) = &snapshot.room
        {
            return Ok(Some(RoomDetail {
                room: room.clone(),
                participants: snapshot.participants.clone(),
            }));
        }
        if self.inner.parts.ownership.is_some() && !name.contains('\0') {
            let horizon = self.inner.parts.lifecycle.horizon();
            let stored = self
                .read(store::load_room(&self.inner.parts.db, name, horizon))
                .await?;
            let snapshot = RoomSnapshot::of_restored(&RoomState::restore(name.to_owned(), stored));
            return Ok(snapshot.room.map(|room| RoomDetail {
                room,
                participants: snapshot.participants,
            }));
        }
        Ok(self.room_view(name).await?.map(|room| RoomDetail {
            room,
            participants: ParticipantList::default(),
        }))
    }

    /// A page of actors: the snapshots of rooms with a live actor, in name
    /// order after `after` (an active room keeps its snapshot after its
    /// actor retired, and is no actor).
    pub fn snapshots(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Page<(String, Arc<RoomSnapshot>)> {
        let registry = &self.inner.parts.registry;
        self.inner
            .parts
            .snapshots
            .page(after, limit, |name| registry.contains(name))
    }

    /// A room's snapshot while it has a live actor: what admins read of it.
    pub fn actor_snapshot(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
        self.snapshot(name)
            .filter(|_| self.inner.parts.registry.contains(name))
    }

    /// Active rooms in name order after `after`: those held by actors here,
    /// or on a cluster (where each node holds some) those in the database.
    pub async fn live_rooms(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomView>, StoreError> {
        if self.inner.parts.ownership.is_none() {
            return Ok(self.inner.parts.snapshots.active_page(after, limit));
        }
        let page = store::active_rooms_page(&self.inner.parts.db, after, limit as u64);
        let rooms = self.read(page).await?;
        let next = (rooms.len() == limit)
            .then(|| rooms.last().map(|r| r.name.to_string()))
            .flatten();
        let views: Vec<Option<RoomView>> = rooms
            .iter()
            .map(|room| self.snapshot(&room.name).and_then(|s| s.room.clone()))
            .collect();
        let unread = rooms.iter().zip(&views).filter(|(_, v)| v.is_none());
        let mut counts = self.counts_by_kind(unread.map(|(room, _)| room)).await?;
        let items = rooms
            .iter()
            .zip(views)
            .map(|(room, view)| {
                view.unwrap_or_else(|| RoomView::of_record(room).with_counts(&mut counts, room))
            })
            .collect();
        Ok(Page { items, next })
    }

    /// Counts by kind of active rooms read from the database: one query.
    async fn counts_by_kind<'a>(
        &self,
        rooms: impl Iterator<Item = &'a RoomRecord>,
    ) -> Result<HashMap<Uuid, BTreeMap<ParticipantKind, usize>>, StoreError> {
        let active = rooms
            .filter(|r| r.status == RoomStatus::Active)
            .map(|r| r.id);
        self.read(store::open_counts_by_kind(
            &self.inner.parts.db,
            active.collect(),
        ))
        .await
    }

    /// Names of the rooms the database holds as active (with or without an actor).
    pub async fn active_room_names(&self) -> Result<Vec<String>, StoreError> {
        self.read(store::active_room_names(&self.inner.parts.db))
            .await
    }

    /// Whether the database answers, within the deadline of a read.
    pub async fn database_answers(&self) -> bool {
        let ping = async { Ok(self.inner.parts.db.ping().await?) };
        self.read(ping).await.is_ok()
    }

    /// `query` under the deadline of a load. A read without one, on a
    /// connection that stopped answering, held its handler and its pool
    /// slot for good: a few of them, and no room could start (found by the
    /// adversary with /readyz). Abandoned, the connection is closed unless
    /// it answers again (see `store::within`).
    async fn read<T>(
        &self,
        query: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        store::within(self.inner.parts.lifecycle.load_timeout, query).await
    }
}
