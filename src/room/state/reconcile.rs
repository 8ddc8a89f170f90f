//! Reconciliation in the state machine: making a room agree with what
//! LiveKit's RoomService lists, when webhooks were lost. Pure like the rest:
//! it returns the rows to write and the corrections it made.

use std::collections::{HashSet, VecDeque};
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

/// Who changed in a room lately, by roomd's clock. A room that takes a
/// webhook while every round's list is fetched was never reconciled (found
/// by the adversary): the list may be older than the room. It is not older
/// than the people nobody touched since it was fetched, so a round applies
/// it to them, and the others wait for a later one.
///
/// Kept beside the room's state, not in it: it is not committed, and an
/// actor that starts afresh knows nothing recent, so it reconciles a busy
/// room only from its first change on.
#[derive(Debug, Default)]
pub struct Touched {
    /// Every change from this time on is in `changes`; `None` until the
    /// first one.
    since: Option<DateTime<Utc>>,
    /// When (microseconds since the epoch, rounded down) and whose
    /// identity (`Busy::key`). 16 bytes an entry and nothing held beyond
    /// it: a `DateTime` and a copy of the identity took 40, which a burst
    /// of joins showed as 54 more bytes per open participant; the row's
    /// `Arc` kept every version a later change replaced alive
    /// (docs/PERFORMANCE.md, twelfth pass).
    changes: VecDeque<(i64, u64)>,
}

/// The identities a list may be older than, as `Busy::key`s. Two
/// identities with one key only make the other wait for a later round
/// too, which is what a busy identity does anyway.
#[derive(Debug, Default)]
struct Busy(HashSet<u64>);

impl Busy {
    fn key(identity: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(identity.as_bytes())
    }

    fn contains(&self, identity: &str) -> bool {
        !self.0.is_empty() && self.0.contains(&Self::key(identity))
    }
}

impl Touched {
    /// How old a list can be and still be applied to a busy room: a round
    /// fetches a room's participants just before the actor takes the list.
    const KEEP: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
    /// Bounds the memory of the busiest rooms (a list older than the
    /// oldest change kept waits for a quieter round).
    const MOST: usize = 8192;

    /// `transition` was applied at `now`.
    pub fn record(&mut self, transition: &Transition, now: DateTime<Utc>) {
        if transition.changes.sessions.is_empty() && transition.changes.rooms.is_empty() {
            return;
        }
        self.since.get_or_insert(now);
        self.changes.extend(
            transition
                .changes
                .sessions
                .iter()
                .map(|c| (now.timestamp_micros(), Busy::key(&c.row.identity))),
        );
        self.forget(now);
    }

    /// Forgets changes too old for any list still on its way.
    pub fn forget(&mut self, now: DateTime<Utc>) {
        let Some(since) = self.since else {
            return;
        };
        let cutoff = now - Self::KEEP;
        let mut forgot = None;
        while let Some(&(at, _)) = self.changes.front() {
            if at >= cutoff.timestamp_micros() && self.changes.len() <= Self::MOST {
                break;
            }
            forgot = Some(at);
            self.changes.pop_front();
        }
        // Everything from the new `since` on is still here.
        let mut kept_from = since.max(cutoff);
        // A forgotten change happened before the end of its microsecond
        // (found by the adversary: `at + 1 ns` claimed the rest of the
        // microsecond, and a change in it, after a fetch in it, was lost).
        if let Some(at) = forgot.and_then(|at| DateTime::from_timestamp_micros(at + 1)) {
            kept_from = kept_from.max(at);
        }
        self.since = Some(kept_from);
        // A burst grows the log to its size; a room that keeps changing
        // after it never empties the log, so it gives the room back here
        // (found by the adversary: 2 entries in 16,384 places an hour on).
        if self.changes.is_empty() {
            self.changes = VecDeque::new();
        } else if self.changes.capacity() > 64 && self.changes.len() < self.changes.capacity() / 4 {
            self.changes.shrink_to(self.changes.len() * 2);
        }
    }

