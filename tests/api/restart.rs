//! Restarts: a stopped roomd comes back with the same rooms and counts and
//! keeps recognising redeliveries; a roomd killed with SIGKILL mid-burst has
//! committed every event it acknowledged, and redelivery converges.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::Roomd;
use common::proxy::{Proxy, postgres_addr};
use common::{KEY, SECRET, TestDb, sign_with, webhook};
use futures::StreamExt;
use reqwest::StatusCode;
use roomd::store::entity::{participants, webhook_events};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait};

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

/// `room` with one person in, roomd stopped, then `table` locked by a
/// transaction of the test's: a pool for a loader (without the server's
/// statement timeout, which would end a wait on the lock on its own), the
/// pool holding the lock, and the lock.
async fn one_room_then_locked(
    db: &TestDb,
    room: &str,
    table: &str,
) -> (
    sea_orm::DatabaseConnection,
    sea_orm::DatabaseConnection,
    sea_orm::DatabaseTransaction,
) {
    let app = common::spawn_app(db).await;
    app.ok(
        &webhook::joined(room, &format!("RM_{room}"), &format!("PA_{room}"), "ann")
            .id(&format!("EV_{room}"))
            .body(),
    )
    .await;
    app.stop().await;
    let store = roomd::store::connect(&common::settings_for(db).database, 600_000)
        .await
        .unwrap();
    let pg = store_of(db).await;
    let lock = pg.begin().await.unwrap();
    lock.execute_unprepared(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    (store, pg, lock)
}

/// roomd's loader on `store`, its tasks on the test's runtime.
fn loader_of(store: &sea_orm::DatabaseConnection, deadline: Duration) -> roomd::store::Loader {
    roomd::store::Loader::start(store.clone(), deadline, |task| {
        tokio::spawn(task);
    })
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

// Actors that start together are looked up together (one query for the
// names of a batch), and each existing room is then loaded on its own:
// each must get what it would alone, whatever else shares its batch.
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
        let loader = loader_of(&store, Duration::from_secs(5));
        let loads = names
            .iter()
            .map(|name| loader.load((*name).into(), horizon));
        let together: Vec<_> = futures::future::join_all(loads)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
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
        store
            .execute_unprepared("UPDATE rooms SET status = 'bogus' WHERE livekit_name = 'bad'")
            .await
            .unwrap();
        let loader = loader_of(&store, Duration::from_secs(5));
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

// A query that never answers (here: one waiting on a lock) is abandoned at
// the loader's deadline: the loader's tasks waited
// on it for good, so that no new room could start while the database
// answered everything else (found by the adversary, with a connection
// frozen by a proxy).
#[actix_web::test]
async fn a_load_that_never_answers_is_abandoned_and_the_next_ones_are_served() {
    common::on_postgres(async |db| {
        let (store, pg, lock) = one_room_then_locked(db, "held", "rooms").await;
        // Released when told, or in any case after a while, so that a
        // loader that does wait ends too (and fails the assertions below
        // instead of hanging the test).
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let unlocked = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(20), released).await;
            lock.rollback().await.ok();
        });

        let loader = loader_of(&store, Duration::from_millis(300));
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        // More than the loader has tasks: each waits on the lock until the
        // deadline, and a task whose query was abandoned takes the next.
        for i in 0..8 {
            let result = loader.load(format!("new{i}").into(), horizon).await;
            assert!(
                matches!(result, Err(roomd::store::StoreError::TimedOut(_))),
                "load {i} while the table is locked: {result:?}"
            );
        }
        release.send(()).ok();
        unlocked.await.unwrap();
        pg.close().await.ok();

        let room = loader.load("held".into(), horizon).await.unwrap();
        assert_eq!(
            room.latest.map(|(room, _)| room.current_participants),
            Some(1)
        );
        let new = loader.load("new0".into(), horizon).await.unwrap();
        assert_eq!(new, roomd::record::StoredRoom::default());
        store.close().await.ok();
    })
    .await;
}

// A room with a long history (here: its sessions behind a lock) holds no
// other room's start: the rooms that do not exist yet are answered once
// the batch's names are looked up, and each existing room's sessions are
// read on their own (found by the adversary: new rooms batched with rooms
// of 200,000 sessions timed out with them).
#[actix_web::test]
async fn a_slow_room_does_not_hold_the_new_rooms_looked_up_with_it() {
    common::on_postgres(async |db| {
        let (store, pg, lock) = one_room_then_locked(db, "long", "participants").await;

        let loader = loader_of(&store, Duration::from_secs(20));
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        // Both queued before the loader's task runs (this runtime has one
        // thread), so they share a batch.
        let long = loader.load("long".into(), horizon);
        let new = loader.load("brand-new".into(), horizon);
        let (long, new) = futures::join!(long, async {
            let new = new.await;
            // Answered while the long room still waits on the lock.
            lock.rollback().await.unwrap();
            new
        });
        assert_eq!(new.unwrap(), roomd::record::StoredRoom::default());
        let long = long.unwrap().latest.expect("long exists");
        assert_eq!(long.1.len(), 1);
        pg.close().await.ok();
        store.close().await.ok();
    })
    .await;
}

