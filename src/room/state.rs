//! The room state machine: the one place that decides what an event does to a
//! room. It does no I/O and never fails; it returns the rows to persist, and
//! the actor commits them before anyone sees the new state.
//!
//! What it must get right, because LiveKit delivers at least once, unordered
//! and sometimes not at all:
//! - a session is keyed by participant sid; a person by identity. The count is
//!   the number of distinct identities with an open session, so a reconnect
//!   (new sid, same identity) is never counted twice during the overlap;
//! - a leave for an unknown sid leaves a tombstone, so the late join for that
//!   sid cannot resurrect the session;
//! - applying an event twice is the same as applying it once (the event-id
//!   check in the store is an optimisation and an audit, not the safety net);
//! - an event for a finished room instance is stale; a new room sid under the
//!   same name is a new instance, never a revival of the old one;
//! - bodies without sids (the seed's curl test) fall back to identity keys,
//!   ordered by the event's timestamp.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::presence::Present;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{
    EndReason, LeaveReason, ParticipantKind, ParticipantRef, RoomEvent, RoomRef, label,
};
use crate::record::{Changes, RoomRecord, RoomStatus, SessionRecord, StoredRoom, joined_time};
use crate::seed::HashMap;

mod reconcile;
mod sessions;
pub use reconcile::{Correction, CorrectionKind, Touched};
use sessions::{SessionKey, Sessions};

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The room changed.
    Applied,
    /// Nothing to change: a repeated join, a leave of a closed session, a
    /// join that arrives after its leave, a second `room_started`.
    Ignored,
    /// The event belongs to a room instance that has finished.
    Stale,
}

impl Transition {
    fn nothing(room_id: Option<Uuid>) -> Self {
        Self {
            outcome: Outcome::Ignored,
            room_id,
            changes: Changes::default(),
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Ignored => "ignored",
            Self::Stale => "stale",
        }
    }
}

/// The result of [`RoomState::apply`]: the outcome and the rows to upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub outcome: Outcome,
    /// The `rooms.id` of the instance the event was applied to, for the audit row.
    pub room_id: Option<Uuid>,
    pub changes: Changes,
}

/// One room instance and every session it has seen (open, closed, tombstones).
///
/// A session's row is shared (`Arc`) with the rows handed to the writer,
/// the index of who is in and the published snapshots, so a live
/// participant costs one row in memory; changing a row that others still
/// hold copies it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    room: RoomRecord,
    sessions: Sessions,
    /// Who is in, kept as sessions open and close (counting from
    /// `sessions` cost O(people) on every event).
    present: Present,
}

impl Instance {
    fn start(name: Arc<str>, room: &RoomRef, at: DateTime<Utc>) -> Self {
        Self {
            room: RoomRecord {
                id: Uuid::new_v4(),
                name,
                sid: room.sid.as_deref().map(Arc::from),
                status: RoomStatus::Active,
                current_participants: 0,
                started_at: room.created_at.unwrap_or(at),
                ended_at: None,
                end_reason: None,
                changed_at: None,
            },
            sessions: Sessions::default(),
            present: Present::default(),
        }
    }

    fn restore(room: RoomRecord, sessions: Vec<SessionRecord>) -> Self {
        let mut map = Sessions::default();
        for session in sessions {
            // Sid-less rows of one identity accumulate over rejoins: the open
            // one, else the latest to close, is the one that decides.
            let keep_old = map.get(SessionKey::of_row(&session)).is_some_and(|old| {
                old.is_open() || (!session.is_open() && old.left_at() >= session.left_at())
            });
            if !keep_old {
                map.insert(Arc::new(session));
            }
        }
        let mut instance = Self {
            room,
            sessions: map,
            present: Present::default(),
        };
        instance.recount();
        instance
    }

    pub fn record(&self) -> &RoomRecord {
        &self.room
    }

    pub fn is_active(&self) -> bool {
        self.room.status == RoomStatus::Active
    }

    pub fn open_sessions(&self) -> impl Iterator<Item = &Arc<SessionRecord>> {
        self.sessions.values().filter(|s| s.is_open())
    }

    /// Sessions held, open and closed (tombstones too).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions that are closed, including tombstones.
    pub fn closed_sessions(&self) -> impl Iterator<Item = &SessionRecord> {
        self.sessions
            .values()
            .map(|s| &**s)
            .filter(|s| !s.is_open())
    }

