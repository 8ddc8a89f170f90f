//! The messages a room actor takes and what they answer. Each carries its
//! own reply channel and its place in the mailbox; see `supervisor.rs` for
//! why the sender `try_send`s them and awaits the channel.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::event::{Delivery, RoomEvent, RoomRef};
use super::state::{Correction, Outcome, RoomTruth};
use crate::store::StoreError;

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

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("room {0:?} could not be loaded from the database")]
    NotLoaded(String),
    #[error("room {0:?} crashed applying the event; it restarts from the database")]
    Crashed(String),
}

/// Adds one to `counter` unless it is at `limit`.
fn take_one(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// A message's place in its room's mailbox, counted from the moment it is
/// admitted until the actor takes it (or it is dropped with a dead actor).
/// The count is what enforces the mailbox bound: actix's own capacity does
/// not hold for senders that each use a fresh `Addr` clone.
pub struct QueueSlot(Arc<AtomicUsize>);

impl QueueSlot {
    /// A place in a mailbox that holds `depth` messages, if it has room for
    /// one more within `capacity`.
    pub fn claim(depth: &Arc<AtomicUsize>, capacity: usize) -> Option<Self> {
        take_one(depth, capacity).then(|| Self(depth.clone()))
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One delivery admitted under the global in-flight bound. It travels with
/// the message, so a delivery whose request timed out stays counted until
/// the actor has handled it (or dropped it): LiveKit's retries cannot pile
/// up behind a slow commit.
pub struct Admission(Arc<AtomicUsize>);

impl Admission {
    pub fn admit(count: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        take_one(count, limit).then(|| Self(count.clone()))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Apply one event to the room. Carries its own reply channel: the sender
/// `try_send`s it and awaits the channel, so a full mailbox is refused at
/// once and a caller that goes away does not cancel an event already queued.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub delivery: Delivery,
    pub room: RoomRef,
    pub event: RoomEvent,
    pub reply: oneshot::Sender<Result<Delivered, RoomError>>,
    pub slot: QueueSlot,
    /// Held until the event is handled; see [`Admission`].
    pub admission: Option<Admission>,
    /// The request's span, so the actor's logs can be tied to it.
    pub span: tracing::Span,
}

/// Make the room agree with LiveKit's RoomService, unless the room changed
/// at or after `fetched_at` (then the truth may be older than the room, and
/// the next round decides). The time is roomd's clock, compared with the
/// room's committed `changed_at`, so it holds across actor restarts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    pub truth: Option<RoomTruth>,
    pub fetched_at: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<Reconciled, RoomError>>,
    pub slot: QueueSlot,
}

#[derive(Debug)]
pub enum Reconciled {
    Corrected(Vec<Correction>),
    /// A webhook raced the fetch; nothing was changed.
    Skipped,
}
