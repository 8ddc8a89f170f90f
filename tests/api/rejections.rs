//! Every way a webhook can be refused gets its status and a JSON error, and
//! changes nothing: no row, no count, no audit entry.

use crate::common;

use base64::Engine;
use common::{KEY, SECRET, TestApp, sign_with, webhook};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

fn body_hash(body: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A token with exactly these claims and algorithm.
fn token(alg: jsonwebtoken::Algorithm, secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(body: &str) -> Value {
    json!({ "iss": KEY, "sha256": body_hash(body), "nbf": now() - 10, "exp": now() + 300 })
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned_token(body: &str) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(body))
    )
}

async fn assert_refused(
    app: &TestApp,
    what: &str,
    body: String,
    auth: Option<String>,
    status: StatusCode,
) {
    let before = (app.table_counts().await, app.room("keep-me").await);
    let reply = app.webhook_raw(body, auth.as_deref()).await;
    assert_eq!(
        reply.status, status,
        "[{}] {what}: {}",
        app.backend, reply.json
    );
    assert!(reply.json["error"].is_string(), "{what}: JSON error body");
    assert!(
        reply.json["message"].is_string(),
        "{what}: JSON error message"
    );
    let after = (app.table_counts().await, app.room("keep-me").await);
    assert_eq!(before, after, "[{}] {what} changed state", app.backend);
}