    /// Distinct identities with at least one open session.
    pub fn participant_count(&self) -> usize {
        self.present.count()
    }

    /// Who is in.
    pub fn present(&self) -> &Present {
        &self.present
    }

    /// `present` from the sessions, after changes too wide to follow one
    /// by one (a restore, a reconcile).
    fn recount(&mut self) {
        self.present = Present::of(self.sessions.values().filter(|s| s.is_open()));
    }

    /// Distinct identities with an open session, per participant kind.
    pub fn counts_by_kind(&self) -> BTreeMap<ParticipantKind, usize> {
        self.present.counts_by_kind()
    }

    /// The same, counted from every session: what `present` must agree with.
    #[cfg(debug_assertions)]
    fn counts_by_kind_from_sessions(&self) -> BTreeMap<ParticipantKind, usize> {
        let mut people: BTreeMap<ParticipantKind, std::collections::HashSet<&str>> =
            BTreeMap::new();
        for s in self.open_sessions() {
            people
                .entry(s.kind.clone())
                .or_default()
                .insert(&*s.identity);
        }
        people.into_iter().map(|(k, v)| (k, v.len())).collect()
    }

    /// This instance's sid and when it ended, once it has ended: what
    /// `RoomState::ended_sids` remembers of it.
    fn ended_sid(&self) -> Option<(String, DateTime<Utc>)> {
        let sid = self.room.sid.clone().filter(|_| !self.is_active())?;
        Some((
            sid.to_string(),
            self.room.ended_at.unwrap_or(self.room.started_at),
        ))
    }

    /// The newest time (LiveKit's clock) the instance's rows hold.
    fn newest_time(&self) -> Option<DateTime<Utc>> {
        self.sessions
            .values()
            .flat_map(|s| [s.joined_at(), s.left_at()])
            .chain([Some(self.room.started_at), self.room.ended_at])
            .flatten()
            .max()
    }

    fn refresh_count(&mut self) {
        #[cfg(debug_assertions)]
        {
            let fresh = Present::of(self.open_sessions());
            assert_eq!(
                self.present.count(),
                self.open_sessions()
                    .map(|s| &*s.identity)
                    .collect::<std::collections::HashSet<_>>()
                    .len(),
                "the open-identity count drifted from the sessions"
            );
            assert_eq!(self.present, fresh, "who is in drifted from the sessions");
            assert_eq!(
                self.present.counts_by_kind(),
                self.counts_by_kind_from_sessions(),
                "the counts per kind drifted from the sessions"
            );
        }
        self.room.current_participants =
            i32::try_from(self.participant_count()).unwrap_or(i32::MAX);
    }

    /// Ends the instance and closes every open session at `at`.
    fn end(&mut self, at: DateTime<Utc>, why: EndReason, changes: &mut Changes) {
        let reason = LeaveReason::RoomEnded(why).as_string();
        let room_id = self.room.id;
        for session in self
            .sessions
            .sorted_mut()
            .into_iter()
            .filter(|s| s.is_open())
        {
            Arc::make_mut(session).close(at, reason.clone());
            changes.session(room_id, session);
        }
        self.present.clear();
        self.room.status = RoomStatus::Ended;
        self.room.ended_at = Some(at.max(self.room.started_at));
        self.room.end_reason = Some(label(why.as_str()));
        self.room.current_participants = 0;
    }

    /// A new row for `p` in this instance: open when it has only `joined_at`,
    /// a tombstone when it has only `left`.
    fn new_session(
        &self,
        p: &ParticipantRef,
        joined_at: Option<DateTime<Utc>>,
        left: Option<(DateTime<Utc>, &LeaveReason)>,
    ) -> Arc<SessionRecord> {
        let mut row = SessionRecord::new(
            Uuid::new_v4(),
            p.identity.clone(),
            p.sid.clone(),
            p.kind.clone(),
            p.name.clone(),
            joined_at,
        );
        if let Some((at, reason)) = left {
            row.close(at, reason.as_string());
        }
        Arc::new(row)
    }

