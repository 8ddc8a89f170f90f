//! The supervisor: owns the registry of room actors, starts one on the first
//! event of a room, rebuilds the live rooms at start, restarts crashed ones,
//! and is the handle the HTTP layer and the reconciler talk to, so they never
//! touch actix types and mailbox errors become one error type here.
//!
//! It never holds two actors for one name: actors are created inside the
//! registry's entry lock, and an actor loads its state after it is
//! registered (its first message waits for that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use actix::prelude::*;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use tokio::sync::oneshot;

use super::actor::{ActorParts, Lifecycle, Registry, RoomActor, RoomEntry, Snapshots};
use super::feed::{Feeds, Subscription};
use super::messages::{Apply, Claim, Delivered, Reconcile, Reconciled, RoomError};
use super::published::Page;
use super::snapshot::{ParticipantView, RoomSnapshot, RoomView};
use super::state::{Correction, Outcome, RoomState};
use crate::event::{Action, Delivery, RoomTruth};
use crate::metrics::Metrics;
use crate::record::RoomRecord;
use crate::record::{Committed, EventRecord};
use crate::store::{self, StoreError, Writer};

/// Rooms read per query during recovery (bounds its transient memory).
const RECOVERY_PAGE: u64 = 500;

/// What the last reconciliation round found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub finished_at: DateTime<Utc>,
    /// Rooms compared with LiveKit's view (LiveKit's and roomd's together).
    pub rooms_checked: usize,
    /// Rooms left for the next round: a webhook raced the fetch, or the room was busy.
    pub rooms_skipped: usize,
    pub corrections: Vec<Correction>,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("room {room:?} is busy: its mailbox is full")]
    Busy { room: String },
    #[error("roomd is busy: {limit} webhooks are already waiting for their commits")]
    Overloaded { limit: usize },
    #[error("the event for room {room:?} could not be committed: {reason}")]
    Unavailable { room: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub mailbox_capacity: usize,
    /// Deliveries handled at once across all rooms.
    pub max_in_flight: usize,
    /// How long a delivery waits for its commit before it is answered 503.
    pub commit_timeout: Duration,
    pub lifecycle: Lifecycle,
}

/// What admins see of the supervisor.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStatus {
    pub live_actors: usize,
    pub restarts: u64,
    pub recovered: bool,
    pub last_reconcile: Option<ReconcileReport>,
}

struct Inner {
    parts: ActorParts,
    arbiter: ArbiterHandle,
    settings: SupervisorSettings,
    recovered: AtomicBool,
    /// Deliveries admitted and not yet handled, all rooms together.
    in_flight: Arc<AtomicUsize>,
    last_reconcile: Mutex<Option<ReconcileReport>>,
}

