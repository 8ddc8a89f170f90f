//! Restarts: a stopped roomd comes back with the same rooms and counts and
//! keeps recognising redeliveries; a roomd killed with SIGKILL mid-burst has
//! committed every event it acknowledged, and redelivery converges.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::Roomd;
use common::{KEY, SECRET, TestDb, sign_with, webhook};
use futures::StreamExt;
use reqwest::StatusCode;
use roomd::store::entity::{participants, webhook_events};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

#[actix_web::test]
async fn a_restarted_roomd_serves_the_same_counts_and_keeps_applying() {
    common::on_every_database(async |db| {
        let first = common::spawn_app(db).await;
        for (i, who) in ["ann", "bob", "cyd"].iter().enumerate() {
            first
                .ok(&webhook::joined("keep", "RM_keep", &format!("PA_{i}"), who)
                    .id(&format!("EV_keep_{i}"))
                    .body())
                .await;
        }
        first
            .ok(&webhook::left("keep", "RM_keep", "PA_1", "bob")
                .id("EV_keep_left")
                .body())
            .await;
        first
            .ok(&webhook::joined("done", "RM_done", "PA_d", "dee")
                .id("EV_done_1")
                .body())
            .await;
        first
            .ok(&webhook::room_finished("done", "RM_done")
                .id("EV_done_2")
                .body())
            .await;
        first.stop().await;

        let second = common::spawn_app(db).await;
        assert_eq!(second.count("keep").await, 2, "[{}]", db.backend);
        assert_eq!(second.room("done").await["status"], "ended");
        // The event log outlives the process: a retry from before is a duplicate.
        let retry = second
            .ok(&webhook::joined("keep", "RM_keep", "PA_0", "ann")
                .id("EV_keep_0")
                .body())
            .await;
        assert_eq!(retry["duplicate"], true);
        // Tombstones and finished instances survive too.
        let late = second
            .ok(&webhook::joined("keep", "RM_keep", "PA_1", "bob")
                .id("EV_keep_late")
                .body())
            .await;
        assert_eq!(late["outcome"], "ignored");
        let stale = second
            .ok(&webhook::joined("done", "RM_done", "PA_e", "eve")
                .id("EV_done_late")
                .body())
            .await;
        assert_eq!(stale["outcome"], "stale");
        second
            .ok(&webhook::joined("keep", "RM_keep", "PA_3", "dan")
                .id("EV_keep_3")
                .body())
            .await;
        assert_eq!(second.count("keep").await, 3);
        assert_eq!(
            second
                .active_room_row("keep")
                .await
                .unwrap()
                .current_participants,
            3
        );
        second.stop().await;
    })
    .await;
}

/// Sends every event with some concurrency; after `stop_after`
/// acknowledgements calls `stop` once (the process dies or drains). Returns
/// the ids roomd acknowledged.
async fn burst(
    client: &reqwest::Client,
    base: &str,
    events: &[(String, String, String)],
    stop_after: usize,
    stop: impl FnOnce(),
) -> HashSet<String> {
    let acked = std::sync::Mutex::new(HashSet::new());
    let stop = std::sync::Mutex::new(Some(stop));
    futures::stream::iter(events.iter())
        .for_each_concurrent(16, |(id, _, body)| {
            let (acked, stop) = (&acked, &stop);
            async move {
                if send(client, base, body).await == Some(StatusCode::OK) {
                    let mut acked = acked.lock().unwrap();
                    acked.insert(id.clone());
                    if acked.len() >= stop_after
                        && let Some(stop) = stop.lock().unwrap().take()
                    {
                        stop();
                    }
                }
            }
        })
        .await;
    acked.into_inner().unwrap()
}

/// A pool of the test's own on `db`, as roomd opens it.
async fn store_of(db: &TestDb) -> sea_orm::DatabaseConnection {
    roomd::store::connect(&common::settings_for(db).database, 5000)
        .await
        .unwrap()
}

/// Every acknowledged event has its audit row and its session row.
async fn assert_committed(
    db: &TestDb,
    events: &[(String, String, String)],
    acked: &HashSet<String>,
) {
    let store = store_of(db).await;
    let committed: HashSet<String> = webhook_events::Entity::find()
        .all(&store)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.event_id)
        .collect();
    let missing: Vec<_> = acked.difference(&committed).collect();
    assert!(
        missing.is_empty(),
        "[{}] acknowledged but not committed: {missing:?}",
        db.backend
    );
    for (id, sid, _) in events {
        if acked.contains(id) {
            let row = participants::Entity::find()
                .filter(participants::Column::Sid.eq(sid.as_str()))
                .one(&store)
                .await
                .unwrap();
            assert_eq!(row.map(|r| r.status).as_deref(), Some("joined"), "{id}");
        }
    }
    store.close().await.ok();
}

