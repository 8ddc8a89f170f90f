//! The supervisor over the real server and database: recovery before
//! readiness, crash restarts, actor retirement, and reconciliation against a
//! stand-in LiveKit RoomService for every webhook LiveKit may have dropped.

use crate::common;

use common::fake_livekit::{FakeLiveKit, active, participant};
use common::{KEY, SECRET, TestApp, TestDb, webhook};
use livekit_protocol::participant_info::State;
use reqwest::StatusCode;
use roomd::room::state::CorrectionKind;

async fn with_livekit(db: &TestDb, livekit: &FakeLiveKit) -> TestApp {
    common::spawn_with_livekit(db, livekit).await
}

#[actix_web::test]
async fn readyz_and_webhooks_wait_for_recovery() {
    common::on_every_database(async |db| {
        let first = common::spawn_app(db).await;
        first
            .ok(&webhook::joined("warm", "RM_warm", "PA_w", "wes")
                .id("EV_warm_1")
                .body())
            .await;
        first.stop().await;

        let app = common::spawn_unrecovered(common::settings_for(db), db.backend).await;
        let (status, _) = app.get("/healthz").await;
        assert_eq!(status, StatusCode::OK, "the process is up");
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["recovered"], false);
        let early = app
            .webhook(
                &webhook::joined("warm", "RM_warm", "PA_x", "xan")
                    .id("EV_warm_2")
                    .body(),
            )
            .await;
        assert_eq!(
            early.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "no webhook before recovery"
        );
        assert!(early.retry_after.is_some());

        assert_eq!(app.supervisor.recover().await.unwrap(), 1);
        let (status, _) = app.get("/readyz").await;
        assert_eq!(status, StatusCode::OK);
        app.ok(&webhook::joined("warm", "RM_warm", "PA_x", "xan")
            .id("EV_warm_2")
            .body())
            .await;
        assert_eq!(app.count("warm").await, 2);
        app.stop().await;
    })
    .await;
}

#[actix_web::test]
async fn a_room_finished_while_roomd_was_down_is_ended_by_reconciliation() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        let first = common::spawn_app(db).await;
        first
            .ok(&webhook::joined("gone", "RM_gone", "PA_g1", "gil").body())
            .await;
        first
            .ok(&webhook::joined("gone", "RM_gone", "PA_g2", "gus").body())
            .await;
        first.stop().await;
        // While roomd was down the room finished; LiveKit no longer has it.

        let app = with_livekit(db, &livekit).await;
        app.reconcile_now().await.expect("reconcile");
        let view = app.room("gone").await;
        assert_eq!(view["status"], "ended", "[{}] {view}", db.backend);
        assert_eq!(view["participant_count"], 0);
        let room = &app.room_rows("gone").await[0];
        assert_eq!(room.end_reason.as_deref(), Some("reconciled"));
        assert_eq!(room.current_participants, 0);
        for p in app.participant_rows(room.id).await {
            assert_eq!(p.leave_reason.as_deref(), Some("reconciled"));
        }
        // The correction is audited like an event.
        let rows = roomd::store::entity::webhook_events::Entity::find()
            .filter(roomd::store::entity::webhook_events::Column::Event.eq("reconcile"))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

#[actix_web::test]
async fn missed_joins_and_leaves_are_corrected_to_livekits_counts() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        livekit.set_room("drift", "RM_drift", vec![]);
        let app = with_livekit(db, &livekit).await;
        app.ok(&webhook::joined("drift", "RM_drift", "PA_a", "alice")
            .id("EV_drift_1")
            .body())
            .await;
        app.ok(&webhook::joined("drift", "RM_drift", "PA_b", "bob")
            .id("EV_drift_2")
            .body())
            .await;
        assert_eq!(app.count("drift").await, 2);

        // LiveKit's truth: alice left (that webhook was dropped), carol joined
        // (dropped too), dave is still connecting (not counted, like LiveKit).
        livekit.set_room(
            "drift",
            "RM_drift",
            vec![
                active("PA_b", "bob"),
                active("PA_c", "carol"),
                participant("PA_d", "dave", State::Joining),
            ],
        );
        let report = app.reconcile_now().await.expect("reconcile");
        let view = app.room("drift").await;
        assert_eq!(view["participant_count"], 2, "[{}] {view}", db.backend);
        let row = app.active_room_row("drift").await.unwrap();
        assert_eq!(row.current_participants, 2);
        let people: Vec<(String, String)> = app
            .participant_rows(row.id)
            .await
            .into_iter()
            .map(|p| (p.identity, p.status))
            .collect();
        assert!(people.contains(&("alice".into(), "left".into())));
        assert!(people.contains(&("carol".into(), "joined".into())));
        assert!(!people.iter().any(|(who, _)| who == "dave"));
        let kinds: Vec<CorrectionKind> = report.corrections.iter().map(|c| c.what).collect();
        assert!(
            kinds.contains(&CorrectionKind::SessionClosed)
                && kinds.contains(&CorrectionKind::SessionOpened)
        );

        // A second round finds nothing left to correct.
        let again = app.reconcile_now().await.unwrap();
        assert!(again.corrections.is_empty(), "{:?}", again.corrections);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}