/// A migrated database reached through a proxy that freezes any
/// connection carrying `HANG-` (in a room's name): the loader's pool, and
/// the proxy, which must outlive it. `server_deadline_ms` is the pool's
/// transaction deadline, which the server enforces too.
async fn behind_a_freezing_proxy(
    db: &TestDb,
    server_deadline_ms: u64,
) -> (sea_orm::DatabaseConnection, Proxy) {
    let proxy = Proxy::start(postgres_addr(&db.url)).await;
    let mut settings = common::settings_for(db).database;
    settings.url = proxy.clear_url_for(&db.url);
    let store = roomd::store::connect(&settings, server_deadline_ms)
        .await
        .unwrap();
    roomd::store::migrate(&store).await.unwrap();
    proxy.freeze_on(b"HANG-");
    (store, proxy)
}

// A lookup whose connection stopped answering fails only its own room:
// the rooms batched with it are looked up again alone (found by the
// adversary, with a proxy that froze connections by content: every new
// room of the batch failed with it).
#[actix_web::test]
async fn a_hung_lookup_fails_only_its_own_room() {
    common::on_postgres(async |db| {
        let (store, _proxy) = behind_a_freezing_proxy(db, 600_000).await;
        let loader = loader_of(&store, Duration::from_secs(2));
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        // Queued before the loader's task runs (this runtime has one
        // thread), so they share a batch.
        let names = ["fine-1", "HANG-1", "fine-2", "fine-3"];
        let loads = names
            .iter()
            .map(|name| loader.load((*name).into(), horizon));
        let loaded = futures::future::join_all(loads).await;
        for (name, result) in names.iter().zip(loaded) {
            match result {
                Ok(room) if name.starts_with("fine") => {
                    assert_eq!(room, roomd::record::StoredRoom::default(), "{name}")
                }
                Err(roomd::store::StoreError::TimedOut(_)) if name.starts_with("HANG") => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    })
    .await;
}

// Lookups stuck on connections that stopped answering, one per loader
// task, hold no other room's start: a task waits for its lookup only
// briefly before it takes the next batch beside it (found by the
// adversary: four hung lookups held every new room for their deadline).
#[actix_web::test]
async fn lookups_on_hung_connections_hold_no_other_start() {
    use futures::FutureExt;
    common::on_postgres(async |db| {
        let (store, _proxy) = behind_a_freezing_proxy(db, 600_000).await;
        let loader = loader_of(&store, Duration::from_secs(60));
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        let mut hung: Vec<_> = (0..4)
            .map(|i| Box::pin(loader.load(format!("HANG-{i}").into(), horizon)))
            .collect();
        // Queued one at a time, each its own batch.
        for load in &mut hung {
            assert!(load.as_mut().now_or_never().is_none());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fresh = loader.load("fresh".into(), horizon).await.unwrap();
        assert_eq!(fresh, roomd::record::StoredRoom::default());
        for (i, load) in hung.iter_mut().enumerate() {
            assert!(
                load.as_mut().now_or_never().is_none(),
                "HANG-{i} was answered before the fresh room"
            );
        }
    })
    .await;
}

// A query abandoned on a connection that stopped answering gives its pool
// slot back once the server's own deadline has passed. sqlx pings a
// connection dropped mid-query before it goes back to the pool, and waited
// on that ping for good: as many hung loads as the pool has connections
// stopped every room's start for good, while /readyz said 200 (found by
// the adversary).
#[actix_web::test]
async fn hung_connections_give_their_pool_slots_back() {
    common::on_postgres(async |db| {
        let (store, _proxy) = behind_a_freezing_proxy(db, 1_000).await;
        let loader = loader_of(&store, Duration::from_millis(300));
        let horizon = chrono::Utc::now() - chrono::Duration::hours(1);
        let pool = common::settings_for(db).database.max_connections;
        for i in 0..pool + 2 {
            match loader.load(format!("HANG-{i}").into(), horizon).await {
                Err(roomd::store::StoreError::TimedOut(_)) => {}
                other => panic!("HANG-{i}: {other:?}"),
            }
        }
        // Past the server's deadline (1 s), whatever the hung connections
        // still hold is given up.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let loader = loader_of(&store, Duration::from_secs(10));
        let fresh = loader.load("fresh".into(), horizon).await;
        assert_eq!(fresh.unwrap(), roomd::record::StoredRoom::default());
    })
    .await;
}
