//! Reconciliation in the state machine: making a room agree with what
//! LiveKit's RoomService lists, when webhooks were lost. Pure like the rest:
//! it returns the rows to write and the corrections it made.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Changes, EndReason, Instance, LeaveReason, Outcome, RoomEvent, RoomState, SessionKey,
    SessionRecord, Source, Transition,
};
use crate::event::RoomTruth;
use crate::record::{RoomStatus, StoredInstance};

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
    /// The sid of an instance roomd ended that LiveKit lists as live, when
    /// the listing is LiveKit's word (the room has not changed since):
    /// reconciliation brings it back ([`reconcile`](Self::reconcile)'s
    /// `ended`), which needs its rows from the database. Only an instance
    /// that is no longer current: the current one comes back without them.
    pub fn listed_ended_sid<'a>(&self, truth: Option<&'a RoomTruth>) -> Option<&'a str> {
        let truth = truth?;
        let sid = truth.room.sid.as_deref()?;
        let current = self.current.as_ref().and_then(|c| c.room.sid.as_deref());
        (self.ended_sids.contains_key(sid)
            && current != Some(sid)
            && self.source_of(truth) == Source::Listed)
            .then_some(sid)
    }

    /// How a listing weighs (see [`Source::Listed`]): as LiveKit's word,
    /// unless the room changed after ListRooms answered.
    fn source_of(&self, truth: &RoomTruth) -> Source {
        if self
            .changed_at()
            .is_some_and(|changed| changed >= truth.listed_at)
        {
            Source::Webhook
        } else {
            Source::Listed
        }
    }

    /// Makes the room agree with LiveKit's RoomService (`truth`; `None` when
    /// LiveKit does not have the room), fetched at `fetched_at` (roomd's
    /// clock). `None` when the room changed since: the list may be older
    /// than the room, and the next round decides. `ended` is the stored
    /// instance [`listed_ended_sid`](Self::listed_ended_sid) named, if any.
    pub fn reconcile(
        &mut self,
        truth: Option<&RoomTruth>,
        fetched_at: DateTime<Utc>,
        at: DateTime<Utc>,
        ended: Option<StoredInstance>,
    ) -> Option<(Transition, Vec<Correction>)> {
        if self
            .changed_at()
            .is_some_and(|changed| changed >= fetched_at)
        {
            return None;
        }
        Some(self.reconcile_fresh(truth, at, ended))
    }

    /// Makes `stored`, an instance roomd replaced or reconciliation ended,
    /// the current one again, ending the one that took its place: LiveKit
    /// lists it, and LiveKit never has two live rooms under one name. Its
    /// sessions that roomd closed come back below if LiveKit lists them.
    /// An instance LiveKit finished stays finished (a listing right after
    /// `room_finished` is LiveKit's lag). False when nothing changed.
    fn reinstate(
        &mut self,
        (mut room, sessions): StoredInstance,
        sid: &str,
        at: DateTime<Utc>,
        changes: &mut Changes,
    ) -> bool {
        let ended_by_roomd = room
            .end_reason
            .as_deref()
            .is_some_and(|why| EndReason::is_roomds(why));
        if room.sid.as_deref() != Some(sid) || room.name != self.name || !ended_by_roomd {
            return false;
        }
        if let Some(old) = self.current.as_mut().filter(|cur| cur.is_active()) {
            old.end(at, EndReason::Replaced, changes);
            changes.rooms.push(old.room.clone());
        }
        self.ended_sids
            .extend(self.current.as_ref().and_then(Instance::ended_sid));
        self.ended_sids.remove(sid);
        room.name = self.name.clone();
        room.status = RoomStatus::Active;
        room.ended_at = None;
        room.end_reason = None;
        self.current = Some(Instance::restore(room, sessions));
        true
    }

    fn reconcile_fresh(
        &mut self,
        truth: Option<&RoomTruth>,
        at: DateTime<Utc>,
        ended: Option<StoredInstance>,
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

        let mut before = self.current.as_ref().map(|c| (c.room.id, c.is_active()));
        // A room that changed after LiveKit listed it may have moved on from
        // the listed instance: then the listing is weighed as a webhook is.
        let source = self.source_of(truth);
        let mut reinstated = Changes::default();
        if let (Some(stored), Some(sid)) = (ended, self.listed_ended_sid(Some(truth)))
            && self.reinstate(stored, sid, at, &mut reinstated)
        {
            let back = self.current.as_ref().expect("just reinstated");
            before = Some((back.room.id, false));
        }
        let mut transition = self.apply_as(&truth.room, &RoomEvent::RoomStarted, at, source);
        if transition.outcome == Outcome::Stale {
            return (transition, corrections);
        }
        transition.changes.prepend(reinstated);
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
        let people: HashSet<&str> = truth.participants.iter().map(|p| &*p.identity).collect();
        let changes = &mut transition.changes;
        let reconciled = LeaveReason::Reconciled.as_string();
        let room_id = instance.room.id;
        for session in instance.sessions.sorted_mut() {
            // Only roomd's own closing is undone (by reconciliation, or by
            // ending an instance LiveKit lists again): a leave LiveKit sent
            // is final, even while its list still shows the session.
            let wrongly_closed = session
                .leave_reason()
                .is_some_and(|why| EndReason::is_roomds(why))
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
            // A session without a sid (the seed's bodies) is the person's:
            // gone when LiveKit lists nobody by that identity (found by the
            // adversary: such sessions were never closed).
            let gone = session.is_open()
                && match session.sid.as_deref() {
                    Some(sid) => !listed.contains(sid),
                    None => !people.contains(&*session.identity),
                };
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
