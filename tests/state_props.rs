//! Property tests of the pure room state machine: whatever order, however
//! many times, and with whatever crashes LiveKit's deliveries and roomd's
//! restarts produce, a room ends where the ordered sequence ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use roomd::room::event::{LeaveReason, ParticipantKind, ParticipantRef, RoomEvent, RoomRef};
use roomd::room::record::{RoomRecord, RoomStatus, SessionRecord, StoredRoom};
use roomd::room::state::RoomState;
use uuid::Uuid;

const NAME: &str = "prop-room";
const SID: &str = "RM_prop";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn room() -> RoomRef {
    RoomRef {
        name: NAME.into(),
        sid: Some(SID.into()),
        created_at: None,
    }
}

/// One session of one person: joined at `join`, left at `leave` if it did.
#[derive(Debug, Clone)]
struct Session {
    identity: usize,
    join: i64,
    leave: Option<i64>,
    aborted: bool,
    agent: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    sessions: Vec<Session>,
    finish: bool,
}

impl Scenario {
    /// LiveKit's events in the order they happened.
    fn ordered(&self) -> Vec<(RoomEvent, DateTime<Utc>)> {
        let mut events = vec![(RoomEvent::RoomStarted, t(0), 0usize)];
        for (i, s) in self.sessions.iter().enumerate() {
            let p = ParticipantRef {
                sid: Some(format!("PA_{i}")),
                identity: format!("person-{}", s.identity),
                kind: if s.agent {
                    ParticipantKind::Agent
                } else {
                    ParticipantKind::Standard
                },
                name: None,
                joined_at: Some(t(s.join)),
            };
            if !s.aborted {
                events.push((RoomEvent::ParticipantJoined(p.clone()), t(s.join), 1));
            }
            if let Some(leave) = s.leave {
                let reason = if s.aborted {
                    LeaveReason::ConnectionAborted
                } else {
                    LeaveReason::Left(None)
                };
                events.push((RoomEvent::ParticipantLeft(p, reason), t(leave), 2));
            }
        }
        if self.finish {
            events.push((RoomEvent::RoomFinished, t(10_000), 3));
        }
        events.sort_by_key(|(_, at, rank)| (*at, *rank));
        events.into_iter().map(|(e, at, _)| (e, at)).collect()
    }
}

fn session() -> impl Strategy<Value = Session> {
    (
        0usize..4,
        1i64..100,
        prop::option::of(1i64..100),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(identity, join, leave_after, aborted, agent)| Session {
            identity,
            join,
            leave: leave_after.map(|d| join + d),
            aborted: aborted && leave_after.is_some() && join % 5 == 0,
            agent,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(session(), 0..8),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(sessions, finish)| Scenario { sessions, finish })
}

/// A delivery schedule: every event at least once, some up to three times,
/// in any order, with crash points in between.
fn schedule(n: usize) -> impl Strategy<Value = (Vec<usize>, BTreeSet<usize>)> {
    prop::collection::vec(1usize..=3, n).prop_flat_map(|copies| {
        let deliveries: Vec<usize> = copies
            .iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::repeat_n(i, *c))
            .collect();
        let len = deliveries.len();
        (
            Just(deliveries).prop_shuffle(),
            prop::collection::btree_set(0..len.max(1), 0..3),
        )
    })
}

/// What the store would hold: the rows upserted by every committed transition.
#[derive(Default)]
struct Db {
    rooms: HashMap<Uuid, (usize, RoomRecord)>,
    sessions: HashMap<Uuid, SessionRecord>,
    inserts: usize,
}

impl Db {
    fn commit(&mut self, rooms: Vec<RoomRecord>, sessions: Vec<SessionRecord>) {
        for r in rooms {
            self.inserts += 1;
            let order = self.rooms.get(&r.id).map_or(self.inserts, |(o, _)| *o);
            self.rooms.insert(r.id, (order, r));
        }
        for s in sessions {
            assert!(
                self.rooms.contains_key(&s.room_id),
                "a session is written with or after its room"
            );
            self.sessions.insert(s.id, s);
        }
    }

