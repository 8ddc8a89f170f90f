//! The original system's three hand-run scenarios, end to end over HTTP,
//! checking the database columns the seed's own checks read.

use crate::common;

use common::{TestApp, webhook};
use serde_json::json;

const USER: &str = "550e8400-e29b-41d4-a716-446655440000";

/// Test 1: a user closes the browser without pressing Leave; LiveKit notices
/// and sends participant_left; that participant's `left_at` is set.
async fn closing_the_browser_sets_left_at(app: &TestApp) {
    app.ok(&webhook::room_started("meeting-1", "RM_meeting1")
        .id("EV_s1_1")
        .at(1000)
        .body())
        .await;
    app.ok(
        &webhook::joined("meeting-1", "RM_meeting1", "PA_user1", USER)
            .id("EV_s1_2")
            .at(1001)
            .body(),
    )
    .await;
    assert_eq!(app.count("meeting-1").await, 1);

    let left = webhook::left("meeting-1", "RM_meeting1", "PA_user1", USER)
        .set(
            "/participant",
            "disconnectReason",
            json!("CLIENT_INITIATED"),
        )
        .id("EV_s1_3")
        .at(1060);
    app.ok(&left.body()).await;

    let room = app
        .active_room_row("meeting-1")
        .await
        .expect("room is active");
    let rows = app.participant_rows(room.id).await;
    let user_id = uuid::Uuid::parse_str(USER).unwrap();
    let row = rows
        .iter()
        .find(|p| p.user_id == Some(user_id))
        .expect("a row for the user");
    assert!(row.left_at.is_some(), "left_at must be set");
    assert_eq!(row.status, "left");
    assert_eq!(row.leave_reason.as_deref(), Some("client_initiated"));
    assert_eq!(room.current_participants, 0);
    assert_eq!(app.count("meeting-1").await, 0);
}
#[actix_web::test]
async fn closing_the_browser_sets_left_at_on_every_backend() {
    common::on_every_backend(closing_the_browser_sets_left_at).await;
}

/// Test 2: everyone closes the browser at once: several participant_left,
/// then room_finished; the room ends with status 'ended', ended_at set and
/// current_participants = 0.
async fn everyone_leaving_ends_the_room(app: &TestApp) {
    let users: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    app.ok(&webhook::room_started("meeting-2", "RM_meeting2")
        .id("EV_s2_start")
        .at(2000)
        .body())
        .await;
    for (i, user) in users.iter().enumerate() {
        let sid = format!("PA_m2_{i}");
        app.ok(&webhook::joined("meeting-2", "RM_meeting2", &sid, user)
            .id(&format!("EV_s2_j{i}"))
            .at(2001)
            .body())
            .await;
    }
    assert_eq!(app.count("meeting-2").await, 3);
    for (i, user) in users.iter().enumerate() {
        let sid = format!("PA_m2_{i}");
        app.ok(&webhook::left("meeting-2", "RM_meeting2", &sid, user)
            .id(&format!("EV_s2_l{i}"))
            .at(2100)
            .body())
            .await;
    }
    app.ok(&webhook::room_finished("meeting-2", "RM_meeting2")
        .id("EV_s2_end")
        .at(2120)
        .body())
        .await;

    let rows = app.room_rows("meeting-2").await;
    assert_eq!(rows.len(), 1);
    let room = &rows[0];
    assert_eq!(room.status, "ended");
    assert!(room.ended_at.is_some());
    assert_eq!(room.current_participants, 0);
    assert!(
        app.participant_rows(room.id)
            .await
            .iter()
            .all(|p| p.left_at.is_some())
    );

    let view = app.room("meeting-2").await;
    assert_eq!(view["status"], "ended");
    assert_eq!(view["participant_count"], 0);
    assert!(view["ended_at"].is_string());
}
#[actix_web::test]
async fn everyone_leaving_ends_the_room_on_every_backend() {
    common::on_every_backend(everyone_leaving_ends_the_room).await;
}

/// Test 3: the seed's curl body exactly (no id, no sids, a numeric
/// createdAt), signed, gets the seed's reply.
async fn the_seed_curl_body_is_accepted(app: &TestApp) {
    let body = r#"{
    "event": "participant_left",
    "room": {
      "name": "test-room-abc123"
    },
    "participant": {
      "identity": "550e8400-e29b-41d4-a716-446655440000"
    },
    "createdAt": 1700000000
  }"#;
    let reply = app.ok(body).await;
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["event"], "participant_left");

    // Without sids the leave is keyed by identity; the room is known now.
    let view = app.room("test-room-abc123").await;
    assert_eq!(view["participant_count"], 0);

    // A sid-less join from before the leave stays out; one after it counts.
    let early = webhook::joined("test-room-abc123", "", "", USER).at(1_699_999_990);
    app.ok(&early.body()).await;
    assert_eq!(app.count("test-room-abc123").await, 0);
    let later = webhook::joined("test-room-abc123", "", "", USER).at(1_700_000_100);
    app.ok(&later.body()).await;
    assert_eq!(app.count("test-room-abc123").await, 1);
}
#[actix_web::test]
async fn the_seed_curl_body_is_accepted_on_every_backend() {
    common::on_every_backend(the_seed_curl_body_is_accepted).await;
}
