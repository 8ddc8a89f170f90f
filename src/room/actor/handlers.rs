//! The room actor's messages: an event to apply, LiveKit's truth to
//! reconcile with. Both run the pure state machine, then take the one
//! commit path in the parent module.

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::prelude::*;

use super::{LiveUpdate, Next, RoomActor};
use crate::event::label;
use crate::record::{Committed, EventRecord};
use crate::room::messages::{Apply, Delivered, Reconcile, Reconciled, Retire, RoomError, StepDown};
use crate::room::snapshot::LastEvent;
use crate::room::state::Outcome;

/// Runs the pure state machine, turning a panic into an error: one bad event
/// must not take the other rooms on this thread down with it.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

#[cfg(feature = "fault-injection")]
fn inject_fault(delivery: &crate::event::Delivery) {
    use std::sync::Mutex;
    static CRASHED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Some(id) = delivery
        .id
        .as_deref()
        .filter(|id| id.starts_with("EV_PANIC"))
    {
        let mut crashed = CRASHED.lock().unwrap();
        if !crashed.iter().any(|c| c == id) {
            crashed.push(id.to_owned());
            drop(crashed);
            panic!("fault injection: first delivery of {id}");
        }
    }
}

impl Handler<Apply> for RoomActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) -> Self::Result {
        let Apply {
            delivery,
            room,
            event,
            reply,
            slot,
            admission,
            span,
        } = msg;
        slot.take();
        let _request = span.enter();
        // Without reconciliation no list ever asks who changed.
        let touched = self.parts.reconciles.then_some(&mut self.touched);
        let Some(state) = &mut self.state else {
            // Only reachable if loading failed; the actor is stopping.
            let _ = reply.send(Err(RoomError::NotLoaded(self.name.to_string())));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        let applied = guarded(|| {
            #[cfg(feature = "fault-injection")]
            inject_fault(&delivery);
            // In place, not on a copy: a room of hundreds would be copied on
            // every event. Nobody sees the new state before the commit (the
            // actor handles one message at a time and publishes after it),
            // and every way the commit can disagree restarts the actor from
            // the database without publishing (see `commit`).
            let mut transition = state.apply(&room, &event, delivery.at());
            // Now, not when the webhook arrived: a reconcile list fetched
            // before this moment may not show the change yet.
            let now = crate::event::now();
            state.mark_changed(&mut transition, now);
            if let Some(touched) = touched {
                touched.record(&transition, now);
            }
            transition
        });
        let Some(transition) = applied else {
            tracing::error!(room = %self.name, event_id = ?delivery.id, event = %delivery.event, "room state machine panicked; restarting the room");
            self.restart(ctx);
            let _ = reply.send(Err(RoomError::Crashed(self.name.to_string())));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        let identity = event.participant().map(|p| p.identity.to_string());
        let record =
            EventRecord::of_delivery(&delivery, transition.room_id, transition.outcome.as_str());
        let outcome = transition.outcome;
        let span = span.clone();
        let commit = self.commit(Next::InPlace, transition, record, reply, move |act, committed| {
            let _request = span.enter();
            // The event is handled: it no longer counts against the
            // in-flight bound, whatever became of its request.
            drop(admission);
            let mut update = None;
            let result = committed.map(|c| match c {
                Committed::Stored => {
                    match outcome {
                        Outcome::Applied => {
                            act.counters.applied += 1;
                            update = Some(LiveUpdate {
                                event: delivery.event.clone(),
                                identity,
                            });
                        }
                        Outcome::Ignored => act.counters.ignored += 1,
                        Outcome::Stale => act.counters.stale += 1,
                    }
                    Delivered::Committed(outcome)
                }
                Committed::Duplicate => {
                    act.counters.duplicates += 1;
                    Delivered::Duplicate
                }
            });
            if let Ok(delivered) = &result {
                tracing::debug!(room = %act.name, event_id = ?delivery.id, event = %delivery.event, outcome = delivered.as_str(), "event committed");
                act.remember(LastEvent {
                    id: delivery.id.as_deref().map(Into::into),
                    event: delivery.event.clone(),
                    outcome: delivered.as_str(),
                    at: delivery.received_at,
                });
            }
            (result, update)
        });
        AtomicResponse::new(commit)
    }
}

impl Handler<Reconcile> for RoomActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Reconcile, _ctx: &mut Self::Context) -> Self::Result {
        let Reconcile {
            truth,
            fetched_at,
            reply,
            slot,
        } = msg;
        slot.take();
        let Some(state) = &self.state else {
            let _ = reply.send(Err(RoomError::NotLoaded(self.name.to_string())));
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        // An ended instance LiveKit lists is brought back from its rows,
        // read before the next message is handled.
        let load = state.listed_ended_sid(truth.as_ref()).map(|sid| {
            let db = self.parts.db.clone();
            let sid = sid.to_owned();
            let horizon = self.parts.lifecycle.horizon();
            let deadline = self.parts.lifecycle.load_timeout;
            async move {
                let instance = crate::store::load_instance(&db, &sid, horizon);
                crate::store::within(deadline, instance).await
            }
        });
        let loaded = futures_util::future::OptionFuture::from(load);
        AtomicResponse::new(Box::pin(loaded.into_actor(self).then(
            move |loaded, act, ctx| {
                let ended = match loaded {
                    Some(Ok(ended)) => ended,
                    Some(Err(err)) => {
                        // This round leaves the instance ended; the next one tries again.
                        tracing::warn!(room = %act.name, error = %err, "cannot load the ended instance LiveKit lists");
                        None
                    }
                    None => None,
                };
                act.reconcile_with(truth, fetched_at, ended, reply, ctx)
            },
        )))
    }
}