/// A name too long to index (over 2,048 bytes; webhooks naming it are
/// refused with 400) is not tracked from LiveKit's list either: its commit
/// failed every round on PostgreSQL, and SQLite tracked it.
#[actix_web::test]
async fn a_listed_room_whose_name_is_too_long_to_track_is_skipped() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        let long: String = (0..2049u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
            .collect();
        livekit.set_room(&long, "RM_long", vec![active("PA_1", "u1")]);
        livekit.set_room("short", "RM_short", vec![active("PA_2", "u2")]);
        let app = with_livekit(db, &livekit).await;
        let report = app.reconcile_now().await.expect("reconcile");
        assert_eq!(report.rooms_skipped, 0, "[{}] {report:?}", db.backend);
        assert_eq!(app.count("short").await, 1, "[{}]", db.backend);
        let (status, _) = app.get(&format!("/v1/rooms/{long}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "[{}]", db.backend);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}

#[actix_web::test]
async fn a_room_livekit_has_that_roomd_never_saw_is_created() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        livekit.set_room(
            "unseen",
            "RM_unseen",
            vec![
                active("PA_1", "u1"),
                active("PA_2", "u2"),
                active("PA_3", "u2"),
            ],
        );
        let app = with_livekit(db, &livekit).await;
        app.reconcile_now().await.expect("reconcile");
        let view = app.room("unseen").await;
        assert_eq!(view["status"], "active");
        assert_eq!(view["sid"], "RM_unseen");
        assert_eq!(
            view["participant_count"], 2,
            "two people, one of them twice connected"
        );
        // Its webhooks then apply on top of it.
        app.ok(&webhook::left("unseen", "RM_unseen", "PA_1", "u1").body())
            .await;
        assert_eq!(app.count("unseen").await, 1);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}

#[actix_web::test]
async fn an_unreachable_livekit_leaves_roomd_serving_and_reconcile_resumes() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        livekit.set_reachable(false);
        let app = with_livekit(db, &livekit).await;
        app.ok(&webhook::joined("solo", "RM_solo", "PA_s", "sol").body())
            .await;
        assert_eq!(app.count("solo").await, 1);
        assert!(app.reconcile_now().await.is_err(), "LiveKit is down");
        assert_eq!(app.count("solo").await, 1, "a failed round changes nothing");

        livekit.set_reachable(true);
        livekit.set_room(
            "solo",
            "RM_solo",
            vec![active("PA_s", "sol"), active("PA_t", "tia")],
        );
        app.reconcile_now().await.expect("LiveKit is back");
        assert_eq!(app.count("solo").await, 2);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}

async fn a_crashing_actor_is_restarted_from_the_committed_state(app: &TestApp) {
    app.ok(&webhook::joined("crash", "RM_crash", "PA_1", "one")
        .id("EV_crash_1")
        .body())
        .await;
    app.ok(&webhook::joined("crash", "RM_crash", "PA_2", "two")
        .id("EV_crash_2")
        .body())
        .await;
    let restarts = app.supervisor.status().restarts;

    // The actor panics on the first delivery of an `EV_PANIC` id (a test-only
    // fault, once per id in the process): 503, nothing lost.
    let id = format!("EV_PANIC_crash_{}", app.backend);
    let poison = webhook::joined("crash", "RM_crash", "PA_3", "three")
        .id(&id)
        .body();
    let reply = app.webhook(&poison).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
    assert!(reply.retry_after.is_some());
    assert_eq!(app.supervisor.status().restarts, restarts + 1);
    assert_eq!(app.count("crash").await, 2);

    // LiveKit redelivers: a new actor, rebuilt from the database, applies it.
    let retry = app.ok(&poison).await;
    assert_eq!(retry["outcome"], "applied");
    assert_eq!(app.count("crash").await, 3);
    let retried_join = app
        .ok(&webhook::joined("crash", "RM_crash", "PA_1", "one")
            .id("EV_crash_1")
            .body())
        .await;
    assert_eq!(retried_join["duplicate"], true);
    assert_eq!(
        app.active_room_row("crash")
            .await
            .unwrap()
            .current_participants,
        3
    );
}
#[actix_web::test]
async fn a_crashing_actor_is_restarted_from_the_committed_state_on_every_backend() {
    common::on_every_backend(a_crashing_actor_is_restarted_from_the_committed_state).await;
}

/// Polls (bounded, no timing assertion) until the supervisor holds `n` actors.
async fn until_live_actors(app: &TestApp, n: usize) -> usize {
    for _ in 0..200 {
        if app.supervisor.status().live_actors == n {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.supervisor.status().live_actors
}

#[actix_web::test]
async fn finished_and_idle_rooms_retire_their_actors_and_stay_readable() {
    common::on_every_database(async |db| {
        let mut settings = common::settings_for(db);
        settings.rooms.retire_after_finish_secs = 0;
        settings.rooms.idle_timeout_secs = 0;
        let app = common::spawn_app_with(settings, db.backend).await;
        app.ok(&webhook::joined("busy", "RM_busy", "PA_b", "bea").body())
            .await;
        app.ok(&webhook::joined("done", "RM_done", "PA_d", "dot").body())
            .await;
        app.ok(&webhook::room_finished("done", "RM_done").body())
            .await;
        app.ok(&webhook::joined("empty", "RM_empty", "PA_e", "eli").body())
            .await;
        app.ok(&webhook::left("empty", "RM_empty", "PA_e", "eli").body())
            .await;

        // Only the room with someone in keeps its actor.
        assert_eq!(until_live_actors(&app, 1).await, 1, "[{}]", db.backend);
        assert_eq!(app.room("done").await["status"], "ended");
        assert_eq!(app.room("empty").await["status"], "active");
        assert_eq!(app.count("busy").await, 1);
        // The empty room is still live: listed with its count, though no
        // actor holds it (it dropped out of the list once its actor retired).
        let (_, list) = app.get("/v1/rooms").await;
        let listed = common::counts(&list);
        assert_eq!(
            listed,
            [("busy", 1), ("empty", 0)],
            "[{}] {list}",
            db.backend
        );
        // Admins see actors, and the empty room has none.
        let admin = common::admin_token();
        let (_, actors) = app.get_as("/v1/debug/actors", Some(&admin)).await;
        let rooms: Vec<&str> = actors["actors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["room"].as_str().unwrap())
            .collect();
        assert_eq!(rooms, ["busy"], "[{}] {actors}", db.backend);
        let (status, _) = app.get_as("/v1/debug/actors/empty", Some(&admin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The idle room's next event rebuilds it from the database, tombstone included.
        let late = app
            .ok(&webhook::joined("empty", "RM_empty", "PA_e", "eli").body())
            .await;
        assert_eq!(late["outcome"], "ignored");
        app.ok(&webhook::joined("empty", "RM_empty", "PA_f", "fay").body())
            .await;
        assert_eq!(app.count("empty").await, 1);
        app.stop().await;
    })
    .await;
}

// Rooms whose actors retired keep their snapshots, and the actor list
// skips them; however many lie between two actors, a page looks at a
// bounded number and, cut short, says where to go on (found by the
// adversary: a page of 10 took 18.6 ms behind 60,000 such rooms).
#[actix_web::test]
async fn the_actor_list_pages_past_many_rooms_without_actors() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.rooms.idle_timeout_secs = 0;
    let app = common::spawn_app_with(settings, db.backend).await;
    for i in 0..1_050 {
        let name = format!("idle-{i:04}");
        app.ok(&webhook::room_started(&name, &format!("RM_{name}")).body())
            .await;
    }
    app.ok(&webhook::joined("zz-busy", "RM_zz", "PA_z", "zed").body())
        .await;
    assert_eq!(until_live_actors(&app, 1).await, 1);

    let admin = common::admin_token();
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/debug/actors?limit=10&after={after}");
        let (status, page) = app.get_as(&path, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let rooms: Vec<String> = page["actors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["room"].as_str().unwrap().to_owned())
            .collect();
        pages.push(rooms);
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert!(
        pages[0].is_empty() && pages.len() > 1,
        "cut short: {pages:?}"
    );
    assert_eq!(pages.concat(), ["zz-busy"]);
    // Every room is still listed, with or without its actor.
    let (_, all) = app.get("/v1/rooms?limit=1000&after=idle-0049").await;
    assert_eq!(common::counts(&all).len(), 1_000);
    app.stop().await;
}

// Waits longer than any clock can hold mean "never" (found by the
// adversary: `idle_timeout_secs = 2^64 - 1` overflowed the retirement
// deadline, every actor of an empty room panicked, and the room answered
// 503 for good).
#[actix_web::test]
async fn waits_no_clock_can_hold_mean_never() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.rooms.idle_timeout_secs = u64::MAX;
    settings.rooms.retire_after_finish_secs = u64::MAX;
    settings.rooms.history_horizon_secs = u64::MAX;
    let app = common::spawn_app_with(settings, db.backend).await;
    app.ok(&webhook::joined("vast", "RM_vast", "PA_a", "ann").body())
        .await;
    app.ok(&webhook::left("vast", "RM_vast", "PA_a", "ann").body())
        .await;
    app.ok(&webhook::joined("vast", "RM_vast", "PA_b", "bob").body())
        .await;
    assert_eq!(app.count("vast").await, 1);
    app.ok(&webhook::room_finished("vast", "RM_vast").body())
        .await;
    assert_eq!(app.room("vast").await["status"], "ended");
    assert_eq!(app.supervisor.status().restarts, 0, "no actor crashed");
    app.stop().await;
}

// Recovery reads the active rooms page by page (500 a page), and a node
// taking some shards over loads only their rooms' sessions: every picked
// room across the pages comes back with its people, and no other does.
#[actix_web::test]
async fn recovery_pages_through_the_rooms_and_loads_only_those_picked() {
    use roomd::store::entity::{participants, rooms};
    use roomd::store::rows;
    use sea_orm::EntityTrait;
    common::on_every_database(async |db| {
        let app = common::spawn_unrecovered(common::settings_for(db), db.backend).await;
        let now = chrono::Utc::now();
        let (mut room_rows, mut people_rows) = (Vec::new(), Vec::new());
        for r in 0..1_201 {
            let id = uuid::Uuid::new_v4();
            let (name, sid) = (format!("paged-{r}"), Some(format!("RM_paged{r}")));
            room_rows.push(rows::active_room(id, name, sid, 2, now));
            for p in 0..2 {
                let (identity, sid) = (format!("user-{p}"), format!("PA_paged{r}x{p}"));
                people_rows.push(rows::open_participant(
                    uuid::Uuid::new_v4(),
                    id,
                    identity,
                    sid,
                    now,
                ));
            }
        }
        for chunk in room_rows.chunks(200) {
            rooms::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&app.db)
                .await
                .unwrap();
        }
        for chunk in people_rows.chunks(200) {
            participants::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&app.db)
                .await
                .unwrap();
        }

        let picked = |name: &str| name.ends_with('7');
        let recovered = app.supervisor.recover_where(picked).await.unwrap();
        assert_eq!(recovered, 120, "paged-7, -17, ... -1197");
        let actors = app.supervisor.snapshots(None, 10_000).items;
        assert_eq!(actors.len(), 120);
        for (name, snapshot) in &actors {
            assert!(picked(name), "{name} was not picked");
            let count = snapshot.room.as_ref().map(|r| r.participant_count);
            assert_eq!(count, Some(2), "{name}");
        }
        app.stop().await;
    })
    .await;
}

// An actor retires only when no delivery holds a slot in its mailbox and no
// commit is in flight, and a message an actor never took goes to the room's
// next actor. With idle rooms retiring at once, a room that keeps emptying
// has its actor retire between almost every pair of events: every event is
// still committed and answered 200 (before these fixes about 1 in 130 got a
// 503), and the rows are exact.
#[actix_web::test]
async fn retiring_actors_lose_no_event() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.rooms.idle_timeout_secs = 0;
    let app = common::spawn_app_with(settings, db.backend).await;
    for i in 0..500 {
        let sid = format!("PA_{i}");
        for body in [
            webhook::joined("flicker", "RM_flicker", &sid, "fox").body(),
            webhook::left("flicker", "RM_flicker", &sid, "fox").body(),
        ] {
            app.ok(&body).await;
        }
    }
    assert_eq!(app.count("flicker").await, 0);
    let rows = app.room_rows("flicker").await;
    let sessions = app.participant_rows(rows[0].id).await;
    assert_eq!(sessions.len(), 500);
    assert!(sessions.iter().all(|s| s.left_at.is_some()));
    app.stop().await;
}

// A room with nobody in parks its actor between events: its task and
// mailbox go, its state stays. The next event resumes it as it was (no
// load: its counters and recent events go on), the count stays exact,
// and a room with someone in keeps its task.
async fn quiet_rooms_park_and_resume_where_they_were(app: &TestApp) {
    let admin = common::admin_token();
    let parked = || app.supervisor.status().parked_actors;
    app.ok(&webhook::room_started("lobby", "RM_lobby").body())
        .await;
    assert_eq!(parked(), 1, "[{}] an empty room parks", app.backend);
    assert_eq!(app.supervisor.status().live_actors, 1);

    let join = webhook::joined("lobby", "RM_lobby", "PA_1", "ann").id("EV_park_join");
    app.ok(&join.body()).await;
    assert_eq!(parked(), 0, "[{}] an occupied room runs", app.backend);
    assert_eq!(app.count("lobby").await, 1);

    app.ok(&webhook::left("lobby", "RM_lobby", "PA_1", "ann").body())
        .await;
    assert_eq!(parked(), 1, "[{}] empty again, parked again", app.backend);
    assert_eq!(app.count("lobby").await, 0);

    // LiveKit's retry of the join, after the leave: a duplicate, not a rejoin.
    app.ok(&join.body()).await;
    assert_eq!(app.count("lobby").await, 0, "[{}]", app.backend);
    assert_eq!(parked(), 1);

    let (status, one) = app.get_as("/v1/debug/actors/lobby", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let counters = &one["snapshot"]["counters"];
    assert_eq!(counters["applied"], 3, "[{}] {one}", app.backend);
    assert_eq!(counters["duplicates"], 1, "[{}] {one}", app.backend);
    assert_eq!(
        one["snapshot"]["recent_events"].as_array().unwrap().len(),
        4,
        "[{}] every event since the room started, across three parkings",
        app.backend
    );
    assert_eq!(app.room("lobby").await["status"], "active");
}

#[actix_web::test]
async fn quiet_rooms_park_and_resume_where_they_were_on_every_backend() {
    common::on_every_backend(quiet_rooms_park_and_resume_where_they_were).await;
}

// A reconciliation round resumes every room LiveKit lists; one with nothing
// to correct leaves an empty room parked again, as a commit does (found by
// the adversary: every round left the empty rooms running).
#[actix_web::test]
async fn a_round_with_nothing_to_correct_leaves_empty_rooms_parked() {
    common::on_every_database(async |db| {
        let livekit = FakeLiveKit::start(KEY, SECRET).await;
        livekit.set_room("quiet", "RM_quiet", vec![]);
        livekit.set_room("fixed", "RM_fixed", vec![]);
        let app = with_livekit(db, &livekit).await;
        app.ok(&webhook::room_started("quiet", "RM_quiet").body())
            .await;
        app.ok(&webhook::joined("fixed", "RM_fixed", "PA_g", "ghost").body())
            .await;
        assert_eq!(app.supervisor.status().parked_actors, 1);

        // "fixed" loses its ghost (a commit); "quiet" has nothing to correct.
        let report = app.reconcile_now().await.expect("reconcile");
        assert_eq!(report.corrections.len(), 1, "{:?}", report.corrections);
        assert_eq!(app.count("fixed").await, 0);
        let status = app.supervisor.status();
        assert_eq!(
            (status.live_actors, status.parked_actors),
            (2, 2),
            "[{}] both rooms are empty",
            db.backend
        );
        let again = app.reconcile_now().await.expect("reconcile");
        assert!(again.corrections.is_empty(), "{:?}", again.corrections);
        assert_eq!(app.supervisor.status().parked_actors, 2, "[{}]", db.backend);
        app.stop().await;
        livekit.stop().await;
    })
    .await;
}
