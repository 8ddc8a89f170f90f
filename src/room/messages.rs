//! The messages a room actor takes and what they answer. Each carries its
//! own reply channel and its place in the mailbox; see `supervisor.rs` for
//! why the sender `try_send`s them and awaits the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

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

/// A message's place in its room's mailbox: counted from `try_send` until
/// the actor takes the message (or it is dropped with a dead actor).
pub struct QueueSlot(Arc<AtomicUsize>);

impl QueueSlot {
    pub fn new(depth: &Arc<AtomicUsize>) -> Self {
        depth.fetch_add(1, Ordering::Relaxed);
        Self(depth.clone())
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
}

/// Make the room agree with LiveKit's RoomService, unless a webhook for it
/// was applied after `fetched_at` (then the truth may be older than the
/// room, and the next round decides).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    pub truth: Option<RoomTruth>,
    pub fetched_at: Instant,
    pub reply: oneshot::Sender<Result<Reconciled, RoomError>>,
    pub slot: QueueSlot,
}

#[derive(Debug)]
pub enum Reconciled {
    Corrected(Vec<Correction>),
    /// A webhook raced the fetch; nothing was changed.
    Skipped,
}