    fn join(&mut self, p: &ParticipantRef, at: DateTime<Utc>, changes: &mut Changes) -> Outcome {
        let key = SessionKey::of(&p.identity, p.sid.as_deref());
        let joined_at = joined_time(p.joined_at.unwrap_or(at));
        match (self.sessions.get_mut(key), key) {
            // Without sids, a later join of someone present means a leave
            // in between is late or lost: the session now began at this
            // join, so that late leave cannot end it.
            (Some(s), SessionKey::Identity(_))
                if s.is_open() && s.joined_at().is_some_and(|j| j < joined_at) =>
            {
                self.present.close(s);
                Arc::make_mut(s).set_joined_at(joined_at);
                self.present.open(s);
                changes.session(self.room.id, s);
                return Outcome::Applied;
            }
            (Some(s), _) if s.is_open() => return Outcome::Ignored,
            // A sid is one session: once closed (or tombstoned) it never reopens.
            (Some(_), SessionKey::Sid(_)) => return Outcome::Ignored,
            // Without sids only time can tell a rejoin from a late duplicate:
            // a join older than the leave is late. A tie (createdAt has whole
            // seconds) goes to the later arrival, so a rejoin in the second
            // of the leave counts.
            (Some(s), SessionKey::Identity(_)) if s.left_at().is_some_and(|left| left > at) => {
                return Outcome::Ignored;
            }
            _ => {}
        }
        let session = self.new_session(p, Some(joined_at), None);
        changes.session(self.room.id, &session);
        self.present.open(&session);
        self.sessions.insert(session);
        Outcome::Applied
    }

    fn leave(
        &mut self,
        p: &ParticipantRef,
        reason: &LeaveReason,
        at: DateTime<Utc>,
        changes: &mut Changes,
    ) -> Outcome {
        let room_id = self.room.id;
        let close = |s: &mut Arc<SessionRecord>, present: &mut Present, changes: &mut Changes| {
            present.close(s);
            Arc::make_mut(s).close(at, reason.as_string());
            changes.session(room_id, s);
        };
        let key = SessionKey::of(&p.identity, p.sid.as_deref());
        // A sid-less leave is ordered by time: it ends only sessions that
        // began at or before it (a tie goes to the later arrival), so a late
        // copy of an earlier leave cannot end a rejoin.
        let began_by = |s: &SessionRecord| s.joined_at().is_none_or(|joined| joined <= at);
        if p.sid.is_none() {
            // Without a sid the leave means "this person left": close all of them.
            let mut closed_any = false;
            for s in self
                .sessions
                .values_mut()
                .filter(|s| s.is_open() && s.identity == p.identity && began_by(s))
            {
                close(s, &mut self.present, changes);
                closed_any = true;
            }
            // The leave is also remembered under the identity, as a
            // tombstone when it closed sessions keyed by sid: a sid-less join
            // from before it must not reopen, and a redelivery of it must
            // find it and change nothing (found by fuzzing: it used to add a
            // tombstone the second time).
            let settled = self.sessions.get(key).is_some_and(|s| {
                s.left_at().is_some_and(|left| left >= at) || (s.is_open() && !began_by(s))
            });
            if settled {
                return if closed_any {
                    Outcome::Applied
                } else {
                    Outcome::Ignored
                };
            }
        }
        match self.sessions.get_mut(key) {
            Some(s) if s.is_open() => {
                close(s, &mut self.present, changes);
                return Outcome::Applied;
            }
            Some(_) if matches!(key, SessionKey::Sid(_)) => return Outcome::Ignored,
            Some(s) if s.left_at().is_some_and(|left| left >= at) => return Outcome::Ignored,
            _ => {}
        }
        // The leave came first (or its join was dropped): remember it, so the
        // join cannot open the session when it arrives.
        let tombstone = self.new_session(p, None, Some((at, reason)));
        changes.session(self.room.id, &tombstone);
        self.sessions.insert(tombstone);
        Outcome::Applied
    }
}

/// Where an event comes from, for the one rule that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Webhook,
    /// LiveKit's RoomService lists the room, as of a fetch taken after the
    /// room last changed: it is the live instance, whatever its creation
    /// time says. Two LiveKit nodes' clocks can disagree, so a room created
    /// after another, on a node whose clock is behind, looks older (found
    /// by the adversary: reconciliation never left an instance whose
    /// `room_finished` was lost, created on a node 60 s ahead).
    Listed,
}

/// Everything roomd knows about one room name: the newest instance and the
/// sids of the finished ones, with when they ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    /// Shared with the room's actor, registry entry and published entry.
    name: Arc<str>,
    current: Option<Instance>,
    ended_sids: HashMap<String, DateTime<Utc>>,
}

