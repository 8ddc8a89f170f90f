//! Reconciliation in the state machine: making a room agree with what
//! LiveKit's RoomService lists, when webhooks were lost. Pure like the rest:
//! it returns the rows to write and the corrections it made.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Changes, EndReason, LeaveReason, Outcome, RoomEvent, RoomState, SessionKey, SessionRecord,
    Source, Transition,
};
use crate::event::RoomTruth;

/// One change reconciliation made because a webhook was lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Correction {
    pub room: String,
    pub what: CorrectionKind,
    pub identity: Option<String>,
    pub sid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionKind {
    /// LiveKit no longer has the room: its `room_finished` was lost.
    RoomEnded,
    /// LiveKit has a room roomd never heard of: its `room_started` was lost.
    RoomStarted,
    /// LiveKit no longer lists the session: its leave was lost.
    SessionClosed,
    /// LiveKit lists a session roomd never saw: its join was lost.
    SessionOpened,
    /// LiveKit lists a session that an earlier reconciliation closed: it
    /// was open after all.
    SessionReopened,
    /// LiveKit lists a room that an earlier reconciliation ended.
    RoomReopened,
}

impl CorrectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomEnded => "room_ended",
            Self::RoomStarted => "room_started",
            Self::SessionClosed => "session_closed",
            Self::SessionOpened => "session_opened",
            Self::SessionReopened => "session_reopened",
            Self::RoomReopened => "room_reopened",
        }
    }
}

impl RoomState {
    /// Makes the room agree with LiveKit's RoomService (`truth`; `None` when
    /// LiveKit does not have the room), fetched at `fetched_at` (roomd's
    /// clock). `None` when the room changed since: the list may be older
    /// than the room, and the next round decides.
    pub fn reconcile(
        &mut self,
        truth: Option<&RoomTruth>,
        fetched_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Option<(Transition, Vec<Correction>)> {
        if self
            .changed_at()
            .is_some_and(|changed| changed >= fetched_at)
        {
            return None;
        }
        Some(self.reconcile_fresh(truth, at))
    }

    fn reconcile_fresh(
        &mut self,
        truth: Option<&RoomTruth>,
        at: DateTime<Utc>,
    ) -> (Transition, Vec<Correction>) {
        let mut corrections = Vec::new();
        let name = self.name.clone();
        let correction = |what, session: Option<&Arc<SessionRecord>>| Correction {
            room: name.to_string(),
            what,
            identity: session.map(|s| s.identity.to_string()),
            sid: session.and_then(|s| s.sid.as_deref().map(str::to_owned)),
        };
        let Some(truth) = truth else {
            let Some(instance) = self.current.as_mut().filter(|c| c.is_active()) else {
                return (Transition::nothing(None), corrections);
            };
            let mut changes = Changes::default();
            instance.end(at, EndReason::Reconciled, &mut changes);
            corrections.push(correction(CorrectionKind::RoomEnded, None));
            corrections.extend(
                changes
                    .sessions
                    .iter()
                    .map(|s| correction(CorrectionKind::SessionClosed, Some(&s.row))),
            );
            changes.rooms.push(instance.room.clone());
            self.ended_sids.extend(instance.ended_sid());
            let room_id = Some(instance.room.id);
            return (
                Transition {
                    outcome: Outcome::Applied,
                    room_id,
                    changes,
                },
                corrections,
            );
        };

        let before = self.current.as_ref().map(|c| (c.room.id, c.is_active()));
        // A room that changed after LiveKit listed it may have moved on from
        // the listed instance: then the listing is weighed as a webhook is.
        let source = if self
            .changed_at()
            .is_some_and(|changed| changed >= truth.listed_at)
        {
            Source::Webhook
        } else {
            Source::Listed
        };
        let mut transition = self.apply_as(&truth.room, &RoomEvent::RoomStarted, at, source);
        if transition.outcome == Outcome::Stale {
            return (transition, corrections);
        }
        let instance = self.current.as_mut().expect("apply selected an instance");
        match before {
            Some((id, false)) if id == instance.room.id => {
                corrections.push(correction(CorrectionKind::RoomReopened, None));
            }
            Some((id, _)) if id == instance.room.id => {}
            _ => corrections.push(correction(CorrectionKind::RoomStarted, None)),
        }
        let listed: HashSet<&str> = truth
            .participants
            .iter()
            .filter_map(|p| p.sid.as_deref())
            .collect();
        let changes = &mut transition.changes;
        let reconciled = LeaveReason::Reconciled.as_string();
        let room_id = instance.room.id;
        for session in instance.sessions.sorted_mut() {
            // Only a reconciliation's own closing is undone: a leave LiveKit
            // sent is final, even while its list still shows the session.
            let wrongly_closed = session.leave_reason() == Some(&reconciled)
                && session
                    .sid
                    .as_deref()
                    .is_some_and(|sid| listed.contains(sid));
            if wrongly_closed {
                Arc::make_mut(session).reopen();
                changes.session(room_id, session);
                corrections.push(correction(CorrectionKind::SessionReopened, Some(&*session)));
                continue;
            }
            let gone = session.is_open()
                && session
                    .sid
                    .as_deref()
                    .is_some_and(|sid| !listed.contains(sid));
            if gone {
                Arc::make_mut(session).close(at, reconciled.clone());
                changes.session(room_id, session);
                corrections.push(correction(CorrectionKind::SessionClosed, Some(&*session)));
            }
        }
        for p in &truth.participants {
            let known = p
                .sid
                .as_ref()
                .is_some_and(|sid| instance.sessions.contains(SessionKey::Sid(sid)));
            if !known && instance.join(p, at, changes) == Outcome::Applied {
                corrections.push(correction(
                    CorrectionKind::SessionOpened,
                    changes.sessions.last().map(|c| &c.row),
                ));
            }
        }
        let count_before = instance.room.current_participants;
        instance.recount();
        instance.refresh_count();
        let room_in_changes = changes.rooms.iter().any(|r| r.id == instance.room.id);
        if count_before != instance.room.current_participants
            || (!corrections.is_empty() && !room_in_changes)
        {
            changes.rooms.retain(|r| r.id != instance.room.id);
            changes.rooms.push(instance.room.clone());
        }
        transition.outcome = if corrections.is_empty() && transition.changes.is_empty() {
            Outcome::Ignored
        } else {
            Outcome::Applied
        };
        (transition, corrections)
    }
}
