//! The read side: counts, participant lists, live-room lists and admin debug
//! views, with LiveKit's own tokens as the credentials.

use crate::common;

use common::{KEY, SECRET, TestApp, admin_token, join_token, webhook};
use livekit_api::access_token::{AccessToken, VideoGrants};
use reqwest::StatusCode;
use serde_json::Value;

fn expired_token() -> String {
    signed(serde_json::json!({
        "iss": KEY, "exp": chrono::Utc::now().timestamp() - 600, "video": {"roomList": true}
    }))
}

fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn seed(app: &TestApp) {
    app.ok(&webhook::joined("lobby-a", "RM_la", "PA_a1", "ana").body())
        .await;
    app.ok(&webhook::joined("lobby-a", "RM_la", "PA_a2", "agent-x")
        .kind("AGENT")
        .body())
        .await;
    app.ok(&webhook::joined("lobby-b", "RM_lb", "PA_b1", "ben").body())
        .await;
    app.ok(&webhook::joined("lobby-c", "RM_lc", "PA_c1", "cy").body())
        .await;
    app.ok(&webhook::room_finished("lobby-c", "RM_lc").body())
        .await;
}

async fn every_read_route_answers(app: &TestApp) {
    seed(app).await;
    let admin = admin_token();

    let (status, list) = app.get("/v1/rooms").await;
    assert_eq!(status, StatusCode::OK, "counts are public by default");
    let names: Vec<&str> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lobby-a", "lobby-b"], "live rooms only, by name");

    let (_, page) = app.get("/v1/rooms?limit=1").await;
    assert_eq!(page["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], "lobby-a");
    let (_, page2) = app.get("/v1/rooms?limit=1&after=lobby-a").await;
    assert_eq!(page2["rooms"][0]["name"], "lobby-b");
    assert!(page2["next"].is_null());
    let (status, _) = app.get("/v1/rooms?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, some) = app
        .get_as("/v1/rooms?names=lobby-b,nowhere,lobby-c", None)
        .await;
    assert_eq!(common::counts(&some), [("lobby-b", 1), ("lobby-c", 0)]);
    assert_eq!(some["unknown"], serde_json::json!(["nowhere"]));

    let (status, people) = app
        .get_as("/v1/rooms/lobby-a/participants", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(people["participant_count"], 2);
    let kinds: Vec<&str> = people["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"agent") && kinds.contains(&"standard"));

    let (status, debug) = app.get_as("/v1/debug/actors", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(debug["supervisor"]["recovered"], true);
    assert!(
        debug["actors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["room"] == "lobby-a")
    );
    let (status, one) = app.get_as("/v1/debug/actors/lobby-a", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["snapshot"]["counters"]["applied"], 2);
    assert_eq!(one["snapshot"]["last_event"]["event"], "participant_joined");
    assert_eq!(
        one["mailbox_depth"], 0,
        "nothing waits once the replies are in"
    );
    let recent = one["snapshot"]["recent_events"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent.iter().all(|e| e["outcome"] == "applied"));
    let (status, _) = app.get_as("/v1/debug/actors/nowhere", Some(&admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
#[actix_web::test]
async fn every_read_route_answers_on_every_backend() {
    common::on_every_backend(every_read_route_answers).await;
}

async fn livekit_tokens_decide_who_reads_what(app: &TestApp) {
    seed(app).await;
    let participants = "/v1/rooms/lobby-a/participants";
    let wrong_key = AccessToken::with_api_key("APIother", SECRET)
        .with_grants(VideoGrants {
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let cases: Vec<(&str, &str, Option<String>, StatusCode)> = vec![
        ("no token", participants, None, StatusCode::UNAUTHORIZED),
        (
            "wrong key",
            participants,
            Some(wrong_key),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            participants,
            Some(expired_token()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage",
            participants,
            Some("x.y.z".into()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "join token for another room",
            participants,
            Some(join_token("lobby-b", "ben")),
            StatusCode::FORBIDDEN,
        ),
        (
            "join token for its room",
            participants,
            Some(join_token("lobby-a", "ana")),
            StatusCode::OK,
        ),
        (
            "admin token",
            participants,
            Some(admin_token()),
            StatusCode::OK,
        ),
        (
            "debug without token",
            "/v1/debug/actors",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "debug with a join token",
            "/v1/debug/actors",
            Some(join_token("lobby-a", "ana")),
            StatusCode::FORBIDDEN,
        ),
        (
            "debug with an admin token",
            "/v1/debug/actors",
            Some(admin_token()),
            StatusCode::OK,
        ),
        (
            "an admin grant without iss",
            participants,
            Some(signed(serde_json::json!({
                "exp": chrono::Utc::now().timestamp() + 600, "video": {"roomList": true}
            }))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a verified token that grants nothing",
            participants,
            Some(
                AccessToken::with_api_key(KEY, SECRET)
                    .with_identity("nobody")
                    .to_jwt()
                    .unwrap(),
            ),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, path, token, expected) in cases {
        let (status, body) = app.get_as(path, token.as_deref()).await;
        assert_eq!(status, expected, "[{}] {what}: {body}", app.backend);
        if !status.is_success() {
            assert!(body["error"].is_string(), "{what}: JSON error");
        }
    }
    // One parser for `Bearer`, in any case, as for webhooks.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = app
            .client
            .get(format!("{}{participants}", app.base))
            .header("Authorization", format!("{scheme} {}", admin_token()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}
#[actix_web::test]
async fn livekit_tokens_decide_who_reads_what_on_every_backend() {
    common::on_every_backend(livekit_tokens_decide_who_reads_what).await;
}

#[actix_web::test]
async fn counts_can_be_made_private() {
    let db = common::TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.api.public_counts = false;
    let app = common::spawn_app_with(settings, db.backend).await;
    seed(&app).await;
    assert_eq!(
        app.get("/v1/rooms/lobby-a").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/v1/rooms").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get_as("/v1/rooms/lobby-a", Some(&join_token("lobby-b", "ben")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, view) = app
        .get_as("/v1/rooms/lobby-a", Some(&join_token("lobby-a", "ana")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["participant_count"], 2);
    assert_eq!(
        app.get_as("/v1/rooms", Some(&admin_token())).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

/// The value of one sample in Prometheus text, 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn metrics_reflect_a_known_sequence_of_events(app: &TestApp) {
    let join = webhook::joined("metered", "RM_m", "PA_m1", "mia")
        .id("EV_metered_1")
        .body();
    app.ok(&join).await;
    app.ok(&join).await;
    app.ok(&webhook::left("metered", "RM_m", "PA_m1", "mia")
        .id("EV_metered_2")
        .body())
        .await;
    app.ok(&webhook::left("metered", "RM_m", "PA_m1", "mia")
        .id("EV_metered_3")
        .body())
        .await;
    app.ok(&webhook::event("track_published")
        .room("metered", "RM_m")
        .participant("PA_m1", "mia")
        .body())
        .await;
    let refused = app.webhook_raw(join.clone(), None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // A signed sender cannot mint label values with made-up event names.
    app.ok(&webhook::event("made_up_event_1234")
        .room("metered", "RM_m")
        .body())
        .await;

    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |labels: &str| sample(&text, &format!("roomd_webhooks_total{{{labels}}}"));
    assert_eq!(
        count(r#"event="participant_joined",outcome="applied""#),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(r#"event="participant_joined",outcome="duplicate""#),
        1.0
    );
    assert_eq!(count(r#"event="participant_left",outcome="applied""#), 1.0);
    assert_eq!(count(r#"event="participant_left",outcome="ignored""#), 1.0);
    assert_eq!(count(r#"event="track_published",outcome="ignored""#), 1.0);
    assert_eq!(count(r#"event="unknown",outcome="unauthorized""#), 1.0);
    assert_eq!(count(r#"event="other",outcome="ignored""#), 1.0, "{text}");
    assert!(!text.contains("made_up_event"), "{text}");
    assert_eq!(sample(&text, "roomd_webhook_duration_seconds_count"), 7.0);
    assert!(
        sample(&text, "roomd_commit_batch_size_count") >= 5.0,
        "every committed delivery is in a batch"
    );
    assert_eq!(sample(&text, "roomd_live_actors"), 1.0);
    assert_eq!(
        sample(&text, "roomd_parked_actors"),
        1.0,
        "mia left: the room is empty"
    );
    assert_eq!(sample(&text, "roomd_actor_restarts_total"), 0.0);
    assert_eq!(sample(&text, "roomd_mailbox_depth"), 0.0);
}
#[actix_web::test]
async fn metrics_reflect_a_known_sequence_of_events_on_every_backend() {
    common::on_every_backend(metrics_reflect_a_known_sequence_of_events).await;
}

#[actix_web::test]
async fn cors_lets_the_configured_frontend_read() {
    let db = common::TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.api.cors_origins = vec!["https://app.example.com".into()];
    let app = common::spawn_app_with(settings, db.backend).await;
    seed(&app).await;
    let response = app
        .client
        .get(format!("{}/v1/rooms/lobby-a", app.base))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let preflight = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/rooms/lobby-a/participants", app.base),
        )
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let other = app
        .client
        .get(format!("{}/v1/rooms/lobby-a", app.base))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // LiveKit's server-to-server webhooks carry no Origin and are unaffected.
    app.ok(&webhook::joined("lobby-a", "RM_la", "PA_a3", "amy").body())
        .await;
    app.stop().await;
}

async fn every_response_carries_a_request_id(app: &TestApp) {
    let response = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 32, "a fresh id when the caller sent none");
    let response = app
        .client
        .get(format!("{}/v1/rooms/none", app.base))
        .header("X-Request-Id", "proxy-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["x-request-id"],
        "proxy-42",
        "the proxy's id is kept, errors too"
    );
}
#[actix_web::test]
async fn every_response_carries_a_request_id_on_every_backend() {
    common::on_every_backend(every_response_carries_a_request_id).await;
}