impl RoomState {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            current: None,
            ended_sids: HashMap::default(),
        }
    }

    /// Rebuilds the state from what the store committed.
    pub fn restore(name: impl Into<Arc<str>>, stored: StoredRoom) -> Self {
        let mut ended_sids: HashMap<String, DateTime<Utc>> =
            stored.ended_sids.into_iter().collect();
        let current = stored.latest.map(|(room, sessions)| {
            let instance = Instance::restore(room, sessions);
            ended_sids.extend(instance.ended_sid());
            instance
        });
        Self {
            name: name.into(),
            current,
            ended_sids,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance now or last live under this name.
    pub fn current(&self) -> Option<&Instance> {
        self.current.as_ref()
    }

    pub fn is_active(&self) -> bool {
        self.current.as_ref().is_some_and(Instance::is_active)
    }

    /// When (roomd's clock) the room last changed, as committed: what
    /// reconciliation compares its fetch time with, across actor lifetimes.
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.current.as_ref().and_then(|c| c.room.changed_at)
    }

    /// Stamps an applied transition with roomd's time of applying it, so
    /// the stamp is committed with it.
    pub fn mark_changed(&mut self, transition: &mut Transition, now: DateTime<Utc>) {
        if transition.outcome != Outcome::Applied {
            return;
        }
        let Some(instance) = self.current.as_mut() else {
            return;
        };
        instance.room.changed_at = Some(now);
        let rooms = &mut transition.changes.rooms;
        rooms.retain(|r| r.id != instance.room.id);
        rooms.push(instance.room.clone());
    }

    /// Forgets closed sessions, tombstones and ended sids that closed more
    /// than `horizon` before the room's newest event: far past LiveKit's
    /// redelivery window, they only cost memory. Measured on LiveKit's own
    /// clock, so a LiveKit whose clock differs from roomd's (or old replayed
    /// events) never loses history early. The database keeps it all; the
    /// current instance's sid is never forgotten.
    ///
    /// The newest event counts no later than `now` (roomd's clock): one
    /// dated ahead must not make everything older look past the horizon.
    pub fn forget_older_than(&mut self, horizon: chrono::Duration, now: DateTime<Utc>) {
        let Some(instance) = self.current.as_mut() else {
            return;
        };
        let Some(newest) = instance.newest_time() else {
            return;
        };
        let cutoff = newest.min(now) - horizon;
        let current_sid = instance.room.sid.as_deref();
        self.ended_sids
            .retain(|sid, ended| *ended >= cutoff || Some(sid.as_str()) == current_sid);
        instance
            .sessions
            .retain(|s| s.left_at().is_none_or(|left| left >= cutoff));
    }

    /// An instance that reconciliation ended comes back when LiveKit shows
    /// it is live after all: a join or `room_started` that happened after
    /// the end, or LiveKit listing it again. A leave does not: it brings
    /// nobody in, and reviving on it showed a live room with nobody in that
    /// LiveKit did not have, until the next round (found by the adversary).
    fn revives(&self, sid: &str, event: &RoomEvent, at: DateTime<Utc>) -> bool {
        self.current.as_ref().is_some_and(|cur| {
            cur.room.sid.as_deref() == Some(sid)
                && cur.room.end_reason.as_deref().map(String::as_str)
                    == Some(EndReason::Reconciled.as_str())
                && matches!(
                    event,
                    RoomEvent::RoomStarted | RoomEvent::ParticipantJoined(_)
                )
                && cur.room.ended_at.is_some_and(|ended| at > ended)
        })
    }

    fn revive(&mut self) {
        if let Some(cur) = self.current.as_mut() {
            if let Some(sid) = &cur.room.sid {
                self.ended_sids.remove(&**sid);
            }
            cur.room.status = RoomStatus::Active;
            cur.room.ended_at = None;
            cur.room.end_reason = None;
        }
    }

    /// Applies one event that happened at `at` (LiveKit's clock).
    pub fn apply(&mut self, room: &RoomRef, event: &RoomEvent, at: DateTime<Utc>) -> Transition {
        self.apply_as(room, event, at, Source::Webhook)
    }

    fn apply_as(
        &mut self,
        room: &RoomRef,
        event: &RoomEvent,
        at: DateTime<Utc>,
        source: Source,
    ) -> Transition {
        let mut changes = Changes::default();
        let stale = |room_id| Transition {
            outcome: Outcome::Stale,
            room_id,
            changes: Changes::default(),
        };

        let mut room_changed = false;
        if let Some(sid) = room
            .sid
            .as_deref()
            .filter(|sid| self.ended_sids.contains_key(*sid))
        {
            if !self.revives(sid, event, at) {
                return stale(None);
            }
            self.revive();
            room_changed = true;
        }
        let same_instance = match (&mut self.current, &room.sid) {
            (None, _) => false,
            (Some(cur), Some(sid)) => match &cur.room.sid {
                Some(cur_sid) if **cur_sid == **sid => true,
                // A sid roomd has not seen: LiveKit never has two live rooms
                // of one name, so it is either a newer instance or a late
                // event of an older one. Its creation time tells which, also
                // against an instance opened from sid-less bodies. LiveKit's
                // own list needs no telling: what it lists is live.
                _ if source == Source::Webhook
                    && room.created_at.unwrap_or(at) < cur.room.started_at =>
                {
                    return stale(None);
                }
                Some(_) => false,
                // First sight of the sid of an instance opened from a
                // sid-less body, created after that instance began.
                None if cur.is_active() => {
                    cur.room.sid = Some(sid.as_str().into());
                    room_changed = true;
                    true
                }
                None => false,
            },
            // Sid-less bodies are ordered by time: a room_finished from
            // before the instance began is an older instance's. Any other
            // event shows the instance began no later than it.
            (Some(cur), None) if cur.is_active() => {
                // A sid-less room_finished ends no session that began after
                // it: with people still in from after it, it was an older
                // instance's (sid-less bodies cannot tell instances apart).
                let outlived = matches!(event, RoomEvent::RoomFinished)
                    && cur
                        .open_sessions()
                        .any(|s| s.joined_at().is_some_and(|joined| joined > at));
                if at < cur.room.started_at || outlived {
                    if matches!(event, RoomEvent::RoomFinished) {
                        return stale(Some(cur.room.id));
                    }
                    // An instance of sid-less bodies began no later than
                    // its events; one LiveKit named keeps LiveKit's start.
                    if cur.room.sid.is_none() && at < cur.room.started_at {
                        cur.room.started_at = at;
                        room_changed = true;
                    }
                }
                true
            }
            (Some(cur), None) => {
                // A tie goes to the later arrival: a join in the second the
                // room finished opens the next instance.
                let later = cur.room.ended_at.is_some_and(|ended| at >= ended);
                let opens = matches!(
                    event,
                    RoomEvent::RoomStarted | RoomEvent::ParticipantJoined(_)
                );
                if !(later && opens) {
                    return stale(Some(cur.room.id));
                }
                false
            }
        };

        if !same_instance {
            if let Some(old) = self.current.as_mut().filter(|cur| cur.is_active()) {
                // LiveKit never has two live rooms with one name: a new sid means
                // the old instance is over, even if its room_finished was lost.
                old.end(at, EndReason::Replaced, &mut changes);
                changes.rooms.push(old.room.clone());
            }
            self.ended_sids
                .extend(self.current.as_ref().and_then(Instance::ended_sid));
            self.current = Some(Instance::start(self.name.clone(), room, at));
            room_changed = true;
        }

        let instance = self
            .current
            .as_mut()
            .expect("an instance was just selected or started");
        let outcome = match event {
            RoomEvent::RoomStarted => {
                if let Some(created) = room.created_at.filter(|c| *c < instance.room.started_at) {
                    instance.room.started_at = created;
                    room_changed = true;
                }
                if room_changed {
                    Outcome::Applied
                } else {
                    Outcome::Ignored
                }
            }
            RoomEvent::RoomFinished => {
                instance.end(at, EndReason::RoomFinished, &mut changes);
                self.ended_sids.extend(instance.ended_sid());
                room_changed = true;
                Outcome::Applied
            }
            RoomEvent::ParticipantJoined(p) => instance.join(p, at, &mut changes),
            RoomEvent::ParticipantLeft(p, reason) => instance.leave(p, reason, at, &mut changes),
        };

        let before = instance.room.current_participants;
        if instance.is_active() {
            instance.refresh_count();
        }
        if room_changed || before != instance.room.current_participants {
            changes.rooms.push(instance.room.clone());
        }
        let outcome = match outcome {
            Outcome::Ignored if room_changed => Outcome::Applied,
            other => other,
        };
        Transition {
            outcome,
            room_id: Some(instance.room.id),
            changes,
        }
    }
}