/// The handle to the supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl Rooms {
    /// Room actors run on `arbiter`, away from the HTTP workers.
    pub fn new(
        db: DatabaseConnection,
        writer: Writer,
        arbiter: ArbiterHandle,
        settings: SupervisorSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let parts = ActorParts {
            db,
            writer,
            registry: Registry::default(),
            snapshots: Snapshots::default(),
            mailbox_capacity: settings.mailbox_capacity.max(1),
            lifecycle: settings.lifecycle,
            metrics,
            feeds: Arc::new(Feeds::default()),
        };
        Self {
            inner: Arc::new(Inner {
                parts,
                arbiter,
                settings,
                recovered: AtomicBool::new(false),
                in_flight: Arc::new(AtomicUsize::new(0)),
                last_reconcile: Mutex::new(None),
            }),
        }
    }

    fn registry(&self) -> &DashMap<String, RoomEntry> {
        &self.inner.parts.registry
    }

    /// Rebuilds an actor for every room that is active in the database.
    /// Returns how many; reads see them as soon as this returns.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut after = None;
        let horizon = self.inner.parts.lifecycle.horizon();
        loop {
            let page =
                store::load_active_rooms(&self.inner.parts.db, after, RECOVERY_PAGE, horizon)
                    .await?;
            let Some((_, last)) = page.last() else { break };
            after = last.latest.as_ref().map(|(room, _)| room.id);
            count += page.len();
            for (name, stored) in page {
                let state = RoomState::restore(name.clone(), stored);
                let snapshot = RoomSnapshot::of(
                    &state,
                    &Default::default(),
                    Default::default(),
                    chrono::Utc::now(),
                );
                self.inner.parts.snapshots.insert(&name, Arc::new(snapshot));
                if let Entry::Vacant(slot) = self.registry().entry(name.clone()) {
                    slot.insert(self.start_actor(name, Some(state)));
                }
            }
        }
        self.inner.recovered.store(true, Ordering::Release);
        Ok(count)
    }

    pub fn is_recovered(&self) -> bool {
        self.inner.recovered.load(Ordering::Acquire)
    }

    fn start_actor(&self, name: String, preloaded: Option<RoomState>) -> RoomEntry {
        let inner = self.inner.clone();
        let addr = RoomActor::start_in_arbiter(&self.inner.arbiter, move |_| {
            RoomActor::new(name, preloaded, &inner.parts)
        });
        RoomEntry {
            addr,
            depth: Arc::default(),
        }
    }

    /// The actor for `name`, started if there is none. An entry whose actor
    /// died without unregistering (it panicked) is replaced: the new actor
    /// loads the committed state.
    fn actor(&self, name: &str) -> RoomEntry {
        if let Some(entry) = self.registry().get(name).filter(|e| e.addr.connected()) {
            return entry.clone();
        }
        match self.registry().entry(name.to_owned()) {
            Entry::Occupied(slot) if slot.get().addr.connected() => slot.get().clone(),
            Entry::Occupied(mut slot) => {
                self.inner.parts.metrics.actor_restarts.inc();
                tracing::warn!(room = %name, "room actor died; restarting it from the database");
                let entry = self.start_actor(name.to_owned(), None);
                slot.insert(entry.clone());
                entry
            }
            Entry::Vacant(slot) => slot.insert(self.start_actor(name.to_owned(), None)).clone(),
        }
    }

    /// Hands one delivery over and waits until it is committed.
    pub async fn deliver(&self, delivery: Delivery) -> Result<Delivered, DeliverError> {
        let room_name = delivery
            .room
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let unavailable = |reason: String| DeliverError::Unavailable {
            room: room_name.clone(),
            reason,
        };
        if !self.is_recovered() {
            return Err(unavailable("roomd is still rebuilding its rooms".into()));
        }
        let admission = Claim::take(&self.inner.in_flight, self.inner.settings.max_in_flight)
            .ok_or(DeliverError::Overloaded {
                limit: self.inner.settings.max_in_flight,
            })?;
        let (room, event) = match (&delivery.action, &delivery.room) {
            (Action::Apply(event), Some(room)) => (room.clone(), event.clone()),
            _ => {
                let recorded = self.record_only(delivery).await;
                drop(admission);
                return recorded.map_err(|e| unavailable(e.to_string()));
            }
        };
        let (reply, done) = oneshot::channel();
        let msg = |slot| Apply {
            delivery,
            room,
            event,
            reply,
            slot,
            admission: Some(admission),
            span: tracing::Span::current(),
        };
        self.ask(&room_name, msg, done).await
    }

    /// Hands `msg` to the room's actor and waits, at most the commit
    /// timeout, for the answer it sends on `done`.
    async fn ask<M, T>(
        &self,
        room: &str,
        msg: impl FnOnce(Claim) -> M,
        done: oneshot::Receiver<Result<T, RoomError>>,
    ) -> Result<T, DeliverError>
    where
        M: Message<Result = ()> + Send + 'static,
        RoomActor: Handler<M>,
    {
        let unavailable = |reason: String| DeliverError::Unavailable {
            room: room.to_owned(),
            reason,
        };
        let busy = || DeliverError::Busy {
            room: room.to_owned(),
        };
        let entry = self.actor(room);
        let slot = Claim::take(&entry.depth, self.inner.parts.mailbox_capacity).ok_or_else(busy)?;
        match entry.addr.try_send(msg(slot)) {
            Ok(()) => {}
            Err(SendError::Full(_)) => return Err(busy()),
            Err(SendError::Closed(_)) => {
                return Err(unavailable("the room's actor is restarting".into()));
            }
        }
        match tokio::time::timeout(self.inner.settings.commit_timeout, done).await {
            Ok(Ok(result)) => result.map_err(|e| unavailable(e.to_string())),
            Ok(Err(_)) => Err(unavailable(
                "the room's actor stopped before committing".into(),
            )),
            Err(_) => Err(unavailable("timed out waiting for the commit".into())),
        }
    }

    /// Sends LiveKit's truth about one room through the room's actor, so a
    /// correction is ordered with the room's webhooks.
    pub async fn reconcile_room(
        &self,
        name: &str,
        truth: Option<RoomTruth>,
        fetched_at: DateTime<Utc>,
    ) -> Result<Reconciled, DeliverError> {
        let (reply, done) = oneshot::channel();
        let msg = |slot| Reconcile {
            truth,
            fetched_at,
            reply,
            slot,
        };
        self.ask(name, msg, done).await
    }

    /// Events roomd does not act on (tracks, egress, ingress, ...): an audit
    /// row, committed like everything else, and no actor.
    async fn record_only(&self, delivery: Delivery) -> Result<Delivered, StoreError> {
        let participant = delivery.participant();
        let record = EventRecord {
            event_id: delivery.id.clone(),
            event: delivery.event.clone(),
            room_name: delivery.room.as_ref().map(|r| r.name.clone()),
            room_sid: delivery.room.as_ref().and_then(|r| r.sid.clone()),
            room_id: None,
            participant_identity: participant.map(|p| p.identity.clone()),
            participant_sid: participant.and_then(|p| p.sid.clone()),
            created_at: delivery.created_at,
            received_at: delivery.received_at,
            outcome: Outcome::Ignored.as_str(),
        };
        match self
            .inner
            .parts
            .writer
            .commit(record, Default::default())
            .await?
        {
            Committed::Stored => Ok(Delivered::Committed(Outcome::Ignored)),
            Committed::Duplicate => Ok(Delivered::Duplicate),
        }
    }

    /// The latest published snapshot of a room with a live actor.
    pub fn snapshot(&self, name: &str) -> Option<Arc<RoomSnapshot>> {
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
            let mut stored: HashMap<String, RoomRecord> =
                store::find_latest_rooms(&self.inner.parts.db, &missing)
                    .await?
                    .into_iter()
                    .map(|room| (room.name.clone(), room))
                    .collect();
            for (name, view) in names.iter().zip(&mut views) {
                if view.is_none() {
                    *view = stored.remove(*name).as_ref().map(RoomView::of_record);
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
        let keep = self.registry().contains_key(name);
        self.inner.parts.feeds.release(name, keep);
    }

    /// Who is in the room now. A room without a snapshot has nobody in it:
    /// actors retire only when their room is empty or finished.
    pub fn participants(&self, name: &str) -> Vec<ParticipantView> {
        self.snapshot(name)
            .map(|s| s.participants.clone())
            .unwrap_or_default()
    }

    /// Published snapshots in name order after `after`: a page of actors.
    pub fn snapshots(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Page<(String, Arc<RoomSnapshot>)> {
        self.inner.parts.snapshots.page(after, limit)
    }

    /// Active rooms held by actors, in name order after `after`.
    pub fn live_rooms(&self, after: Option<&str>, limit: usize) -> Page<RoomView> {
        self.inner.parts.snapshots.active_page(after, limit)
    }

    /// Names of the rooms the database holds as active (with or without an actor).
    pub async fn active_room_names(&self) -> Result<Vec<String>, StoreError> {
        store::active_room_names(&self.inner.parts.db).await
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.parts.metrics
    }

    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.inner.parts.metrics.clone()
    }

    pub fn set_reconcile_report(&self, report: ReconcileReport) {
        *self
            .inner
            .last_reconcile
            .lock()
            .expect("reconcile report lock") = Some(report);
    }

    /// Messages waiting in a room's mailbox.
    pub fn mailbox_depth(&self, room: &str) -> usize {
        self.registry()
            .get(room)
            .map_or(0, |e| e.depth.load(Ordering::Relaxed))
    }

    /// Messages waiting in every mailbox.
    pub fn mailbox_depth_total(&self) -> usize {
        self.registry()
            .iter()
            .map(|e| e.depth.load(Ordering::Relaxed))
            .sum()
    }

    /// Deliveries admitted and not yet handled, all rooms together.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// How many room actors are registered.
    pub fn live_actors(&self) -> usize {
        self.registry().len()
    }

    pub fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            live_actors: self.live_actors(),
            restarts: self.inner.parts.metrics.actor_restarts.get(),
            recovered: self.is_recovered(),
            last_reconcile: self
                .inner
                .last_reconcile
                .lock()
                .expect("reconcile report lock")
                .clone(),
        }
    }
}
