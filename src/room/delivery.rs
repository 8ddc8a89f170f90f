//! Admission and the delivery protocol: a webhook is admitted (bounded in
//! flight across rooms, bounded per mailbox), handed to its room's actor and
//! answered once committed; events no actor acts on get their audit row
//! here. Mailbox errors become one error type.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::actor::RoomActor;
use super::messages::{Apply, Claim, Delivered, Reconcile, Reconciled, RoomError, Slot};
use super::state::Outcome;
use super::supervisor::{NotOwner, Supervisor};
use crate::event::{Action, Delivery, RoomTruth};
use crate::record::{Committed, EventRecord};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("room {room:?} is busy: its mailbox is full")]
    Busy { room: String },
    #[error("roomd is busy: {limit} webhooks are already waiting for their commits")]
    Overloaded { limit: usize },
    #[error("the event for room {room:?} could not be committed")]
    Unavailable {
        room: String,
        #[source]
        cause: Unavailable,
    },
}

/// Why a delivery could not be committed now (LiveKit retries it).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("roomd is still rebuilding its rooms")]
    Recovering,
    #[error("another node owns the room's shard")]
    NotOwner,
    #[error("the room's actor is restarting")]
    Restarting,
    #[error("the room's actor stopped before committing")]
    Stopped,
    #[error("timed out waiting for the commit")]
    TimedOut,
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Supervisor {
    /// Hands one delivery over and waits until it is committed.
    pub async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliverError> {
        let room_name = delivery.room().map(|r| r.name.clone()).unwrap_or_default();
        let unavailable = |cause: Unavailable| DeliverError::Unavailable {
            room: room_name.clone(),
            cause,
        };
        if !self.is_recovered() {
            return Err(unavailable(Unavailable::Recovering));
        }
        let admission = Claim::take(&self.inner.in_flight, self.inner.settings.max_in_flight)
            .ok_or(DeliverError::Overloaded {
                limit: self.inner.settings.max_in_flight,
            })?;
        let (room, event) = match &delivery.action {
            Action::Apply { room, event } => (room.clone(), event.clone()),
            Action::Record { .. } => {
                let recorded = self.record_only(delivery).await;
                drop(admission);
                return recorded.map_err(|e| unavailable(e.into()));
            }
        };
        let admission = Arc::new(admission);
        let span = tracing::Span::current();
        let msg = |slot, reply| Apply {
            delivery: delivery.clone(),
            room: room.clone(),
            event: event.clone(),
            reply,
            slot,
            admission: admission.clone(),
            span: span.clone(),
        };
        self.ask(&room_name, msg).await
    }

    /// Hands the message `msg` makes to the room's actor and waits, at most
    /// the commit timeout, for its answer. A message the actor never took
    /// (it stopped first: it retired or could not load) goes once more, to
    /// the room's next actor; one it took and dropped may have been
    /// committed, and only LiveKit's retry (decided by the event id) can
    /// tell.
    async fn ask<M, T>(
        &self,
        room: &str,
        msg: impl Fn(Slot, oneshot::Sender<Result<T, RoomError>>) -> M,
    ) -> Result<T, DeliverError>
    where
        M: Message<Result = ()> + Send + 'static,
        RoomActor: Handler<M>,
    {
        let unavailable = |cause: Unavailable| DeliverError::Unavailable {
            room: room.to_owned(),
            cause,
        };
        let busy = || DeliverError::Busy {
            room: room.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + self.inner.settings.commit_timeout;
        let mut tries = 2;
        loop {
            tries -= 1;
            let (addr, place) = self
                .actor(room)
                .map_err(|NotOwner| unavailable(Unavailable::NotOwner))?
                .ok_or_else(busy)?;
            let (slot, taken) = Slot::new(place);
            let (reply, done) = oneshot::channel();
            let cause = match addr.try_send(msg(slot, reply)) {
                Err(SendError::Full(_)) => return Err(busy()),
                Err(SendError::Closed(_)) => Unavailable::Restarting,
                Ok(()) => match tokio::time::timeout_at(deadline, done).await {
                    Ok(Ok(result)) => return result.map_err(|e| unavailable(e.into())),
                    Ok(Err(_)) => Unavailable::Stopped,
                    Err(_) => return Err(unavailable(Unavailable::TimedOut)),
                },
            };
            if tries == 0 || taken.load(Ordering::Acquire) {
                return Err(unavailable(cause));
            }
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
        let msg = |slot, reply| Reconcile {
            truth: truth.clone(),
            fetched_at,
            reply,
            slot,
        };
        self.ask(name, msg).await
    }

    /// Events roomd does not act on (tracks, egress, ingress, ...): an audit
    /// row, committed like everything else, and no actor.
    async fn record_only(&self, delivery: &Delivery) -> Result<Delivered, StoreError> {
        let record = EventRecord::of_delivery(delivery, None, Outcome::Ignored.as_str());
        match self
            .inner
            .parts
            .writer
            .commit(record, crate::record::Changes::default(), None)
            .await?
        {
            Committed::Stored => Ok(Delivered::Committed(Outcome::Ignored)),
            Committed::Duplicate => Ok(Delivered::Duplicate),
        }
    }
}
