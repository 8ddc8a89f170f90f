//! The supervisor: the handle the HTTP layer and the reconciler talk to, so
//! they never touch actix types. Its jobs are split by file: this one starts,
//! restarts and rebuilds actors (through the `registry`) and reports status;
//! `delivery` admits webhooks and hands them to the actors; `reads` answers
//! the frontend from the published snapshots, else the database.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::actor::{ActorParts, Lifecycle, Registry, RoomActor, Snapshots};
use super::feed::Feeds;
use super::messages::{Claim, Retire, StepDown};
use super::registry::Found;
use super::snapshot::RoomSnapshot;
use super::state::{Correction, RoomState};
use crate::metrics::Metrics;
use crate::record::StoredRoom;
use crate::shard::{Fence, Ownership};
use crate::store::{self, Loader, StoreError, Writer};

/// Rooms read per query during recovery (bounds its transient memory: a
/// page and the next one being read).
const RECOVERY_PAGE: u64 = 500;
/// Rooms recovered between looks at the next page's queries.
const RECOVERY_YIELD: usize = 25;

/// The room's shard is held by another node.
#[derive(Debug, Clone, Copy)]
pub struct NotOwner;

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

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub mailbox_capacity: usize,
    /// Deliveries handled at once across all rooms.
    pub max_in_flight: usize,
    /// How long a delivery waits for its commit before it is answered 503.
    pub commit_timeout: Duration,
    pub lifecycle: Lifecycle,
    /// Whether rooms are reconciled against LiveKit (`livekit.url` is set):
    /// only then do actors keep who changed lately ([`Touched`]).
    ///
    /// [`Touched`]: super::state::Touched
    pub reconciles: bool,
}

/// What admins see of the supervisor.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStatus {
    /// Rooms with an actor, running or parked.
    pub live_actors: usize,
    /// Of those, the rooms with nobody in whose actors are parked between
    /// events (no task or mailbox).
    pub parked_actors: usize,
    pub restarts: u64,
    pub recovered: bool,
    pub last_reconcile: Option<ReconcileReport>,
}

pub(super) struct Inner {
    pub(super) parts: Arc<ActorParts>,
    arbiter: ArbiterHandle,
    pub(super) settings: SupervisorSettings,
    recovered: AtomicBool,
    /// Deliveries admitted and not yet handled, all rooms together.
    pub(super) in_flight: Arc<AtomicUsize>,
    last_reconcile: Mutex<Option<ReconcileReport>>,
}

/// The handle to the supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    pub(super) inner: Arc<Inner>,
}

impl Supervisor {
    /// Room actors run on `arbiter`, away from the HTTP workers.
    pub fn new(
        db: DatabaseConnection,
        writer: Writer,
        arbiter: ArbiterHandle,
        settings: SupervisorSettings,
        ownership: Option<Arc<Ownership>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let loader = Loader::start(db.clone(), settings.lifecycle.load_timeout, {
            let arbiter = arbiter.clone();
            move |task| {
                arbiter.spawn(task);
            }
        });
        let parts = Arc::new(ActorParts {
            db,
            writer,
            loader,
            registry: Registry::default(),
            snapshots: Snapshots::default(),
            mailbox_capacity: settings.mailbox_capacity.max(1),
            lifecycle: settings.lifecycle,
            reconciles: settings.reconciles,
            metrics,
            feeds: Arc::new(Feeds::default()),
            ownership,
        });
        arbiter.spawn(sweep_retirements(
            Arc::downgrade(&parts.registry),
            settings.lifecycle.sweep_every(),
        ));
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

    fn registry(&self) -> &super::registry::Registry {
        &self.inner.parts.registry
    }

    /// Rebuilds an actor for every room that is active in the database.
    /// Returns how many; reads see them as soon as this returns.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let count = self.recover_where(|_| true).await?;
        self.mark_recovered();
        Ok(count)
    }

    /// Webhooks are let in from now on.
    pub fn mark_recovered(&self) {
        self.inner.recovered.store(true, Ordering::Release);
    }

    /// Rebuilds an actor for every active room whose name `keep`s and that
    /// has none (on a cluster: the rooms of shards just taken).
    pub async fn recover_where(&self, keep: impl Fn(&str) -> bool) -> Result<usize, StoreError> {
        let db = &self.inner.parts.db;
        let horizon = self.inner.parts.lifecycle.horizon();
        let mut count = 0;
        let mut page = store::load_active_rooms(db, None, RECOVERY_PAGE, horizon, &keep).await?;
        loop {
            // The next page is read while this one's actors start, so the
            // database's time and ours overlap (they added up before).
            let next = page.next.map(|after| {
                store::load_active_rooms(db, Some(after), RECOVERY_PAGE, horizon, &keep)
            });
            let start = async {
                for (i, (name, stored)) in page.rooms.into_iter().enumerate() {
                    if i % RECOVERY_YIELD == 0 {
                        // Lets the next page's queries go out and come back.
                        tokio::task::yield_now().await;
                    }
                    if self.recover_one(name, stored, &keep) {
                        count += 1;
                    }
                }
            };
            match next {
                Some(next) => page = futures_util::future::join(next, start).await.0?,
                None => {
                    start.await;
                    return Ok(count);
                }
            }
        }
    }

