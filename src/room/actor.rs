//! The actor that owns one room name: it applies that room's events one at a
//! time and is the only writer of its rows.
//!
//! Each `Apply` (and `Reconcile`) runs as an `AtomicResponse`: the commit is
//! awaited before the next message is let in, so a room's order is the order
//! its events were applied and committed. The new state becomes visible
//! (snapshot published, reply sent) only after the commit. If the commit
//! fails, or the state machine panics, the actor stops and is rebuilt from the
//! database on the next event, so memory never runs ahead of (or behind) what
//! is committed.
//!
//! An actor retires itself a grace period after its room finishes, and after
//! an idle timeout with nobody in; the room stays readable from the database.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tokio::sync::oneshot;

use super::feed::Feeds;
use super::messages::RoomError;
use super::published::{Published, Slot};
use super::registry;
use super::snapshot::{Counters, LastEvent, RoomSnapshot, RoomView};
use super::state::{Outcome, RoomState, Touched, Transition};
use crate::event::Label;
use crate::metrics::Metrics;
use crate::record::StoredRoom;
use crate::record::{Committed, EventRecord};
use crate::shard::{Fence, Ownership};
use crate::store::{self, Loader, StoreError, Writer};

/// Events an actor keeps for the debug view.
mod handlers;

const RECENT: usize = 16;

pub type Registry = Arc<registry::Registry>;
pub type Snapshots = Arc<Published>;

/// How often an actor forgets history older than its horizon.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// When actors retire themselves, and how much history they keep.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    pub retire_after_finish: Duration,
    pub idle_timeout: Duration,
    /// Closed sessions, tombstones and ended sids older than this are
    /// forgotten (the database keeps them).
    pub history_horizon: Duration,
    /// How long loading a room from the database may take: a connection
    /// that stopped answering must not hold the room.
    pub load_timeout: Duration,
}

impl Lifecycle {
    /// How much history an actor keeps, as a span of time.
    /// At most a century: a larger horizon keeps everything anyway, and
    /// subtracting chrono's maximum from a date overflows (panics).
    fn history(&self) -> chrono::Duration {
        let century = chrono::TimeDelta::days(36_525);
        chrono::Duration::from_std(self.history_horizon).map_or(century, |h| h.min(century))
    }

    /// How often the supervisor looks for actors due to retire: a fraction
    /// of the shorter wait, so an actor retires at most that much late.
    pub fn sweep_every(&self) -> Duration {
        (self.idle_timeout.min(self.retire_after_finish) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The oldest history worth keeping, as of now.
    pub fn horizon(&self) -> DateTime<Utc> {
        Utc::now() - self.history()
    }
}

/// What every room actor shares with the supervisor.
pub struct ActorParts {
    pub db: DatabaseConnection,
    pub writer: Writer,
    /// Loads rooms for starting actors, several to a query.
    pub loader: Loader,
    pub registry: Registry,
    pub snapshots: Snapshots,
    pub mailbox_capacity: usize,
    pub lifecycle: Lifecycle,
    /// See [`SupervisorSettings::reconciles`](super::SupervisorSettings).
    pub reconciles: bool,
    pub metrics: Arc<Metrics>,
    pub feeds: Arc<Feeds>,
    /// On a cluster, the shards this node holds; `None` on a single node.
    pub ownership: Option<Arc<Ownership>>,
}

pub struct RoomActor {
    /// One copy per room, shared with its registry and published entries.
    name: Arc<str>,
    /// On a cluster: the shard and epoch this actor's state was loaded
    /// under. Every commit carries it, and the database refuses it once the
    /// shard has moved on.
    fence: Option<Fence>,
    /// `None` until the committed state is loaded, or the state the
    /// caller read (recovery at start) until the actor starts.
    state: Option<RoomState>,
    /// Shared by every actor (one pointer each, not a copy per room).
    parts: Arc<ActorParts>,
    /// The last events handled, newest last (at most `RECENT`).
    recent: VecDeque<Arc<LastEvent>>,
    /// When this actor last committed a change (webhook or reconcile).
    last_change: registry::Moment,
    /// Who changed lately, so a busy room can still be reconciled.
    touched: Touched,
    counters: Counters,
    started_at: DateTime<Utc>,
    /// When this actor last told the registry it may retire.
    retire_at: Option<registry::Moment>,
    /// When history past the horizon was last forgotten.
    forgot_at: registry::Moment,
    /// This room's entry among the published snapshots, once published.
    published: Option<Arc<Slot>>,
}

/// What a withdrawing actor does with its room's published snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    Keep,
    Remove,
}

impl RoomActor {
    /// `preloaded` is the room's committed state when the caller already read
    /// it (recovery at start); otherwise the actor loads it before its first message.
    pub fn new(
        name: Arc<str>,
        preloaded: Option<RoomState>,
        fence: Option<Fence>,
        parts: &Arc<ActorParts>,
    ) -> Self {
        Self {
            name,
            fence,
            state: preloaded,
            parts: parts.clone(),
            recent: VecDeque::new(),
            last_change: registry::Moment::now(),
            touched: Touched::default(),
            counters: Counters::default(),
            started_at: Utc::now(),
            retire_at: None,
            forgot_at: registry::Moment::now(),
            published: None,
        }
    }

