//! The messages a room actor takes and what they answer. Each carries its
//! own reply channel and its place in the mailbox; see `supervisor.rs` for
//! why the sender `try_send`s them and awaits the channel.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::state::{Correction, Outcome};
use crate::event::{Delivery, RoomEvent, RoomRef, RoomTruth};
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

/// One unit of a bounded count, given back when dropped. Two counts use
/// it: a room's mailbox (a message's place, from admission until the actor
/// takes it: actix's own capacity does not hold for senders that each use a
/// fresh `Addr` clone), and the deliveries in flight across all rooms (a
/// delivery's admission, which travels with its message, so one whose
/// request timed out stays counted until the actor has handled or dropped
/// it, and LiveKit's retries cannot pile up behind a slow commit).
pub struct Claim(Arc<AtomicUsize>);

impl Claim {
    /// One more of `count`, if it is below `limit`.
    pub fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message's place in a room's mailbox, and whether the actor took it. A
/// message the actor never took (it stopped first: it retired, or could not
/// load) was not applied, so it may go to the room's next actor.
pub struct Slot {
    _place: Claim,
    taken: Arc<AtomicBool>,
}

impl Slot {
    pub fn new(place: Claim) -> (Self, Arc<AtomicBool>) {
        let taken = Arc::new(AtomicBool::new(false));
        let slot = Self {
            _place: place,
            taken: taken.clone(),
        };
        (slot, taken)
    }

    /// The actor has the message: its place in the mailbox is free.
    pub fn take(self) {
        self.taken.store(true, Ordering::Release);
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
    /// Its place in the room's mailbox.
    pub slot: Slot,
    /// Its admission among the deliveries in flight, held until handled
    /// (shared with the delivery, which may hand the event to another actor).
    pub admission: Arc<Claim>,
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
    pub slot: Slot,
}

#[derive(Debug)]
pub enum Reconciled {
    Corrected(Vec<Correction>),
    /// A webhook raced the fetch; nothing was changed.
    Skipped,
}

/// The room's shard left this node: the actor goes, after what its mailbox
/// already holds (those commits are refused by the fence).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown;

/// The room's retirement time has come (the supervisor's sweep): the actor
/// retires if it still may, else says when it may.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;