    /// Starts the actor of one recovered room, unless `keep` declines it or
    /// it has one.
    fn recover_one(&self, name: Arc<str>, stored: StoredRoom, keep: impl Fn(&str) -> bool) -> bool {
        if !keep(&name) || self.registry().contains(&name) {
            return false;
        }
        let Some(fence) = self.fence(&name) else {
            return false;
        };
        let state = RoomState::restore(name.clone(), stored);
        // Published only with our actor: one a webhook started meanwhile
        // has published newer state, which this must not cover.
        self.registry().start_if_absent(name.clone(), || {
            let snapshot = RoomSnapshot::of_restored(&state);
            self.inner.parts.snapshots.insert(&name, Arc::new(snapshot));
            self.start_actor(name, Some(state), fence)
        });
        true
    }

    /// Whether this node may write `room`: always on a single node; on a
    /// cluster, while it holds the room's shard.
    pub fn owns(&self, room: &str) -> bool {
        self.fence(room).is_some()
    }

    /// `Some(None)`: writable without a fence (single node); `Some(fence)`:
    /// writable under it; `None`: another node's room.
    fn fence(&self, room: &str) -> Option<Option<Fence>> {
        match &self.inner.parts.ownership {
            None => Some(None),
            Some(ownership) => ownership.fence(room).map(Some),
        }
    }

    /// Sends the actors of every room `lost` names away (their shard moved
    /// to another node); returns how many.
    pub fn step_down(&self, lost: impl Fn(&str) -> bool) -> usize {
        let leaving = self.registry().matching(&lost);
        for (_, addr) in &leaving {
            addr.do_send(StepDown);
        }
        // A parked actor has nothing in flight: it just goes. (One that
        // parks after this, with `StepDown` unread, is never used again:
        // its room is refused here, and the fence it holds is stale if the
        // shard comes back; its retirement time takes it off.)
        let mut parked = self.registry().take_parked_where(&lost);
        for actor in &mut parked {
            actor.step_down_parked();
        }
        let parked = parked.len();
        // Rooms whose actors retired keep their snapshots (active ones do);
        // once another node may change them, they are not this node's to show.
        self.inner.parts.snapshots.remove_where(&lost);
        leaving.len() + parked
    }

    pub fn is_recovered(&self) -> bool {
        self.inner.recovered.load(Ordering::Acquire)
    }

    fn start_actor(
        &self,
        name: Arc<str>,
        preloaded: Option<RoomState>,
        fence: Option<Fence>,
    ) -> Addr<RoomActor> {
        let inner = self.inner.clone();
        RoomActor::start_in_arbiter(&self.inner.arbiter, move |_| {
            RoomActor::new(name, preloaded, fence, &inner.parts)
        })
    }

    /// Starts `parked` again as its room's actor, if it was parked under
    /// `fence` (else a new actor loads the room: the shard has moved since).
    fn unpark(
        &self,
        name: Arc<str>,
        parked: Box<RoomActor>,
        fence: Option<Fence>,
    ) -> Addr<RoomActor> {
        if parked.fence() != fence {
            return self.start_actor(name, None, fence);
        }
        RoomActor::start_in_arbiter(&self.inner.arbiter, move |_| *parked)
    }

    /// The actor for `name` (started if there is none) and a slot in its
    /// mailbox; `None` when the mailbox is full. An actor that died without
    /// unregistering (it panicked) is replaced: the new one loads the
    /// committed state. On a cluster, only for a room of a shard this node
    /// holds (`NotOwner` otherwise).
    pub(super) fn actor(&self, name: &str) -> Result<Option<(Addr<RoomActor>, Claim)>, NotOwner> {
        let fence = self.fence(name).ok_or(NotOwner)?;
        let (actor, found) =
            self.registry()
                .actor(
                    name,
                    self.inner.parts.mailbox_capacity,
                    |key, parked| match parked {
                        Some(parked) => self.unpark(key, parked, fence),
                        None => self.start_actor(key, None, fence),
                    },
                );
        if let Found::Restarted = found {
            self.inner.parts.metrics.actor_restarts.inc();
            tracing::warn!(room = %name, "room actor died; restarted it from the database");
        }
        Ok(actor)
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
        self.registry().depth(room)
    }

    /// Messages waiting in every mailbox.
    pub fn mailbox_depth_total(&self) -> usize {
        self.registry().total_depth()
    }

    /// Deliveries admitted and not yet handled, all rooms together.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// How many room actors are registered.
    pub fn live_actors(&self) -> usize {
        self.registry().len()
    }

    /// Rooms whose actors are parked: O(rooms).
    pub fn parked_actors(&self) -> usize {
        self.registry().parked()
    }

    pub fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            live_actors: self.live_actors(),
            parked_actors: self.parked_actors(),
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

/// Asks every actor whose retirement time has come to retire, now and then,
/// until the registry is gone.
async fn sweep_retirements(registry: std::sync::Weak<super::registry::Registry>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let now = super::registry::Moment::now();
        for actor in registry.due(now) {
            actor.do_send(Retire);
        }
        for mut parked in registry.take_due_parked(now) {
            parked.retire_parked();
        }
    }
}