async fn every_rejection_leaves_state_unchanged(app: &TestApp) {
    app.ok(&webhook::joined("keep-me", "RM_keep", "PA_k1", "kim")
        .id("EV_keep_1")
        .body())
        .await;
    let body = webhook::joined("keep-me", "RM_keep", "PA_k2", "lee")
        .id("EV_keep_2")
        .body();
    let unauthorized = StatusCode::UNAUTHORIZED;
    use jsonwebtoken::Algorithm::{HS256, HS384};

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("empty token", Some(String::new())),
        ("garbage token", Some("not.a.jwt".into())),
        (
            "wrong key",
            Some(sign_with("APIsomeoneElse", SECRET, &body)),
        ),
        (
            "wrong secret",
            Some(sign_with(KEY, "another-secret", &body)),
        ),
        ("token for another body", Some(sign_with(KEY, SECRET, "{}"))),
        (
            "no iss",
            Some(token(
                HS256,
                SECRET,
                json!({"sha256": body_hash(&body), "exp": now() + 300}),
            )),
        ),
        (
            "expired beyond the leeway",
            Some(token(
                HS256,
                SECRET,
                json!({"iss": KEY, "sha256": body_hash(&body), "exp": now() - 120}),
            )),
        ),
        (
            "not valid yet",
            Some(token(
                HS256,
                SECRET,
                json!({"iss": KEY, "sha256": body_hash(&body), "nbf": now() + 600, "exp": now() + 900}),
            )),
        ),
        (
            "no exp",
            Some(token(
                HS256,
                SECRET,
                json!({"iss": KEY, "sha256": body_hash(&body)}),
            )),
        ),
        (
            "no sha256 claim",
            Some(token(
                HS256,
                SECRET,
                json!({"iss": KEY, "exp": now() + 300}),
            )),
        ),
        ("hex sha256 claim", {
            let hex: String = sha2::Sha256::digest(body.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Some(token(
                HS256,
                SECRET,
                json!({"iss": KEY, "sha256": hex, "exp": now() + 300}),
            ))
        }),
        ("alg none", Some(unsigned_token(&body))),
        ("alg HS384", Some(token(HS384, SECRET, claims(&body)))),
    ];
    for (what, auth) in cases {
        assert_refused(app, what, body.clone(), auth, unauthorized).await;
    }

    let signed = |b: &str| Some(sign_with(KEY, SECRET, b));
    let oversize = format!(
        "{{\"event\":\"room_started\",\"pad\":\"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    assert_refused(
        app,
        "oversize",
        oversize.clone(),
        signed(&oversize),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let bad_request = StatusCode::BAD_REQUEST;
    let joined = || webhook::joined("keep-me", "RM_keep", "PA_k3", "max").id("EV_keep_3");
    let malformed: Vec<(&str, String)> = vec![
        ("not JSON", "{\"event\": \"participant_joined\",".into()),
        ("not an object", "[1, 2, 3]".into()),
        ("empty body", String::new()),
        ("no event", json!({"room": {"name": "keep-me"}}).to_string()),
        (
            "event is a number",
            joined().set("", "event", json!(5)).body(),
        ),
        (
            "room name is a number",
            joined().set("/room", "name", json!(42)).body(),
        ),
        (
            "participant is a string",
            joined().set("", "participant", json!("max")).body(),
        ),
        (
            "identity is an object",
            joined().set("/participant", "identity", json!({})).body(),
        ),
        (
            "createdAt is a word",
            joined().set("", "createdAt", json!("yesterday")).body(),
        ),
        (
            "kind is a list",
            joined()
                .set("/participant", "kind", json!(["AGENT"]))
                .body(),
        ),
        (
            "join without participant",
            webhook::event("participant_joined")
                .room("keep-me", "RM_keep")
                .body(),
        ),
        (
            "leave without room",
            webhook::event("participant_left")
                .participant("PA_k1", "kim")
                .body(),
        ),
    ];
    for (what, b) in malformed {
        assert_refused(app, what, b.clone(), signed(&b), bad_request).await;
    }

    // After all of that the room is as it was, and a good delivery still applies.
    assert_eq!(app.count("keep-me").await, 1);
    let bearer = format!("Bearer {}", sign_with(KEY, SECRET, &body));
    let reply = app.webhook_raw(body.clone(), Some(&bearer)).await;
    assert_eq!(reply.status, StatusCode::OK, "a Bearer prefix is accepted");
    assert_eq!(app.count("keep-me").await, 2);
}
#[actix_web::test]
async fn every_rejection_leaves_state_unchanged_on_every_backend() {
    common::on_every_backend(every_rejection_leaves_state_unchanged).await;
}

/// A verified body from a newer LiveKit (an enum name this build does not
/// know, `"id": null`) is applied from the fields roomd needs, not refused.
async fn newer_livekit_bodies_are_applied(app: &TestApp) {
    let body = webhook::joined("future", "RM_future", "PA_f1", "robot")
        .kind("HOLOGRAM")
        .set("/participant", "state", json!("TELEPORTING"))
        .set("", "id", Value::Null)
        .at(100)
        .body();
    app.ok(&body).await;
    let view = app.room("future").await;
    assert_eq!(view["participant_count"], 1);
    assert_eq!(view["counts_by_kind"]["hologram"], 1);

    let numeric_kind = webhook::joined("future", "RM_future", "PA_f2", "agent-1")
        .set("/participant", "kind", json!(4))
        .set("/participant", "disconnectReason", json!("SOMETHING_NEW"))
        .body();
    app.ok(&numeric_kind).await;
    assert_eq!(app.room("future").await["counts_by_kind"]["agent"], 1);
}
#[actix_web::test]
async fn newer_livekit_bodies_are_applied_on_every_backend() {
    common::on_every_backend(newer_livekit_bodies_are_applied).await;
}

async fn unknown_routes_get_a_json_404(app: &TestApp) {
    let (status, json) = app.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["error"], "not_found");
    let (status, json) = app.get("/v1/rooms/never-seen").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["error"], "not_found");
}
#[actix_web::test]
async fn unknown_routes_get_a_json_404_on_every_backend() {
    common::on_every_backend(unknown_routes_get_a_json_404).await;
}

/// From the adversary: a signed body naming a room sid that another room
/// holds failed its commit on the unique sid, answered 503, and LiveKit's
/// retries would fail the same way for ever. It is refused with 409, and
/// nothing changes: the other room, and the room the body named.
async fn a_room_sid_another_room_holds_is_refused(app: &TestApp) {
    app.ok(&webhook::joined("keep-me", "RM_keep", "PA_k", "kim").body())
        .await;
    for (what, body) in [
        (
            "room_started",
            webhook::room_started("thief", "RM_keep").body(),
        ),
        (
            "participant_joined",
            webhook::joined("thief", "RM_keep", "PA_t", "tom").body(),
        ),
    ] {
        let token = common::sign_with(KEY, SECRET, &body);
        assert_refused(app, what, body, Some(token), StatusCode::CONFLICT).await;
        let reply = app
            .webhook(&webhook::joined("thief", "RM_keep", "PA_t", "tom").body())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "[{}] {what}: again",
            app.backend
        );
        assert_eq!(reply.json["error"], "conflict");
        assert!(reply.retry_after.is_none());
    }
    let (status, _) = app.get("/v1/rooms/thief").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "[{}]", app.backend);
    // The name with a sid of its own is a room like any other.
    app.ok(&webhook::joined("thief", "RM_thief", "PA_t", "tom").body())
        .await;
    assert_eq!(app.count("thief").await, 1);
    assert_eq!(app.count("keep-me").await, 1);
}
#[actix_web::test]
async fn a_room_sid_another_room_holds_is_refused_on_every_backend() {
    common::on_every_backend(a_room_sid_another_room_holds_is_refused).await;
}

