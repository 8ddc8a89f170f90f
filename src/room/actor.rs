//! The actor that owns one room name: it applies that room's events one at a
//! time and is the only writer of its rows.
//!
//! Each `Apply` runs as an `AtomicResponse`: the commit is awaited before the
//! next message is let in, so a room's order is the order its events were
//! applied and committed. The new state becomes visible (snapshot published,
//! reply sent) only after the commit; if the commit fails the actor stops and
//! is rebuilt from the database on the next event, so memory never runs ahead
//! of (or behind) what is committed.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sea_orm::DatabaseConnection;
use tokio::sync::oneshot;

use super::event::{Delivery, RoomEvent, RoomRef};
use super::record::StoredRoom;
use super::snapshot::{Counters, LastEvent, RoomSnapshot};
use super::state::{Outcome, RoomState};
use crate::store::{self, Committed, EventRecord, StoreError, Writer};

/// What became of one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Committed with this outcome.
    Committed(Outcome),
    /// Committed before (same event id); nothing changed.
    Duplicate,
}

impl Delivered {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Committed(outcome) => outcome.as_str(),
            Self::Duplicate => "duplicate",
        }
    }
}

pub type Reply = oneshot::Sender<Result<Delivered, StoreError>>;

/// Apply one event to the room. Carries its own reply channel: the sender
/// `try_send`s it and awaits the channel, so a full mailbox is refused at
/// once and a caller that goes away does not cancel an event already queued.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub delivery: Delivery,
    pub room: RoomRef,
    pub event: RoomEvent,
    pub reply: Reply,
}

pub type Registry = Arc<DashMap<String, Addr<RoomActor>>>;
pub type Snapshots = Arc<DashMap<String, Arc<RoomSnapshot>>>;

/// What a room actor is started with.
pub struct RoomActor {
    name: String,
    /// `None` until the committed state is loaded.
    state: Option<RoomState>,
    preloaded: Option<RoomState>,
    db: DatabaseConnection,
    writer: Writer,
    registry: Registry,
    snapshots: Snapshots,
    mailbox_capacity: usize,
    last_event: Option<LastEvent>,
    counters: Counters,
    started_at: DateTime<Utc>,
}

pub struct ActorParts {
    pub db: DatabaseConnection,
    pub writer: Writer,
    pub registry: Registry,
    pub snapshots: Snapshots,
    pub mailbox_capacity: usize,
}

impl RoomActor {
    /// `preloaded` is the room's committed state when the caller already read
    /// it (recovery at start); otherwise the actor loads it before its first message.
    pub fn new(name: String, preloaded: Option<RoomState>, parts: &ActorParts) -> Self {
        Self {
            name,
            state: None,
            preloaded,
            db: parts.db.clone(),
            writer: parts.writer.clone(),
            registry: parts.registry.clone(),
            snapshots: parts.snapshots.clone(),
            mailbox_capacity: parts.mailbox_capacity,
            last_event: None,
            counters: Counters::default(),
            started_at: Utc::now(),
        }
    }

    fn publish(&self) {
        if let Some(state) = &self.state {
            let snapshot = RoomSnapshot::of(
                state,
                self.last_event.clone(),
                self.counters,
                self.started_at,
            );
            self.snapshots.insert(self.name.clone(), Arc::new(snapshot));
        }
    }

    fn loaded(&mut self, state: RoomState) {
        self.state = Some(state);
        self.publish();
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        if let Some(state) = self.preloaded.take() {
            self.loaded(state);
            return;
        }
        let db = self.db.clone();
        let name = self.name.clone();
        // `wait`: no message is handled before the committed state is in.
        ctx.wait(
            async move { store::load_room(&db, &name).await }
                .into_actor(self)
                .map(|loaded: Result<StoredRoom, StoreError>, act, ctx| match loaded {
                    Ok(stored) => {
                        let state = RoomState::restore(act.name.clone(), stored);
                        act.loaded(state);
                    }
                    Err(err) => {
                        tracing::warn!(room = %act.name, error = %err, "cannot load room; its events get 503 until the database answers");
                        ctx.stop();
                    }
                }),
        );
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.registry.remove_if(&self.name, |_, addr| *addr == me);
        tracing::debug!(room = %self.name, "room actor stopped");
    }
}

impl Handler<Apply> for RoomActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Apply, _ctx: &mut Self::Context) -> Self::Result {
        let Apply {
            delivery,
            room,
            event,
            reply,
        } = msg;
        let Some(state) = &self.state else {
            // Only reachable if loading failed; the actor is stopping.
            let _ = reply.send(Err(StoreError::NotLoaded(self.name.clone())));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        let mut next = state.clone();
        let transition = next.apply(&room, &event, delivery.at());
        let participant = event.participant();
        let record = EventRecord {
            event_id: delivery.id.clone(),
            event: delivery.event.clone(),
            room_name: Some(room.name.clone()),
            room_sid: room.sid.clone(),
            room_id: transition.room_id,
            participant_identity: participant.map(|p| p.identity.clone()),
            participant_sid: participant.and_then(|p| p.sid.clone()),
            created_at: delivery.created_at,
            received_at: delivery.received_at,
            outcome: transition.outcome.as_str(),
        };
        let outcome = transition.outcome;
        let writer = self.writer.clone();
        let commit = async move { writer.commit(record, transition.changes).await };
        AtomicResponse::new(Box::pin(commit.into_actor(self).map(
            move |committed, act, ctx| {
                let result = match committed {
                    Ok(Committed::Stored) => {
                        act.state = Some(next);
                        match outcome {
                            Outcome::Applied => act.counters.applied += 1,
                            Outcome::Ignored => act.counters.ignored += 1,
                            Outcome::Stale => act.counters.stale += 1,
                        }
                        Ok(Delivered::Committed(outcome))
                    }
                    Ok(Committed::Duplicate) => {
                        act.counters.duplicates += 1;
                        Ok(Delivered::Duplicate)
                    }
                    Err(err) => {
                        // The commit may or may not have happened: only the
                        // database knows. Rebuild from it on the next event.
                        tracing::warn!(room = %act.name, event_id = ?delivery.id, error = %err, "commit failed; restarting the room from the database");
                        ctx.stop();
                        Err(err)
                    }
                };
                if let Ok(delivered) = &result {
                    tracing::debug!(room = %act.name, event_id = ?delivery.id, event = %delivery.event, outcome = delivered.as_str(), "event committed");
                    act.last_event = Some(LastEvent {
                        id: delivery.id.clone(),
                        event: delivery.event.clone(),
                        outcome: delivered.as_str(),
                        at: delivery.received_at,
                    });
                    act.publish();
                }
                let _ = reply.send(result);
            },
        )))
    }
}
