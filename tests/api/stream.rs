//! Server-Sent Events: a connected client sees joins and leaves in commit
//! order; a reconnect with Last-Event-ID misses nothing; a client that never
//! reads does not hold the room up.

use crate::common;

use std::time::Duration;

use common::process::Roomd;
use common::{TestApp, join_token, webhook};
use reqwest::StatusCode;
use serde_json::Value;

/// One SSE connection, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

struct Event {
    id: String,
    kind: String,
    data: Value,
}

impl Events {
    async fn open(app: &TestApp, room: &str, last_event_id: Option<&str>) -> Self {
        let mut request = app
            .client
            .get(format!("{}/v1/rooms/{room}/stream", app.base))
            .bearer_auth(join_token(room, "viewer"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    // A keep-alive comment.
                    continue;
                }
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or_default()
                        .to_owned()
                };
                return Event {
                    id: field("id"),
                    kind: field("event"),
                    data: serde_json::from_str(&field("data")).unwrap(),
                };
            }
            // A guard against a hung test, not a speed requirement.
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event within 20 s")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn a_connected_client_sees_joins_and_leaves_in_order(app: &TestApp) {
    app.ok(&webhook::joined("live", "RM_live", "PA_0", "host").body())
        .await;
    let mut events = Events::open(app, "live", None).await;
    let first = events.next().await;
    assert_eq!(first.kind, "snapshot");
    assert_eq!(first.data["room"]["participant_count"], 1);
    assert_eq!(first.data["participants"][0]["identity"], "host");

    for who in ["ann", "bob"] {
        app.ok(&webhook::joined("live", "RM_live", &format!("PA_{who}"), who).body())
            .await;
    }
    app.ok(&webhook::left("live", "RM_live", "PA_ann", "ann").body())
        .await;
    let seen: Vec<(String, String, u64)> = {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = events.next().await;
            assert_eq!(e.kind, "update");
            seen.push((
                e.data["event"].as_str().unwrap().to_owned(),
                e.data["identity"].as_str().unwrap().to_owned(),
                e.data["room"]["participant_count"].as_u64().unwrap(),
            ));
        }
        seen
    };
    assert_eq!(
        seen,
        [
            ("participant_joined".into(), "ann".into(), 2),
            ("participant_joined".into(), "bob".into(), 3),
            ("participant_left".into(), "ann".into(), 2),
        ]
    );
}
#[actix_web::test]
async fn a_connected_client_sees_joins_and_leaves_in_order_on_every_backend() {
    common::on_every_backend(a_connected_client_sees_joins_and_leaves_in_order).await;
}

async fn a_reconnect_with_last_event_id_misses_nothing(app: &TestApp) {
    app.ok(&webhook::joined("resume", "RM_res", "PA_0", "host").body())
        .await;
    let mut events = Events::open(app, "resume", None).await;
    assert_eq!(events.next().await.kind, "snapshot");
    app.ok(&webhook::joined("resume", "RM_res", "PA_1", "one").body())
        .await;
    let seen = events.next().await;
    drop(events);

    // While the client is away:
    app.ok(&webhook::joined("resume", "RM_res", "PA_2", "two").body())
        .await;
    app.ok(&webhook::joined("resume", "RM_res", "PA_3", "three").body())
        .await;

    let mut events = Events::open(app, "resume", Some(&seen.id)).await;
    let missed = [events.next().await, events.next().await];
    let who: Vec<&str> = missed
        .iter()
        .map(|e| e.data["identity"].as_str().unwrap())
        .collect();
    assert!(
        missed.iter().all(|e| e.kind == "update"),
        "replayed, not a snapshot"
    );
    assert_eq!(who, ["two", "three"]);
    assert_eq!(missed[1].data["room"]["participant_count"], 4);

    // An id this process never issued (an earlier run's) gets a fresh snapshot.
    let mut events = Events::open(app, "resume", Some("0badc0de-7")).await;
    let fresh = events.next().await;
    assert_eq!(fresh.kind, "snapshot");
    assert_eq!(fresh.data["room"]["participant_count"], 4);
}
#[actix_web::test]
async fn a_reconnect_with_last_event_id_misses_nothing_on_every_backend() {
    common::on_every_backend(a_reconnect_with_last_event_id_misses_nothing).await;
}

async fn a_client_that_never_reads_does_not_hold_the_room_up(app: &TestApp) {
    app.ok(&webhook::joined("slow", "RM_slow", "PA_0", "host").body())
        .await;
    let stalled = Events::open(app, "slow", None).await;
    // More updates than the feed keeps for a subscriber; each must be
    // committed and answered while the client reads nothing.
    for i in 1..=400 {
        app.ok(&webhook::joined("slow", "RM_slow", &format!("PA_{i}"), &format!("p{i}")).body())
            .await;
    }
    assert_eq!(app.count("slow").await, 401);
    // When it finally reads, it catches up (with the updates the socket held,
    // or a snapshot if it fell too far behind) and ends at the room as it is.
    let mut stalled = stalled;
    let mut last_count = 0;
    while last_count != 401 {
        let e = stalled.next().await;
        let count = e.data["room"]["participant_count"].as_u64().unwrap();
        assert!(count >= last_count, "counts never go back");
        last_count = count;
    }
    drop(stalled);
    let (status, _) = app.get("/v1/rooms/slow/stream").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the stream needs a token for the room"
    );
}
#[actix_web::test]
async fn a_client_that_never_reads_does_not_hold_the_room_up_on_every_backend() {
    common::on_every_backend(a_client_that_never_reads_does_not_hold_the_room_up).await;
}