/// A NUL character cannot be stored by PostgreSQL: a webhook carrying one is
/// refused with 400 (a 503 would be retried by LiveKit for ever), a read of
/// such a name finds nothing, and no answer ever carries database text.
async fn nul_characters_are_refused_and_never_reach_the_database(app: &TestApp) {
    app.ok(&webhook::joined("keep-me", "RM_keep", "PA_k", "kim").body())
        .await;
    for (what, body) in [
        (
            "room name",
            webhook::joined("nul\u{0}room", "RM_n", "PA_n", "nia").body(),
        ),
        (
            "identity",
            webhook::joined("nulroom", "RM_n", "PA_n", "n\u{0}ia").body(),
        ),
        (
            "participant sid",
            webhook::joined("nulroom", "RM_n", "PA\u{0}n", "nia").body(),
        ),
        (
            "event id",
            webhook::joined("nulroom", "RM_n", "PA_n", "nia")
                .id("EV_\u{0}x")
                .body(),
        ),
    ] {
        let token = common::sign_with(KEY, SECRET, &body);
        assert_refused(app, what, body, Some(token), StatusCode::BAD_REQUEST).await;
    }
    for path in [
        "/v1/rooms/nul%00room",
        "/v1/rooms?names=nul%00room",
        "/v1/rooms/nul%00room/participants",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(common::admin_token())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::OK,
            "[{}] {path}: {status} {text}",
            app.backend
        );
        assert!(
            !text.contains("0x00") && !text.contains("UTF8"),
            "{path}: {text}"
        );
    }
}
#[actix_web::test]
async fn nul_characters_are_refused_and_never_reach_the_database_on_every_backend() {
    common::on_every_backend(nul_characters_are_refused_and_never_reach_the_database).await;
}

/// `n` bytes that compress badly, as a real long name would: PostgreSQL
/// compresses an index entry before it checks the entry's size.
fn incompressible(n: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize])
        })
        .collect()
}

/// A room name, room sid or event id over 2,048 bytes is refused with 400
/// on every backend: PostgreSQL cannot index a key much longer, so it failed
/// every commit (503, retried by LiveKit for ever, failing each batch it
/// rode in) while SQLite applied it. A key of exactly 2,048 bytes works on
/// both.
async fn keys_too_long_to_index_are_refused(app: &TestApp) {
    app.ok(&webhook::joined("keep-me", "RM_keep", "PA_k", "kim").body())
        .await;
    let long = incompressible(2049);
    for (what, body) in [
        (
            "room name",
            webhook::joined(&long, "RM_long", "PA_l", "lou").body(),
        ),
        (
            "room sid",
            webhook::joined("long-sid", &long, "PA_l", "lou").body(),
        ),
        (
            "event id",
            webhook::joined("long-id", "RM_long_id", "PA_l", "lou")
                .id(&long)
                .body(),
        ),
    ] {
        let token = common::sign_with(KEY, SECRET, &body);
        let reply = app.webhook_raw(body.clone(), Some(&token)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "[{}] {what}: {}",
            app.backend,
            reply.json
        );
        assert!(
            reply.json["message"]
                .as_str()
                .is_some_and(|m| m.contains("2049 bytes") && m.contains("2048")),
            "[{}] {what}: {}",
            app.backend,
            reply.json
        );
        assert_refused(app, what, body, Some(token), StatusCode::BAD_REQUEST).await;
    }
    let longest = incompressible(2048);
    app.ok(
        &webhook::joined(&longest, &incompressible(2048), "PA_m", "max")
            .id(&incompressible(2048))
            .body(),
    )
    .await;
    assert_eq!(app.count(&longest).await, 1, "[{}]", app.backend);
    assert_eq!(app.count("keep-me").await, 1, "[{}]", app.backend);
}
#[actix_web::test]
async fn keys_too_long_to_index_are_refused_on_every_backend() {
    common::on_every_backend(keys_too_long_to_index_are_refused).await;
}