    /// What `store::load_room` returns.
    fn stored(&self) -> StoredRoom {
        let active = self
            .rooms
            .values()
            .find(|(_, r)| r.status == RoomStatus::Active);
        let latest = active.or_else(|| self.rooms.values().max_by_key(|(o, _)| *o));
        StoredRoom {
            latest: latest.map(|(_, r)| {
                let sessions = self
                    .sessions
                    .values()
                    .filter(|s| s.room_id == r.id)
                    .cloned()
                    .collect();
                (r.clone(), sessions)
            }),
            ended_sids: self
                .rooms
                .values()
                .filter(|(_, r)| r.status == RoomStatus::Ended)
                .filter_map(|(_, r)| Some((r.sid.clone()?, r.ended_at?)))
                .collect(),
        }
    }
}

/// What a reader can observe of a room.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: Option<RoomStatus>,
    count: usize,
    by_kind: BTreeMap<String, usize>,
    open: BTreeSet<(Option<String>, String)>,
}

fn observe(state: &RoomState) -> Observed {
    let current = state.current();
    Observed {
        status: current.map(|c| c.record().status),
        count: current.map_or(0, |c| c.participant_count()),
        by_kind: current.map(|c| c.counts_by_kind()).unwrap_or_default(),
        open: current
            .map(|c| {
                c.open_sessions()
                    .map(|s| (s.sid.clone(), s.identity.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn check_invariants(state: &RoomState) {
    if let Some(c) = state.current() {
        let count = c.participant_count();
        assert_eq!(
            usize::try_from(c.record().current_participants).unwrap(),
            count
        );
        assert!(c.record().current_participants >= 0);
        // One person may have sessions of two kinds (rare), never fewer people than kinds say.
        let by_kind = c.counts_by_kind();
        assert!(by_kind.values().sum::<usize>() >= count);
        assert!(by_kind.values().all(|n| *n <= count));
        if c.record().status == RoomStatus::Ended {
            assert_eq!(count, 0, "an ended room has nobody in it");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_delivery_order_with_duplicates_and_crashes_ends_like_the_ordered_sequence(
        (scenario, (deliveries, crashes)) in scenario().prop_flat_map(|s| {
            let n = s.ordered().len();
            (Just(s), schedule(n))
        })
    ) {
        let events = scenario.ordered();
        let room = room();

        let mut ordered = RoomState::new(NAME);
        for (event, at) in &events {
            ordered.apply(&room, event, *at);
            check_invariants(&ordered);
        }

        let mut db = Db::default();
        let mut state = RoomState::new(NAME);
        for (step, i) in deliveries.iter().enumerate() {
            if crashes.contains(&step) {
                // The process died: only what was committed survives.
                state = RoomState::restore(NAME, db.stored());
            }
            let (event, at) = &events[*i];
            let transition = state.apply(&room, event, *at);
            db.commit(transition.changes.rooms, transition.changes.sessions);
            check_invariants(&state);
            prop_assert_eq!(&RoomState::restore(NAME, db.stored()), &state, "the store holds exactly the state");
        }
        prop_assert_eq!(observe(&state), observe(&ordered));
    }

    #[test]
    fn applying_an_event_twice_is_applying_it_once(scenario in scenario()) {
        let room = room();
        let mut once = RoomState::new(NAME);
        let mut twice = RoomState::new(NAME);
        for (event, at) in scenario.ordered() {
            once.apply(&room, &event, at);
            twice.apply(&room, &event, at);
            let again = twice.apply(&room, &event, at);
            prop_assert!(again.changes.is_empty(), "a repeat changes no row");
        }
        prop_assert_eq!(observe(&once), observe(&twice));
    }
}

#[test]
fn a_restore_of_an_ended_room_keeps_its_late_events_stale() {
    let room = room();
    let mut state = RoomState::new(NAME);
    let mut db = Db::default();
    let alice = ParticipantRef {
        sid: Some("PA_a".into()),
        identity: "alice".into(),
        kind: ParticipantKind::Standard,
        name: None,
        joined_at: None,
    };
    for (event, at) in [
        (RoomEvent::ParticipantJoined(alice.clone()), t(1)),
        (RoomEvent::RoomFinished, t(5)),
    ] {
        let tr = state.apply(&room, &event, at);
        db.commit(tr.changes.rooms, tr.changes.sessions);
    }
    let mut restored = RoomState::restore(NAME, db.stored());
    let late = restored.apply(&room, &RoomEvent::ParticipantJoined(alice), t(2));
    assert_eq!(late.outcome, roomd::room::state::Outcome::Stale);
    assert!(late.changes.is_empty());
}