    /// The people touched at or after `fetched_at`; `None` if that is
    /// before what this log covers.
    fn since(&self, fetched_at: DateTime<Utc>) -> Option<Busy> {
        self.since.filter(|since| *since <= fetched_at)?;
        // Rounded down: a change in the same microsecond counts as after.
        let fetched_at = fetched_at.timestamp_micros();
        Some(Busy(
            self.changes
                .iter()
                .filter(|(at, _)| *at >= fetched_at)
                .map(|&(_, key)| key)
                .collect(),
        ))
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
    /// clock). `ended` is the stored instance
    /// [`listed_ended_sid`](Self::listed_ended_sid) named, if any.
    ///
    /// A room that changed since the fetch may have moved past the list.
    /// Then only the live instance LiveKit lists is reconciled, and only for
    /// the people `touched` shows unchanged since; `None` (nothing done,
    /// the next round decides) when that cannot be told.
    pub fn reconcile(
        &mut self,
        truth: Option<&RoomTruth>,
        fetched_at: DateTime<Utc>,
        at: DateTime<Utc>,
        ended: Option<StoredInstance>,
        touched: &Touched,
    ) -> Option<(Transition, Vec<Correction>)> {
        if self.changed_at().is_none_or(|changed| changed < fetched_at) {
            return Some(self.reconcile_fresh(truth, at, ended, &Busy::default()));
        }
        let busy = touched.since(fetched_at)?;
        let truth = truth?;
        let current = self.current.as_ref().filter(|c| c.is_active())?;
        let listed = truth.room.sid.as_deref()?;
        (current.room.sid.as_deref() == Some(listed)).then_some(())?;
        Some(self.reconcile_fresh(Some(truth), at, None, &busy))
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

    /// Reconciles everyone but `busy` (identities the list may be older than).
    fn reconcile_fresh(
        &mut self,
        truth: Option<&RoomTruth>,
        at: DateTime<Utc>,
        ended: Option<StoredInstance>,
        busy: &Busy,
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
            if busy.contains(&session.identity) {
                continue;
            }
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
        for p in truth
            .participants
            .iter()
            .filter(|p| !busy.contains(&p.identity))
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ParticipantKind;
    use crate::record::Changes;
    use chrono::TimeDelta;
    use uuid::Uuid;

    fn row(identity: &str) -> Arc<SessionRecord> {
        let kind = ParticipantKind::standard();
        Arc::new(SessionRecord::new(
            Uuid::new_v4(),
            identity.into(),
            None,
            kind,
            None,
            None,
        ))
    }

    fn changed(row: &Arc<SessionRecord>) -> Transition {
        let mut changes = Changes::default();
        changes.session(Uuid::nil(), row);
        Transition {
            outcome: Outcome::Applied,
            room_id: None,
            changes,
        }
    }

    fn base() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    // From the adversary: past `MOST` changes the oldest is forgotten, and
    // the log must not claim the rest of that change's microsecond. With
    // `+ 1 ns`, a fetch at .500 us looked covered while the change at
    // .900 us, after it, was gone: the stale list closed its person.
    #[test]
    fn a_forgotten_change_takes_the_rest_of_its_microsecond_out_of_the_log() {
        let mut touched = Touched::default();
        let fetched_at = base() + TimeDelta::nanoseconds(500);
        let change = base() + TimeDelta::nanoseconds(900);
        // The log covers from well before the fetch.
        touched.record(&changed(&row("early")), base() - TimeDelta::seconds(5));
        for i in 0..=Touched::MOST {
            touched.record(&changed(&row(&format!("p{i}"))), change);
        }
        assert_eq!(touched.changes.len(), Touched::MOST);
        assert!(touched.since(fetched_at).is_none());
        // From the next microsecond on it covers again, and every change
        // it kept was before that.
        let next = base() + TimeDelta::microseconds(1);
        let busy = touched.since(next).expect("covered");
        assert!(!busy.contains("p8192"));
    }

    // From the adversary: entries kept the changed row alive, so a leave
    // (a new version of the row) held the join's version for a minute.
    #[test]
    fn the_log_holds_no_row() {
        let mut touched = Touched::default();
        let joined = row("alice");
        touched.record(&changed(&joined), base());
        assert_eq!(Arc::strong_count(&joined), 1);
        let busy = touched.since(base()).expect("covered");
        assert!(busy.contains("alice") && !busy.contains("bob"));
    }

    // From the adversary: after a burst, a room changing every 30 s (and
    // so never with an empty log) held the burst's allocation for good.
    #[test]
    fn a_burst_gives_its_room_back_while_the_room_keeps_changing() {
        let mut touched = Touched::default();
        for i in 0..=Touched::MOST {
            touched.record(&changed(&row(&format!("p{i}"))), base());
        }
        assert!(touched.changes.capacity() > Touched::MOST);
        let mut at = base();
        for _ in 0..4 {
            at += TimeDelta::seconds(30);
            touched.record(&changed(&row("steady")), at);
        }
        // The changes of the last minute: at 60, 90 and 120 s.
        assert_eq!(touched.changes.len(), 3);
        assert!(
            touched.changes.capacity() <= 64,
            "{}",
            touched.changes.capacity()
        );
    }

    #[test]
    fn a_quiet_minute_empties_the_log_and_frees_it() {
        let mut touched = Touched::default();
        for i in 0..100 {
            touched.record(&changed(&row(&format!("p{i}"))), base());
        }
        touched.forget(base() + Touched::KEEP + TimeDelta::microseconds(1));
        assert!(touched.changes.is_empty());
        assert_eq!(touched.changes.capacity(), 0);
        assert!(touched.since(base()).is_none());
    }
}
