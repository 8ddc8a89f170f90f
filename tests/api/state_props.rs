//! Property tests of the pure room state machine: whatever order, however
//! many times, and with whatever crashes LiveKit's deliveries and roomd's
//! restarts produce, a room ends where the ordered sequence ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use roomd::event::{LeaveReason, ParticipantKind, ParticipantRef, RoomEvent, RoomRef};
use roomd::record::{RoomRecord, RoomStatus, SessionChange, SessionRecord, StoredRoom};
use roomd::room::state::{RoomState, Touched};
use uuid::Uuid;

const NAME: &str = "prop-room";
const SID: &str = "RM_prop";

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

/// A standard participant with a sid, as LiveKit's webhooks name one.
fn person(sid: &str, identity: &str) -> ParticipantRef {
    ParticipantRef {
        sid: Some(sid.into()),
        identity: identity.into(),
        kind: ParticipantKind::standard(),
        name: None,
        joined_at: None,
    }
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
                sid: Some(format!("PA_{i}").into()),
                identity: format!("person-{}", s.identity).into(),
                kind: if s.agent {
                    ParticipantKind::agent()
                } else {
                    ParticipantKind::standard()
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
    /// Each session with its room's id.
    sessions: HashMap<Uuid, (Uuid, SessionRecord)>,
    inserts: usize,
}

impl Db {
    fn commit(&mut self, rooms: Vec<RoomRecord>, sessions: Vec<SessionChange>) {
        for r in rooms {
            self.inserts += 1;
            let order = self.rooms.get(&r.id).map_or(self.inserts, |(o, _)| *o);
            self.rooms.insert(r.id, (order, r));
        }
        for SessionChange { room_id, row } in sessions {
            assert!(
                self.rooms.contains_key(&room_id),
                "a session is written with or after its room"
            );
            self.sessions.insert(row.id, (room_id, (*row).clone()));
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
                    .filter(|(room_id, _)| *room_id == r.id)
                    .map(|(_, s)| s.clone())
                    .collect();
                (r.clone(), sessions)
            }),
            ended_sids: self
                .rooms
                .values()
                .filter(|(_, r)| r.status == RoomStatus::Ended)
                .filter_map(|(_, r)| Some((r.sid.as_deref()?.to_owned(), r.ended_at?)))
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
        by_kind: current
            .map(|c| c.counts_by_kind())
            .unwrap_or_default()
            .into_iter()
            .map(|(kind, n)| (kind.as_str().to_owned(), n))
            .collect(),
        open: current
            .map(|c| {
                c.open_sessions()
                    .map(|s| (s.sid.as_deref().map(str::to_owned), s.identity.to_string()))
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
    let alice = person("PA_a", "alice");
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

/// The room reference of instance `k` of the name: its own sid, created
/// when its events begin.
fn instance_room(k: usize) -> RoomRef {
    RoomRef {
        name: NAME.into(),
        sid: Some(format!("RM_{k}")),
        created_at: Some(t(k as i64 * 20_000)),
    }
}

/// Instance `k`'s events: the scenario's, shifted to its own time and sids.
fn instance_events(k: usize, scenario: &Scenario) -> Vec<(RoomRef, RoomEvent, DateTime<Utc>)> {
    let shift = chrono::Duration::seconds(k as i64 * 20_000);
    let rename = |p: &ParticipantRef| ParticipantRef {
        sid: p.sid.as_ref().map(|sid| format!("{sid}_{k}").into()),
        ..p.clone()
    };
    scenario
        .ordered()
        .into_iter()
        .map(|(event, at)| {
            let event = match event {
                RoomEvent::ParticipantJoined(p) => RoomEvent::ParticipantJoined(rename(&p)),
                RoomEvent::ParticipantLeft(p, why) => RoomEvent::ParticipantLeft(rename(&p), why),
                other => other,
            };
            (instance_room(k), event, at + shift)
        })
        .collect()
}

/// A delivery schedule over `events`, with restarts, applied to a state
/// that commits to `db`; checks at every step that the store holds the state.
fn deliver(
    events: &[(RoomRef, RoomEvent, DateTime<Utc>)],
    deliveries: &[usize],
    crashes: &BTreeSet<usize>,
) -> Result<RoomState, TestCaseError> {
    let mut db = Db::default();
    let mut state = RoomState::new(NAME);
    for (step, i) in deliveries.iter().enumerate() {
        if crashes.contains(&step) {
            state = RoomState::restore(NAME, db.stored());
        }
        let (room, event, at) = &events[*i];
        let transition = state.apply(room, event, *at);
        db.commit(transition.changes.rooms, transition.changes.sessions);
        check_invariants(&state);
        prop_assert_eq!(
            &RoomState::restore(NAME, db.stored()),
            &state,
            "the store holds exactly the state"
        );
    }
    Ok(state)
}

/// `events` delivered on `deliveries`' schedule, and in order; what a
/// reader sees of the two must be the same.
fn delivered_and_ordered(
    events: &[(RoomRef, RoomEvent, DateTime<Utc>)],
    deliveries: &[usize],
    crashes: &BTreeSet<usize>,
) -> Result<(RoomState, RoomState), TestCaseError> {
    let mut ordered = RoomState::new(NAME);
    for (room, event, at) in events {
        ordered.apply(room, event, *at);
    }
    let state = deliver(events, deliveries, crashes)?;
    prop_assert_eq!(observe(&state), observe(&ordered));
    Ok((state, ordered))
}

/// One person's sid-less history: join and leave in turn, at distinct times.
fn sid_less_events(
    toggles: &[(usize, i64)],
    finish: bool,
) -> Vec<(RoomRef, RoomEvent, DateTime<Utc>)> {
    let room = RoomRef {
        name: NAME.into(),
        sid: None,
        created_at: None,
    };
    let mut present = [false; 3];
    let mut events = Vec::new();
    // Distinct seconds: whole-second ties are decided by arrival, which no
    // order-independence can promise.
    for (n, (who, _)) in toggles.iter().enumerate() {
        let at = t(10 * n as i64 + 1);
        let p = ParticipantRef {
            sid: None,
            identity: format!("person-{who}").into(),
            kind: ParticipantKind::standard(),
            name: None,
            joined_at: None,
        };
        let event = if present[*who] {
            RoomEvent::ParticipantLeft(p, LeaveReason::Left(None))
        } else {
            RoomEvent::ParticipantJoined(p)
        };
        present[*who] = !present[*who];
        events.push((room.clone(), event, at));
    }
    if finish {
        events.push((room, RoomEvent::RoomFinished, t(100_000)));
    }
    events
}

fn deliveries_of(n: usize) -> impl Strategy<Value = (Vec<usize>, BTreeSet<usize>)> {
    schedule(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn instances_of_one_name_with_late_deliveries_across_them_end_like_the_ordered_sequence(
        (events, (deliveries, crashes)) in prop::collection::vec(scenario(), 1..=3)
            .prop_map(|scenarios| {
                let last = scenarios.len() - 1;
                scenarios
                    .into_iter()
                    .enumerate()
                    .flat_map(|(k, mut s)| {
                        // LiveKit never has two live rooms of one name.
                        s.finish |= k < last;
                        instance_events(k, &s)
                    })
                    .collect::<Vec<_>>()
            })
            .prop_flat_map(|events| {
                let n = events.len();
                (Just(events), deliveries_of(n))
            })
    ) {
        let (state, ordered) = delivered_and_ordered(&events, &deliveries, &crashes)?;
        prop_assert_eq!(
            state.current().and_then(|c| c.record().sid.clone()),
            ordered.current().and_then(|c| c.record().sid.clone()),
            "the newest instance is the live one"
        );
    }

    #[test]
    fn sid_less_sequences_end_like_the_ordered_sequence_whatever_the_order(
        (events, (deliveries, crashes)) in (
            prop::collection::vec((0usize..3, 0i64..1), 1..10),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(toggles, finish)| sid_less_events(&toggles, finish))
            .prop_flat_map(|events| {
                let n = events.len();
                (Just(events), deliveries_of(n))
            })
    ) {
        let (state, _) = delivered_and_ordered(&events, &deliveries, &crashes)?;
        if let Some(c) = state.current() {
            prop_assert!(c.record().ended_at.is_none_or(|e| e >= c.record().started_at));
            for s in c.closed_sessions() {
                prop_assert!(s.joined_at().is_none_or(|j| s.left_at().is_some_and(|l| l >= j)));
            }
        }
    }

    #[test]
    fn reconcile_never_acts_on_a_list_fetched_before_a_change_even_after_a_restart(
        (scenario, fetch_after, restart) in scenario().prop_flat_map(|s| {
            let n = s.ordered().len();
            (Just(s), 0..=n, any::<bool>())
        })
    ) {
        let events = scenario.ordered();
        let room = room();
        let mut db = Db::default();
        let mut state = RoomState::new(NAME);
        // roomd's clock: event i is applied at second i.
        let clock = |i: usize| t(50_000 + i as i64);
        let mut truth = None;
        let mut changed_after_fetch = false;
        let fetched_at = clock(fetch_after) - chrono::Duration::milliseconds(500);
        for (i, (event, at)) in events.iter().enumerate() {
            if i == fetch_after {
                // LiveKit's list as of now: who is open.
                truth = Some(roomd::event::RoomTruth {
                    room: room.clone(),
                    listed_at: fetched_at,
                    participants: state.current().map(|c| {
                        c.open_sessions().map(|s| ParticipantRef {
                            sid: s.sid.clone(),
                            identity: s.identity.clone(),
                            kind: s.kind.clone(),
                            name: None,
                            joined_at: s.joined_at(),
                        }).collect()
                    }).unwrap_or_default(),
                });
            }
            let mut transition = state.apply(&room, event, *at);
            state.mark_changed(&mut transition, clock(i));
            changed_after_fetch |= i >= fetch_after
                && transition.outcome == roomd::room::state::Outcome::Applied;
            db.commit(transition.changes.rooms, transition.changes.sessions);
        }
        if restart {
            state = RoomState::restore(NAME, db.stored());
        }
        let before = state.clone();
        // An actor that starts afresh knows nothing of who changed lately.
        let result = state.reconcile(
            truth.as_ref(),
            fetched_at,
            clock(events.len() + 1),
            None,
            &Touched::default(),
        );
        if changed_after_fetch {
            prop_assert!(result.is_none(), "a list older than the room was applied");
            prop_assert_eq!(&state, &before);
        }
    }

    /// A room that changes while its list is fetched (a busy one changes
    /// during every fetch) is still reconciled: the people nobody touched
    /// since the fetch end as LiveKit listed them, whatever webhooks of
    /// theirs were lost before it, and the others are left as they were.
    #[test]
    fn a_busy_room_is_reconciled_for_everyone_who_did_not_change_since_the_fetch(
        (scenario, lost, fetch_after) in scenario().prop_flat_map(|s| {
            let n = s.ordered().len();
            (Just(s), prop::collection::vec(prop::bool::weighted(0.3), n), 0..=n)
        })
    ) {
        let events = scenario.ordered();
        let room = room();
        let clock = |i: usize| t(50_000 + i as i64);
        let fetched_at = clock(fetch_after) - chrono::Duration::milliseconds(500);
        // LiveKit: every event, in order, up to the fetch.
        let mut livekit = RoomState::new(NAME);
        for (event, at) in &events[..fetch_after] {
            livekit.apply(&room, event, *at);
        }
        prop_assume!(livekit.is_active());
        let truth = roomd::event::RoomTruth {
            room: room.clone(),
            listed_at: fetched_at,
            participants: open_refs(&livekit),
        };
        // roomd: some webhooks before the fetch lost, all after it delivered.
        let mut state = RoomState::new(NAME);
        let mut touched = Touched::default();
        let mut busy = BTreeSet::new();
        let mut changed_before_fetch = false;
        for (i, (event, at)) in events.iter().enumerate() {
            if i < fetch_after && lost[i] {
                continue;
            }
            let mut transition = state.apply(&room, event, *at);
            state.mark_changed(&mut transition, clock(i));
            touched.record(&transition, clock(i));
            if transition.outcome == Outcome::Applied {
                changed_before_fetch |= i < fetch_after;
                if let (true, Some(p)) = (i >= fetch_after, event.participant()) {
                    busy.insert(p.identity.to_string());
                }
            }
        }
        let before = open_by_identity(&state);
        let result = state.reconcile(Some(&truth), fetched_at, clock(events.len() + 1), None, &touched);
        if !(state.is_active() && changed_before_fetch) {
            // Ended since the fetch, or nothing to tell the list's age by.
            return Ok(());
        }
        prop_assert!(result.is_some(), "a busy room was not reconciled");
        let after = open_by_identity(&state);
        let listed = open_by_identity(&livekit);
        for identity in (0..4).map(|i| format!("person-{i}")) {
            let (now, expected) = if busy.contains(&identity) {
                (after.get(&identity), before.get(&identity))
            } else {
                (after.get(&identity), listed.get(&identity))
            };
            prop_assert_eq!(now, expected, "{} (busy: {})", identity, busy.contains(&identity));
        }
        let people = after.values().filter(|sids| !sids.is_empty()).count();
        prop_assert_eq!(state.current().unwrap().participant_count(), people);
    }
}

/// The open sessions of a room, as LiveKit's list would give them.
fn open_refs(state: &RoomState) -> Vec<ParticipantRef> {
    state
        .current()
        .map(|c| {
            c.open_sessions()
                .map(|s| ParticipantRef {
                    sid: s.sid.clone(),
                    identity: s.identity.clone(),
                    kind: s.kind.clone(),
                    name: None,
                    joined_at: s.joined_at(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Each person's open sids (people with none left out).
fn open_by_identity(state: &RoomState) -> BTreeMap<String, BTreeSet<String>> {
    let mut open: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in state.current().into_iter().flat_map(|c| c.open_sessions()) {
        open.entry(s.identity.to_string())
            .or_default()
            .insert(s.sid.as_deref().unwrap_or("").to_owned());
    }
    open
}

/// Forgetting is measured on LiveKit's clock, against the room's newest
/// event: history an hour older than that goes, recent history stays, and
/// the current instance is never forgotten (found by the adversarial pass:
/// a forgotten current sid let a join into a finished room).
#[test]
fn history_is_forgotten_against_the_rooms_newest_event_and_the_current_instance_never() {
    let room = room();
    let mut state = RoomState::new(NAME);
    // Years ago on roomd's clock, as replayed or skewed events may be.
    state.apply(
        &room,
        &RoomEvent::ParticipantJoined(person("PA_c", "carol")),
        t(1),
    );
    state.apply(
        &room,
        &RoomEvent::ParticipantLeft(person("PA_t", "tom"), LeaveReason::Left(None)),
        t(10),
    );
    state.apply(&room, &RoomEvent::RoomFinished, t(20));
    state.forget_older_than(chrono::Duration::hours(1), t(30));
    assert_eq!(state.current().unwrap().closed_sessions().count(), 2);
    let late = state.apply(
        &room,
        &RoomEvent::ParticipantJoined(person("PA_e", "erin")),
        t(30),
    );
    assert_eq!(late.outcome, roomd::room::state::Outcome::Stale);
    let tombstoned = state.apply(
        &room,
        &RoomEvent::ParticipantJoined(person("PA_t", "tom")),
        t(5),
    );
    assert_eq!(tombstoned.outcome, roomd::room::state::Outcome::Stale);

    // An hour of LiveKit's time later, the old sessions go; the room stays
    // finished.
    let mut live = RoomState::new(NAME);
    live.apply(
        &room,
        &RoomEvent::ParticipantJoined(person("PA_c", "carol")),
        t(1),
    );
    live.apply(
        &room,
        &RoomEvent::ParticipantLeft(person("PA_c", "carol"), LeaveReason::Left(None)),
        t(10),
    );
    live.apply(
        &room,
        &RoomEvent::ParticipantJoined(person("PA_d", "dan")),
        t(7200),
    );
    live.forget_older_than(chrono::Duration::hours(1), t(7200));
    let current = live.current().unwrap();
    assert_eq!(current.closed_sessions().count(), 0);
    assert_eq!(current.participant_count(), 1);
}

fn sidded(sid: &str, created: i64) -> RoomRef {
    RoomRef {
        name: NAME.into(),
        sid: Some(sid.into()),
        created_at: Some(t(created)),
    }
}

fn sid_less() -> RoomRef {
    RoomRef {
        name: NAME.into(),
        sid: None,
        created_at: None,
    }
}

fn someone(sid: Option<&str>, who: &str) -> ParticipantRef {
    ParticipantRef {
        sid: sid.map(Into::into),
        identity: who.into(),
        kind: ParticipantKind::standard(),
        name: None,
        joined_at: None,
    }
}

use roomd::room::state::Outcome;

// Found by the second adversarial pass: an older instance's late event got
// past the creation-time rule whenever the live instance had no sid yet, or
// a sid-less event had moved a named instance's start back.
#[test]
fn an_older_sid_never_takes_over_whatever_the_live_instance_was_opened_by() {
    let left = |p| RoomEvent::ParticipantLeft(p, LeaveReason::Left(None));
    // A named live room, then a sid-less event from long before it.
    let mut p1 = RoomState::new(NAME);
    p1.apply(&sidded("RM_A1", 1000), &RoomEvent::RoomStarted, t(1000));
    p1.apply(
        &sidded("RM_A1", 1000),
        &RoomEvent::ParticipantJoined(someone(Some("PA_a"), "alice")),
        t(1005),
    );
    p1.apply(&sid_less(), &left(someone(None, "zed")), t(-4000));
    let late = p1.apply(
        &sidded("RM_OLD1", 0),
        &left(someone(Some("PA_b"), "bob")),
        t(100),
    );
    assert_eq!(late.outcome, Outcome::Stale);
    assert_eq!(p1.current().unwrap().record().sid.as_deref(), Some("RM_A1"));
    assert_eq!(p1.current().unwrap().participant_count(), 1);

    // A finished sid-less room, then an older sid.
    let mut p2 = RoomState::new(NAME);
    p2.apply(&sid_less(), &RoomEvent::RoomStarted, t(1000));
    p2.apply(
        &sid_less(),
        &RoomEvent::ParticipantJoined(someone(None, "alice")),
        t(1001),
    );
    p2.apply(&sid_less(), &RoomEvent::RoomFinished, t(1100));
    let late = p2.apply(
        &sidded("RM_OLD2", 0),
        &RoomEvent::ParticipantJoined(someone(Some("PA_b"), "bob")),
        t(100),
    );
    assert_eq!(late.outcome, Outcome::Stale);
    assert!(!p2.is_active());

    // A live sid-less room takes only a sid created after it began.
    let mut p3 = RoomState::new(NAME);
    p3.apply(&sid_less(), &RoomEvent::RoomStarted, t(1000));
    p3.apply(
        &sid_less(),
        &RoomEvent::ParticipantJoined(someone(None, "alice")),
        t(1001),
    );
    let late = p3.apply(&sidded("RM_OLD5", 0), &RoomEvent::RoomFinished, t(500));
    assert_eq!(late.outcome, Outcome::Stale);
    assert!(p3.is_active());
    assert_eq!(p3.current().unwrap().participant_count(), 1);
    let named = p3.apply(
        &sidded("RM_NEW5", 1002),
        &RoomEvent::ParticipantJoined(someone(Some("PA_c"), "carol")),
        t(1003),
    );
    assert_eq!(named.outcome, Outcome::Applied);
    assert_eq!(
        p3.current().unwrap().record().sid.as_deref(),
        Some("RM_NEW5")
    );
    assert_eq!(p3.current().unwrap().participant_count(), 2);
}

// Found by the second adversarial pass: one event dated a year ahead made
// every tombstone look past the horizon.
#[test]
fn an_event_dated_ahead_does_not_make_history_look_old() {
    let room = room();
    let mut state = RoomState::new(NAME);
    state.apply(
        &room,
        &RoomEvent::ParticipantJoined(someone(Some("PA_a"), "alice")),
        t(0),
    );
    state.apply(
        &room,
        &RoomEvent::ParticipantJoined(someone(Some("PA_b"), "bob")),
        t(365 * 86_400),
    );
    state.apply(
        &room,
        &RoomEvent::ParticipantLeft(someone(Some("PA_f"), "frank"), LeaveReason::Left(None)),
        t(65),
    );
    state.forget_older_than(chrono::Duration::seconds(300), t(66));
    let late = state.apply(
        &room,
        &RoomEvent::ParticipantJoined(someone(Some("PA_f"), "frank")),
        t(64),
    );
    assert_eq!(late.outcome, Outcome::Ignored);
    assert_eq!(state.current().unwrap().participant_count(), 2);
}

/// LiveKit's list names the live instance only as of when it was listed:
/// the participants are fetched later, room by room. A room that moved on
/// to a new instance in between must not be taken back to the listed one
/// by the list (a listed sid wins over creation times only for a room
/// that has not changed since it was listed).
#[test]
fn a_listing_older_than_the_rooms_last_change_does_not_take_it_back() {
    let bob = person("PA_b", "bob");
    let instance = |sid: &str, created: i64| RoomRef {
        name: NAME.into(),
        sid: Some(sid.into()),
        created_at: Some(t(created)),
    };
    // roomd's clock.
    let clock = |secs: i64| t(90_000 + secs);
    for listed_after_the_change in [false, true] {
        let mut state = RoomState::new(NAME);
        let mut joined = state.apply(
            &instance("RM_new", 200),
            &RoomEvent::ParticipantJoined(bob.clone()),
            t(201),
        );
        state.mark_changed(&mut joined, clock(10));
        // Listed: an instance roomd never heard of, created before RM_new.
        let truth = roomd::event::RoomTruth {
            room: instance("RM_old", 100),
            listed_at: clock(if listed_after_the_change { 11 } else { 9 }),
            participants: Vec::new(),
        };
        state.reconcile(
            Some(&truth),
            clock(12),
            clock(13),
            None,
            &Touched::default(),
        );
        let sid = state
            .current()
            .unwrap()
            .record()
            .sid
            .as_deref()
            .map(str::to_owned);
        let expected = if listed_after_the_change {
            "RM_old"
        } else {
            "RM_new"
        };
        assert_eq!(
            sid.as_deref(),
            Some(expected),
            "listed after the change: {listed_after_the_change}"
        );
    }
}