impl RoomActor {
    fn reconcile_with(
        &mut self,
        truth: Option<crate::event::RoomTruth>,
        fetched_at: chrono::DateTime<chrono::Utc>,
        ended: Option<crate::record::StoredInstance>,
        reply: tokio::sync::oneshot::Sender<Result<Reconciled, RoomError>>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let Some(state) = &self.state else {
            let _ = reply.send(Err(RoomError::NotLoaded(self.name.to_string())));
            return Box::pin(fut::ready(()));
        };
        let now = crate::event::now();
        // Each round visits every live room: a room that went quiet after
        // a burst frees its log here, not at its next change (found by
        // the adversary).
        self.touched.forget(now);
        let touched = &mut self.touched;
        let reconciled = guarded(|| {
            let mut next = state.clone();
            next.reconcile(truth.as_ref(), fetched_at, now, ended, touched)
                .map(|(mut transition, corrections)| {
                    next.mark_changed(&mut transition, now);
                    touched.record(&transition, now);
                    (next, transition, corrections)
                })
        });
        let Some(reconciled) = reconciled else {
            tracing::error!(room = %self.name, "room state machine panicked in reconcile; restarting the room");
            self.restart(ctx);
            let _ = reply.send(Err(RoomError::Crashed(self.name.to_string())));
            return Box::pin(fut::ready(()));
        };
        let Some((next, transition, corrections)) = reconciled else {
            // The room changed after LiveKit's list was fetched.
            // A round resumes every room LiveKit lists: with nothing to
            // commit, a quiet one parks again here (found by the adversary:
            // every round left the empty rooms running). Before the answer,
            // as after a commit: whoever sees the answer sees it parked.
            self.park_if_quiet(ctx);
            let _ = reply.send(Ok(Reconciled::Skipped));
            return Box::pin(fut::ready(()));
        };
        if corrections.is_empty() {
            self.park_if_quiet(ctx);
            let _ = reply.send(Ok(Reconciled::Corrected(corrections)));
            return Box::pin(fut::ready(()));
        }
        let sid = truth.as_ref().and_then(|t| t.room.sid.clone());
        let record = EventRecord::of_reconcile(
            &self.name,
            sid,
            transition.room_id,
            now,
            transition.outcome.as_str(),
        );
        self.commit(Next::Swap(Box::new(next)), transition, record, reply, move |act, committed| {
            let mut update = None;
            if committed.is_ok() {
                for c in &corrections {
                    tracing::info!(room = %act.name, correction = ?c.what, identity = ?c.identity, sid = ?c.sid, "reconciled with LiveKit");
                }
                act.remember(LastEvent {
                    id: None,
                    event: label(EventRecord::RECONCILE),
                    outcome: Outcome::Applied.as_str(),
                    at: now,
                });
                update = Some(LiveUpdate {
                    event: label(EventRecord::RECONCILE),
                    identity: None,
                });
            }
            (committed.map(|_| Reconciled::Corrected(corrections)), update)
        })
    }
}

impl Handler<StepDown> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: StepDown, ctx: &mut Self::Context) {
        tracing::info!(room = %self.name, "the room's shard left this node; its actor steps down");
        self.step_down(ctx);
    }
}

impl Handler<Retire> for RoomActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        self.retire(ctx);
    }
}