    fn remember(&mut self, event: LastEvent) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::new(event));
    }

    fn publish(&mut self) {
        if let Some(state) = &self.state {
            let snapshot = RoomSnapshot::of(state, &self.recent, self.counters, self.started_at);
            self.parts
                .snapshots
                .publish(&self.name, Arc::new(snapshot), &mut self.published);
        }
    }

    /// Tells live subscribers what the last commit changed.
    fn publish_update(&self, event: &str, identity: Option<String>) {
        if let Some(room) = self.state.as_ref().and_then(|s| s.current()) {
            self.parts
                .feeds
                .publish(&self.name, event, identity, || RoomView::of_instance(room));
        }
    }

    fn loaded(&mut self, state: RoomState, ctx: &mut Context<Self>) {
        self.state = Some(state);
        self.publish();
        self.schedule_retirement(ctx);
        self.park_if_quiet(ctx);
    }

    /// The shard and epoch this actor's state was loaded under.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }

    /// Parks the actor when its room has nobody in and nothing waits in
    /// its mailbox (see the registry): a quiet room costs its state, not a
    /// task. Its snapshot and live feed stay; its next event resumes it.
    fn park_if_quiet(&mut self, ctx: &mut Context<Self>) {
        // Quiet is what may retire: loaded, and nobody in a live instance.
        if self.may_retire_at().is_none() {
            return;
        }
        // On a cluster, only while the room's shard is still held as it was
        // loaded. Checked under the entry's lock: a step-down that began
        // before it found this actor running (and told it), and one that
        // began after it is seen here, so no parked actor outlives its shard.
        let still_owned = |actor: &Self| {
            actor
                .parts
                .ownership
                .as_ref()
                .is_none_or(|ownership| ownership.fence(&actor.name) == actor.fence)
        };
        let registry = self.parts.registry.clone();
        let name = self.name.clone();
        if registry.park(&name, &ctx.address(), || {
            still_owned(self).then(|| self.take())
        }) {
            tracing::debug!(room = %self.name, "room actor parked");
            ctx.stop();
        }
    }

    /// This actor's fields, as the one its room's next event resumes.
    fn take(&mut self) -> Self {
        Self {
            name: self.name.clone(),
            fence: self.fence,
            state: self.state.take(),
            parts: self.parts.clone(),
            recent: std::mem::take(&mut self.recent),
            last_change: self.last_change,
            // A parked room is quiet: what changed before it parked is
            // not worth its memory (a list fetched before that waits for
            // the next round, as every list did before there was this log).
            touched: Touched::default(),
            counters: self.counters,
            started_at: self.started_at,
            retire_at: self.retire_at,
            forgot_at: self.forgot_at,
            published: self.published.take(),
        }
    }

    /// A parked actor's retirement (its time came while it was parked).
    pub fn retire_parked(&mut self) {
        tracing::debug!(room = %self.name, "parked room actor retires");
        let snapshot = self.retiring_snapshot();
        self.withdraw(snapshot);
    }

    /// A parked actor's step-down (its room's shard left this node): as a
    /// running actor's, its live feed ends, so that subscribers reconnect
    /// through the room's new owner (found by the adversary: such streams
    /// stayed open and silent), and its snapshot goes.
    pub fn step_down_parked(&mut self) {
        tracing::info!(room = %self.name, "the room's shard left this node; its parked actor goes");
        self.withdraw(Snapshot::Remove);
    }

    /// What a retiring actor does with its room's snapshot. An active room
    /// (with nobody in: an occupied one never retires) keeps it, so it
    /// stays in the room list. Only the room's actor writes it, so it is
    /// what the database holds until the next event starts one; a node
    /// that loses the room's shard removes it (`Supervisor::step_down`).
    fn retiring_snapshot(&self) -> Snapshot {
        let active = self
            .state
            .as_ref()
            .and_then(RoomState::current)
            .is_some_and(|room| room.is_active());
        if active {
            Snapshot::Keep
        } else {
            Snapshot::Remove
        }
    }

    /// Rebuilds the room from what the database committed, after a failed
    /// commit or a panic: the in-memory state may be ahead of it. Until the
    /// load is in, no message is handled and the published snapshot stays
    /// the last committed one, so readers never see the attempted state.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        self.parts.metrics.actor_restarts.inc();
        self.state = None;
        self.load(ctx);
    }

    /// Loads the committed state before the next message is handled
    /// (`ctx.wait`). If the database cannot answer, the actor stops: the
    /// next event for the room starts a new one, which tries again.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let loader = self.parts.loader.clone();
        let name = self.name.clone();
        let horizon = self.parts.lifecycle.horizon();
        let deadline = self.parts.lifecycle.load_timeout;
        let load = async move { store::within(deadline, loader.load(name, horizon)).await };
        ctx.wait(
            load.into_actor(self)
                .map(|loaded: Result<StoredRoom, StoreError>, act, ctx| match loaded {
                    Ok(stored) => {
                        let state = RoomState::restore(act.name.clone(), stored);
                        act.loaded(state, ctx);
                    }
                    Err(err) => {
                        tracing::warn!(room = %act.name, error = %err, "cannot load room; its events get 503 until the database answers");
                        act.unregister(ctx);
                        ctx.stop();
                    }
                }),
        );
    }

    /// Leaves the room to the node that owns it now: no snapshot or feed of
    /// it stays here, and the next event for it is sent on to the owner.
    fn step_down(&mut self, ctx: &mut Context<Self>) {
        self.unregister(ctx);
        self.withdraw(Snapshot::Remove);
        self.state = None;
        ctx.stop();
    }

    /// Ends this actor's hold on the room's live feed and its published
    /// snapshot, and takes the snapshot away unless told to keep it: reads
    /// then fall back to the database, or to the room's next actor.
    fn withdraw(&mut self, snapshot: Snapshot) {
        if snapshot == Snapshot::Remove {
            self.parts.snapshots.remove(&self.name);
        }
        self.published = None;
        self.parts.feeds.close(&self.name);
    }

    fn unregister(&self, ctx: &Context<Self>) {
        self.parts.registry.remove(&self.name, &ctx.address());
    }

    /// When this actor may retire, if it may at all.
    fn may_retire_at(&self) -> Option<registry::Moment> {
        let state = self.state.as_ref()?;
        let wait = match state.current() {
            Some(room) if room.is_active() && room.record().current_participants > 0 => {
                return None;
            }
            Some(room) if room.is_active() => self.parts.lifecycle.idle_timeout,
            _ => self.parts.lifecycle.retire_after_finish,
        };
        Some(self.last_change.after(wait))
    }

    /// Tells the registry when this actor may retire. The supervisor's
    /// sweep sends `Retire` once that time has come: one task for every
    /// room, where a timer per actor cost each idle room 126 bytes and
    /// every commit a timer cancelled and a new one boxed.
    fn schedule_retirement(&mut self, ctx: &mut Context<Self>) {
        let at = self.may_retire_at().unwrap_or(registry::Moment::NEVER);
        if self.retire_at != Some(at) {
            self.retire_at = Some(at);
            self.parts
                .registry
                .set_retire_at(&self.name, &ctx.address(), at);
        }
    }

    /// Retires now if the room still may (`Retire`).
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if self
            .may_retire_at()
            .is_none_or(|at| at > registry::Moment::now())
        {
            // A commit since moved the time (or the room filled up), or the
            // registry never heard it: its entry was made after the actor
            // said. Say it again, whether or not it changed.
            self.retire_at = None;
            self.schedule_retirement(ctx);
            return;
        }
        // Off the registry first, so the next event starts a fresh actor;
        // but not while a delivery holds a mailbox slot: its message would
        // be dropped unhandled. The next sweep asks again. (No commit is in
        // flight: a message is handled only between commits.)
        if !self.parts.registry.retire(&self.name, &ctx.address()) {
            return;
        }
        tracing::debug!(room = %self.name, "room actor retires");
        let snapshot = self.retiring_snapshot();
        self.withdraw(snapshot);
        ctx.stop();
    }

    /// Forgets history past the horizon, now and then.
    fn forget_old_history(&mut self) {
        if self.forgot_at.elapsed() < FORGET_EVERY {
            return;
        }
        self.forgot_at = registry::Moment::now();
        let history = self.parts.lifecycle.history();
        if let Some(state) = &mut self.state {
            state.forget_older_than(history, Utc::now());
        }
        self.touched.forget(crate::event::now());
    }

    /// The one path from "the state machine said X" to "committed,
    /// published, answered". `transition` is committed with its audit row;
    /// once committed, `next` says where the room's new state is, and `done`
    /// turns the result into the answer and the live update. The snapshot is published before the update and the
    /// answer, so a read after the 200 sees what the 200 acknowledged, and a
    /// stream never shows an update its snapshot lacks.
    ///
    /// The failure rule: when the database did not take the change (or took
    /// it before, from a state this actor does not have), nothing is
    /// published and the actor reloads the room from the database before its
    /// next message (`restart`).
    fn commit<T: 'static>(
        &mut self,
        next: Next,
        transition: Transition,
        record: EventRecord,
        reply: oneshot::Sender<T>,
        done: impl FnOnce(&mut Self, Result<Committed, RoomError>) -> (T, Option<LiveUpdate>) + 'static,
    ) -> ResponseActFuture<Self, ()> {
        let writer = self.parts.writer.clone();
        let changed = !transition.changes.is_empty();
        let outcome = transition.outcome;
        let changes = transition.changes;
        let fence = self.fence;
        let commit = async move { writer.commit(record, changes, fence).await };
        Box::pin(commit.into_actor(self).map(
            move |committed, act, ctx| {
                let mut fenced = false;
                let keep = match &committed {
                    Ok(Committed::Stored) => {
                        if let Next::Swap(next) = next {
                            act.state = Some(*next);
                        }
                        if outcome == Outcome::Applied {
                            act.last_change = registry::Moment::now();
                        }
                        true
                    }
                    // A redelivery changes nothing in a state that has seen
                    // the event; one that changed it here (the state was
                    // rebuilt, or lost a race) must not stay ahead of the
                    // database.
                    Ok(Committed::Duplicate) if changed && matches!(next, Next::InPlace) => {
                        tracing::info!(room = %act.name, "a redelivery changed the in-memory room; rebuilding it from the database");
                        false
                    }
                    Ok(Committed::Duplicate) => true,
                    Err(err @ StoreError::Fenced { .. }) => {
                        tracing::warn!(room = %act.name, error = %err, "commit refused by the fence; this node no longer owns the room");
                        fenced = true;
                        false
                    }
                    Err(StoreError::SidTaken { .. }) => {
                        // Nothing was stored; the refusal is logged with its
                        // answer (409). The state applied it: rebuild.
                        false
                    }
                    Err(err) => {
                        // The commit may or may not have happened: only the
                        // database knows. Rebuild from it on the next event.
                        tracing::warn!(room = %act.name, error = %crate::telemetry::chain(err), "commit failed; reloading the room from the database");
                        false
                    }
                };
                let (answer, update) = done(act, committed.map_err(RoomError::from));
                if keep {
                    act.forget_old_history();
                    act.publish();
                    if let Some(update) = update {
                        act.publish_update(&update.event, update.identity);
                    }
                    act.schedule_retirement(ctx);
                    act.park_if_quiet(ctx);
                } else if fenced {
                    act.step_down(ctx);
                } else {
                    act.restart(ctx);
                }
                let _ = reply.send(answer);
            },
        ))
    }
}

/// Where the state a commit makes durable is.
enum Next {
    /// Already in the actor: webhooks are applied in place (undone by a
    /// reload when the commit fails).
    InPlace,
    /// A copy to swap in once committed: reconciliation works on a copy,
    /// since it may find the room changed and do nothing.
    Swap(Box<RoomState>),
}

/// What a committed change tells live subscribers.
pub struct LiveUpdate {
    event: Label,
    identity: Option<String>,
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.parts.mailbox_capacity);
        match self.state.take() {
            // Resumed from parking: what it published is still current, and
            // the event that resumed it is waiting.
            Some(state) if self.published.is_some() => self.state = Some(state),
            Some(state) => self.loaded(state, ctx),
            None => self.load(ctx),
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.unregister(ctx);
        tracing::debug!(room = %self.name, "room actor stopped");
    }
}