fn joins(prefix: &str, rooms: usize, people: usize) -> Vec<(String, String, String)> {
    (0..rooms)
        .flat_map(|r| {
            (0..people).map(move |p| {
                let id = format!("EV_{prefix}_{r}_{p}");
                let sid = format!("PA_{prefix}_{r}_{p}");
                let body = webhook::joined(
                    &format!("{prefix}-{r}"),
                    &format!("RM_{prefix}_{r}"),
                    &sid,
                    &format!("u{p}"),
                )
                .id(&id)
                .body();
                (id, sid, body)
            })
        })
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn send(client: &reqwest::Client, base: &str, body: &str) -> Option<StatusCode> {
    let token = sign_with(KEY, SECRET, body);
    let response = client
        .post(format!("{base}/v1/webhooks/livekit"))
        .header("Authorization", token)
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    Some(response.status())
}

#[actix_web::test]
async fn after_a_kill_9_every_acknowledged_event_is_committed() {
    const ROOMS: usize = 30;
    const PEOPLE: usize = 10;
    let events = joins("k9", ROOMS, PEOPLE);
    common::on_every_database(async |db| {
        let client = client();
        let roomd = Roomd::start(&db.url).ready(&client).await;
        let base = roomd.base.clone();
        let acked = burst(&client, &base, &events, events.len() / 3, move || {
            roomd.kill_9()
        })
        .await;
        assert!(
            acked.len() >= events.len() / 3,
            "the burst was under way when roomd died"
        );
        assert!(acked.len() < events.len(), "roomd died mid-burst");

        let roomd = Roomd::start(&db.url).ready(&client).await;
        assert_committed(db, &events, &acked).await;

        // LiveKit redelivers what was not acknowledged (and some that were).
        for (_, _, body) in &events {
            assert_eq!(send(&client, &roomd.base, body).await, Some(StatusCode::OK));
        }
        for r in 0..ROOMS {
            let view: serde_json::Value = client
                .get(format!("{}/v1/rooms/k9-{r}", roomd.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(view["participant_count"], PEOPLE, "[{}] k9-{r}", db.backend);
        }
        roomd.kill_9();
    })
    .await;
}

#[actix_web::test]
async fn sigterm_drains_in_flight_events_and_exits_cleanly() {
    let events = joins("term", 20, 10);
    common::on_every_database(async |db| {
        let client = client();
        let roomd = Roomd::start(&db.url).ready(&client).await;
        let base = roomd.base.clone();
        let exit = std::sync::Mutex::new(None);
        let acked = burst(&client, &base, &events, events.len() / 3, || {
            *exit.lock().unwrap() = Some(roomd.terminate());
        })
        .await;
        let exit = exit.into_inner().unwrap().expect("roomd was stopped");
        assert!(exit.success(), "[{}] roomd exited with {exit}", db.backend);
        assert!(acked.len() >= events.len() / 3);
        assert_committed(db, &events, &acked).await;
    })
    .await;
}

/// A body without LiveKit's times opens its instance at roomd's clock.
/// That time must come back from the database as it was kept: PostgreSQL
/// keeps microseconds, so a nanosecond reading came back different after a
/// restart, and the restarted room then judged a later event's creation
/// time against another start than SQLite did (the adversary turned a
/// `stale` into `applied`, count 1 into 2, on PostgreSQL only).
#[actix_web::test]
async fn a_start_read_from_roomds_clock_is_the_same_after_a_restart() {
    common::on_every_database(async |db| {
        let first = common::spawn_app(db).await;
        let mut before = Vec::new();
        for i in 0..20 {
            let room = format!("clock-{i}");
            first
                .ok(&webhook::joined(&room, &format!("RM_clock_{i}"), "PA_c", "cyd").body())
                .await;
            before.push(first.room(&room).await["started_at"].clone());
        }
        first.stop().await;

        let second = common::spawn_app(db).await;
        for (i, started) in before.iter().enumerate() {
            let after = second.room(&format!("clock-{i}")).await["started_at"].clone();
            assert_eq!(&after, started, "[{}] clock-{i}", db.backend);
        }
        second.stop().await;
    })
    .await;
}

// Actors that start together are loaded together (one query for rooms
// that do not exist yet, three for those that do): each must get what it
// would alone, whatever else shares its batch.
#[actix_web::test]
async fn rooms_loaded_together_are_each_what_they_are_alone() {
    common::on_every_database(async |db| {
        let app = common::spawn_app(db).await;
        for (i, who) in ["ann", "bob", "cyd"].iter().enumerate() {
            app.ok(
                &webhook::joined("full", "RM_full", &format!("PA_f{i}"), who)
                    .id(&format!("EV_full_{i}"))
                    .body(),
            )
            .await;
        }
        app.ok(&webhook::left("full", "RM_full", "PA_f1", "bob")
            .id("EV_full_left")
            .body())
            .await;
        // An instance that ended and a new one under the same name: the
        // load carries the ended sid as well as the live instance.
        app.ok(&webhook::joined("again", "RM_a1", "PA_a1", "dee")
            .id("EV_again_1")
            .body())
            .await;
        app.ok(&webhook::room_finished("again", "RM_a1")
            .id("EV_again_end")
            .body())
            .await;
        app.ok(&webhook::joined("again", "RM_a2", "PA_a2", "eve")
            .id("EV_again_2")
            .body())
            .await;
        app.stop().await;

        let store = store_of(db).await;
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        let names = ["full", "nobody", "again", "full", "nobody-else"];
        let together = roomd::store::load_rooms(&store, &names, horizon)
            .await
            .unwrap();
        assert_eq!(together.len(), names.len());
        for (name, loaded) in names.iter().zip(&together) {
            let alone = roomd::store::load_room(&store, name, horizon)
                .await
                .unwrap();
            assert_eq!(loaded, &alone, "[{}] {name}", db.backend);
        }
        let full = together[0].latest.as_ref().expect("full exists");
        assert_eq!(full.0.current_participants, 2, "[{}]", db.backend);
        assert_eq!(full.1.len(), 3, "[{}] every session of full", db.backend);
        assert!(together[1].latest.is_none() && together[4].latest.is_none());
        let again = &together[2];
        assert_eq!(
            again.latest.as_ref().unwrap().0.sid.as_deref(),
            Some("RM_a2")
        );
        assert_eq!(
            again
                .ended_sids
                .iter()
                .map(|(sid, _)| sid.as_str())
                .collect::<Vec<_>>(),
            ["RM_a1"],
            "[{}]",
            db.backend
        );
        store.close().await.ok();
    })
    .await;
}

// The loader answers each start on its own: a room whose row roomd cannot
// read fails its own actor's load, not the loads batched with it.
#[actix_web::test]
async fn a_room_that_cannot_be_read_fails_only_its_own_load() {
    common::on_every_database(async |db| {
        let app = common::spawn_app(db).await;
        for r in 0..24 {
            app.ok(&webhook::joined(
                &format!("good{r}"),
                &format!("RM_g{r}"),
                &format!("PA_g{r}"),
                "ann",
            )
            .id(&format!("EV_good_{r}"))
            .body())
                .await;
        }
        app.ok(&webhook::joined("bad", "RM_bad", "PA_bad", "ann")
            .id("EV_bad")
            .body())
            .await;
        app.stop().await;

        let store = store_of(db).await;
        use sea_orm::ConnectionTrait;
        store
            .execute_unprepared("UPDATE rooms SET status = 'bogus' WHERE livekit_name = 'bad'")
            .await
            .unwrap();
        let loader = roomd::store::Loader::start(store.clone(), |task| {
            tokio::spawn(task);
        });
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        let names: Vec<String> = std::iter::once("bad".to_owned())
            .chain((0..24).map(|r| format!("good{r}")))
            .chain(std::iter::once("bad".to_owned()))
            .collect();
        let loads = names
            .iter()
            .map(|name| loader.load(std::sync::Arc::from(name.as_str()), horizon));
        let loaded = futures::future::join_all(loads).await;
        for (name, result) in names.iter().zip(loaded) {
            match result {
                Ok(room) if name != "bad" => assert_eq!(
                    room.latest.map(|(room, _)| room.current_participants),
                    Some(1),
                    "[{}] {name}",
                    db.backend
                ),
                Err(roomd::store::StoreError::Corrupt(_)) if name == "bad" => {}
                other => panic!("[{}] {name}: {other:?}", db.backend),
            }
        }
        store.close().await.ok();
    })
    .await;
}