// A stream's room feed goes with its last listener when the room has no
// actor: quiet and ended rooms never publish, so only the keep-alive can
// notice that a client went away.
#[actix_web::test]
async fn streams_of_rooms_without_an_actor_leave_no_feed_behind() {
    let db = common::TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.api.stream_keepalive_secs = 1;
    settings.rooms.retire_after_finish_secs = 0;
    let app = common::spawn_app_with(settings, "sqlite").await;
    app.ok(&webhook::joined("quiet", "RM_quiet", "PA_0", "host").body())
        .await;
    app.ok(&webhook::room_finished("quiet", "RM_quiet").body())
        .await;
    common::until("the finished room's actor retires", async || {
        app.supervisor.live_actors() == 0
    })
    .await;
    for _ in 0..20 {
        let mut events = Events::open(&app, "quiet", None).await;
        assert_eq!(events.next().await.kind, "snapshot");
    }
    // Within a keep-alive or two every closed stream is noticed.
    common::until("every closed stream's feed released", async || {
        app.supervisor.feeds().is_empty()
    })
    .await;
    app.stop().await;
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// Streams are capped (`api.max_streams`), past it a JSON 503; and a stream
// whose client went away gives its descriptor back within a keep-alive. A
// real process: its descriptors are its own, whatever else the tests run.
#[tokio::test]
async fn streams_are_capped_and_closed_ones_give_their_descriptors_back() {
    let db = common::TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[
            ("ROOMD__API__STREAM_KEEPALIVE_SECS", "1"),
            ("ROOMD__API__MAX_STREAMS", "2"),
        ],
    );
    let body = webhook::joined("capped", "RM_capped", "PA_0", "host").body();
    assert_eq!(roomd.send(&body).await, StatusCode::OK);
    let client = reqwest::Client::new();
    let open = async || {
        client
            .get(format!("{}/v1/rooms/capped/stream", roomd.base))
            .bearer_auth(join_token("capped", "viewer"))
            .send()
            .await
            .unwrap()
    };
    let baseline = open_fds(roomd.pid());
    let first = open().await;
    let second = open().await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = open().await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"], "busy", "{body}");
    drop((first, second));

    // Churn: open, read the snapshot, close; several times the cap.
    for _ in 0..12 {
        let mut events = loop {
            let response = open().await;
            if response.status() == StatusCode::OK {
                break Events {
                    response,
                    buffer: String::new(),
                };
            }
            // The cap holds until a keep-alive finds the closed ones.
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(events.next().await.kind, "snapshot");
    }
    drop(client);
    common::until(
        "the closed streams' descriptors are given back",
        async || open_fds(roomd.pid()) <= baseline,
    )
    .await;
    roomd.terminate();
}

// SIGTERM ends the live-update streams, so shutdown does not wait out its
// timeout (an hour here) for streams that never finish on their own.
#[tokio::test]
async fn sigterm_ends_the_streams_and_roomd_exits() {
    let db = common::TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[("ROOMD__SERVER__SHUTDOWN_TIMEOUT_SECS", "3600")],
    );
    let body = webhook::joined("open", "RM_open", "PA_0", "host").body();
    assert_eq!(roomd.send(&body).await, StatusCode::OK);
    let response = reqwest::Client::new()
        .get(format!("{}/v1/rooms/open/stream", roomd.base))
        .bearer_auth(join_token("open", "viewer"))
        .send()
        .await
        .unwrap();
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    assert_eq!(events.next().await.kind, "snapshot");
    // A guard against a hung test, not a speed requirement.
    let exited = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || roomd.terminate()),
    )
    .await
    .expect("roomd exits on SIGTERM with a stream open")
    .unwrap();
    assert!(exited.success(), "{exited:?}");
    let end = tokio::time::timeout(Duration::from_secs(20), events.response.chunk())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

// A room whose shard leaves this node ends its streams, so that clients
// reconnect through the room's new owner: a parked room's too (found by the
// adversary: those stayed open and silent while the room changed elsewhere).
#[actix_web::test]
async fn a_step_down_ends_the_streams_of_parked_rooms() {
    let db = common::TestDb::sqlite();
    let app = common::spawn_app(&db).await;
    app.ok(&webhook::joined("moved", "RM_moved", "PA_0", "host").body())
        .await;
    app.ok(&webhook::left("moved", "RM_moved", "PA_0", "host").body())
        .await;
    assert_eq!(app.supervisor.status().parked_actors, 1);
    let mut events = Events::open(&app, "moved", None).await;
    assert_eq!(events.next().await.kind, "snapshot");

    assert_eq!(app.supervisor.step_down(|name| name == "moved"), 1);
    assert_eq!(app.supervisor.status().live_actors, 0);
    loop {
        // A guard against a hung test, not a speed requirement.
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.response.chunk())
            .await
            .expect("the stream ends within 20 s")
            .unwrap();
        match chunk {
            None => break,
            Some(bytes) => assert!(
                bytes.starts_with(b":"),
                "only keep-alives before the end: {bytes:?}"
            ),
        }
    }
    app.stop().await;
}
