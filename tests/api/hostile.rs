//! Hostile and careless clients: bodies that stall (with and without a
//! token), `?access_token=` for browsers (and never in the logs), lists that
//! cost a page, JSON for every error, token failures that say what failed.
//! Stream churn and the stream cap are in stream.rs, the dev-key refusal in
//! cli.rs, NUL and tokens without `iss` in rejections.rs.

use crate::common;

use std::time::Duration;

use common::process::Roomd;
use common::{TestApp, TestDb, admin_token, join_token, webhook};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const MIB: usize = 1024 * 1024;

/// A webhook whose headers arrive, then all but the last byte of a body of
/// `MIB - 1` bytes, then nothing: the slow-body probe, one connection.
struct Stalled {
    reader: OwnedReadHalf,
    writer: tokio::task::JoinHandle<()>,
}

impl Stalled {
    async fn open(base: &str, authorization: Option<&str>) -> Self {
        let addr = base.trim_start_matches("http://");
        let (reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut head = format!(
            "POST /v1/webhooks/livekit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/webhook+json\r\nContent-Length: {}\r\n",
            MIB - 1
        );
        if let Some(token) = authorization {
            head.push_str(&format!("Authorization: {token}\r\n"));
        }
        head.push_str("\r\n");
        // Beside the read: roomd may answer without reading, and then this
        // write waits or fails while the answer is already there.
        let writer = tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&vec![b'x'; MIB - 2]).await;
            std::future::pending::<()>().await;
            drop(writer);
        });
        Self { reader, writer }
    }

    /// The answer's status and JSON body.
    async fn answer(&mut self) -> (u16, Value) {
        let mut raw = Vec::new();
        // A guard against a hung test, not a speed requirement.
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            loop {
                match self.reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&raw);
                if let Some((head, body)) = text.split_once("\r\n\r\n")
                    && let Some(len) = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    && body.len() >= len.trim().parse::<usize>().unwrap()
                {
                    break;
                }
            }
        });
        read.await.expect("an answer within 30 s");
        self.writer.abort();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head[9..12].parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// How many of `stalled` got each status (408 or 503, each with its JSON).
async fn answers(stalled: &mut [Stalled]) -> std::collections::BTreeMap<u16, usize> {
    let mut answers = std::collections::BTreeMap::new();
    for connection in stalled {
        let (status, body) = connection.answer().await;
        let expected = match status {
            408 => "request_timeout",
            503 => "busy",
            _ => panic!("{status} {body}"),
        };
        assert_eq!(body["error"], expected, "{body}");
        *answers.entry(status).or_insert(0) += 1;
    }
    answers
}

fn rss_mib(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

// Without a token that verifies, nothing of the body is read: 300 stalled
// megabyte bodies cost roomd no megabytes, and each is refused at once (the
// body deadline is long here, so only a refusal before reading answers).
#[tokio::test]
async fn bodies_without_a_valid_token_are_refused_before_they_are_read() {
    let db = TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[("ROOMD__SERVER__BODY_TIMEOUT_SECS", "10")],
    );
    let baseline = rss_mib(roomd.pid());
    let forged = common::sign_with(common::KEY, "not-the-secret", "{}");
    let mut stalled = Vec::new();
    for i in 0..300 {
        let token = (i % 2 == 1).then_some(forged.as_str());
        stalled.push(Stalled::open(&roomd.base, token).await);
    }
    for connection in &mut stalled {
        let (status, body) = connection.answer().await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    let grown = rss_mib(roomd.pid()).saturating_sub(baseline);
    assert!(
        grown < 64,
        "300 stalled unsigned megabyte bodies grew roomd by {grown} MiB"
    );
    drop(stalled);
    roomd.terminate();
}

// A signed sender's bodies are bounded too: each must arrive within
// `server.body_timeout_secs` (408 past it), and at most
// `server.max_body_reads` are read at once (503 + Retry-After past it).
#[tokio::test]
async fn signed_bodies_are_bounded_in_time_and_in_number() {
    let db = TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[
            ("ROOMD__SERVER__BODY_TIMEOUT_SECS", "5"),
            ("ROOMD__SERVER__MAX_BODY_READS", "4"),
        ],
    );
    // Eight at once, each with its own token: whichever four come first
    // hold the slots until their deadline, so the other four are refused,
    // in whatever order they came.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let token = common::sign_with(common::KEY, common::SECRET, &format!("body {i}"));
        stalled.push(Stalled::open(&roomd.base, Some(&token)).await);
    }
    assert_eq!(
        answers(&mut stalled).await,
        [(408, 4), (503, 4)].into(),
        "408 past the deadline, 503 past the cap"
    );
    // A captured token replayed: it signs one body, so it holds one slot.
    let token = common::sign_with(common::KEY, common::SECRET, "the one body");
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(Stalled::open(&roomd.base, Some(&token)).await);
    }
    assert_eq!(answers(&mut replayed).await, [(408, 1), (503, 2)].into());
    // The slots are free again: a whole webhook is committed.
    let body = webhook::joined("after-the-stall", "RM_stall", "PA_1", "alice").body();
    assert_eq!(roomd.send(&body).await, StatusCode::OK);
    roomd.terminate();
}

async fn read_with(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.get(path).await
}

// A browser's EventSource cannot set headers: `?access_token=` reads like
// `Authorization: Bearer`, by the same rules; and it never reaches a log.
#[tokio::test]
async fn access_token_in_the_query_reads_like_the_header() {
    let db = TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[("ROOMD__API__PUBLIC_COUNTS", "false")],
    );
    let client = reqwest::Client::new();
    let body = webhook::joined("lobby", "RM_lobby", "PA_1", "alice").body();
    assert_eq!(roomd.send(&body).await, StatusCode::OK);
    let get = async |path: &str| {
        let response = client
            .get(format!("{}{path}", roomd.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let ctype = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, ctype, response)
    };
    let own = join_token("lobby", "viewer");
    let other = join_token("elsewhere", "viewer");
    let admin = admin_token();

    let (status, _, response) = get(&format!("/v1/rooms/lobby?access_token={own}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["participant_count"],
        1
    );
    let (status, _, _) = get(&format!("/v1/rooms/lobby/participants?access_token={own}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ctype, mut stream) =
        get(&format!("/v1/rooms/lobby/stream?access_token={own}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
        .await
        .expect("the snapshot within 20 s")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: snapshot"));
    drop(stream);

    let (status, _, response) = get(&format!("/v1/rooms/lobby?access_token={other}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "forbidden"
    );
    let (status, _, response) = get("/v1/rooms/lobby/stream?access_token=garbage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let error = response.json::<Value>().await.unwrap();
    assert_eq!(error["error"], "unauthorized", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not a well-formed JWT"),
        "{error}"
    );
    let (status, _, _) = get("/v1/rooms/lobby?access_token=").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&format!("/v1/debug/actors?access_token={admin}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&format!("/v1/rooms?access_token={own}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The header, when there is one, is the token.
    let response = client
        .get(format!("{}/v1/rooms/lobby?access_token={own}", roomd.base))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let logs = roomd.logs();
    assert!(
        logs.iter().any(|l| l.contains("request rejected")),
        "the refusals are logged"
    );
    for token in [&own, &other, &admin] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.iter().any(|l| l.contains(signature)),
            "a token reached the log"
        );
    }
    assert!(
        !logs.iter().any(|l| l.contains("access_token")),
        "a query string reached the log"
    );
    roomd.terminate();
}

// Lists are pages from an ordered index: `/v1/rooms` pages the active rooms
// only, `/v1/debug/actors` every actor, both in name order; `?names=` is
// capped, and finds rooms with or without an actor.
#[actix_web::test]
async fn lists_page_in_name_order_and_names_are_capped() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.rooms.retire_after_finish_secs = 3600;
    let app = common::spawn_app_with(settings, db.backend).await;
    for i in 0..23 {
        let room = format!("room-{i:02}");
        app.ok(&webhook::joined(&room, &format!("RM_{i}"), "PA_1", "alice").body())
            .await;
    }
    for i in [3, 11, 17] {
        app.ok(&webhook::room_finished(&format!("room-{i:02}"), &format!("RM_{i}")).body())
            .await;
    }
    let admin = admin_token();
    let page_through = async |path: &str, key: &str, field: &str| {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}{path}?limit=4", app.base);
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page: Value = app
                .client
                .get(url)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = page[key].as_array().unwrap();
            assert!(items.len() <= 4, "{page}");
            names.extend(items.iter().map(|r| r[field].as_str().unwrap().to_owned()));
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        names
    };
    let live: Vec<String> = (0..23)
        .filter(|i| ![3, 11, 17].contains(i))
        .map(|i| format!("room-{i:02}"))
        .collect();
    assert_eq!(page_through("/v1/rooms", "rooms", "name").await, live);
    let every: Vec<String> = (0..23).map(|i| format!("room-{i:02}")).collect();
    assert_eq!(
        page_through("/v1/debug/actors", "actors", "room").await,
        every
    );

    let (status, page) = read_with(&app, "/v1/rooms?limit=2&after=room-20").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["rooms"].as_array().unwrap().len(), 2, "{page}");
    assert!(page.get("next").is_none(), "{page}");

    // A room that lives on in the database only: its latest instance.
    app.ok(&webhook::room_started("reused", "RM_first").body())
        .await;
    app.ok(&webhook::room_finished("reused", "RM_first").body())
        .await;
    app.ok(&webhook::room_started("reused", "RM_second").body())
        .await;
    app.ok(&webhook::room_finished("reused", "RM_second").body())
        .await;
    let (status, found) = read_with(
        &app,
        "/v1/rooms?names=room-03,reused,room-05,nowhere,room-05",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rooms = found["rooms"].as_array().unwrap();
    let by_name = |name: &str| rooms.iter().find(|r| r["name"] == name).cloned();
    assert_eq!(rooms.len(), 3, "{found}");
    assert_eq!(by_name("room-03").unwrap()["status"], "ended");
    assert_eq!(by_name("reused").unwrap()["sid"], "RM_second");
    assert_eq!(by_name("room-05").unwrap()["participant_count"], 1);
    assert_eq!(found["unknown"], serde_json::json!(["nowhere"]));

    let too_many: Vec<String> = (0..101).map(|i| format!("n{i}")).collect();
    let (status, error) = read_with(&app, &format!("/v1/rooms?names={}", too_many.join(","))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "bad_request", "{error}");
    app.stop().await;
}

// Every error is JSON: a query that does not parse, and what CORS refuses.
#[actix_web::test]
async fn query_and_cors_errors_are_json() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.api.cors_origins = vec!["https://app.example.com".into()];
    let app = common::spawn_app_with(settings, db.backend).await;

    let response = app
        .client
        .get(format!("{}/v1/rooms?limit=many", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().contains_key("x-request-id"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "bad_request", "{error}");

    // A simple request from another origin is served without CORS headers
    // (the browser withholds it); preflights are what CORS refuses.
    let refused = [
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/rooms", app.base))
            .header("Origin", "https://evil.example.com")
            .header("Access-Control-Request-Method", "GET"),
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/rooms", app.base))
            .header("Origin", "https://app.example.com")
            .header("Access-Control-Request-Method", "DELETE"),
    ];
    for request in refused {
        let response = request.send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "bad_request", "{error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
    }
    app.stop().await;
}

// Each way a token fails says what failed (LiveKit's verifier says "failed
// to encode jwt" for all of them).
#[actix_web::test]
async fn token_failures_say_what_failed() {
    let db = TestDb::sqlite();
    let app = common::spawn_app(&db).await;
    let body = webhook::joined("said", "RM_said", "PA_1", "alice").body();
    let now = chrono::Utc::now().timestamp();
    let hash = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()))
    };
    let signed = |secret: &str, claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        (
            signed(
                common::SECRET,
                serde_json::json!({"iss": common::KEY, "sha256": hash, "exp": now - 600}),
            ),
            "expired",
        ),
        (
            signed(
                "another-secret",
                serde_json::json!({"iss": common::KEY, "sha256": hash, "exp": now + 600}),
            ),
            "signature",
        ),
        (
            signed(
                common::SECRET,
                serde_json::json!({"iss": common::KEY, "sha256": hash, "nbf": now + 600, "exp": now + 900}),
            ),
            "not valid yet",
        ),
        ("not.a.jwt".to_owned(), "not a well-formed JWT"),
    ];
    for (token, says) in cases {
        let reply = app.webhook_raw(body.clone(), Some(&token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let message = reply.json["message"].as_str().unwrap();
        assert!(message.contains(says), "{says:?} not in {message:?}");
        assert!(!message.contains("failed to encode jwt"), "{message}");
    }
    app.stop().await;
}

/// A chunked webhook whose first chunk arrives and then nothing: the
/// status roomd answered, once it has closed the connection (a guard of
/// 30 s against a server that never does).
async fn chunked_then_silence(base: &str, authorization: Option<&str>) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /v1/webhooks/livekit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/webhook+json\r\nTransfer-Encoding: chunked\r\n"
    );
    if let Some(token) = authorization {
        head.push_str(&format!("Authorization: {token}\r\n"));
    }
    head.push_str("\r\n10\r\n{\"event\":\"room_s\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("roomd closes the connection of a refused body")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    text[9..12].parse().unwrap()
}

// A refused chunked body is not drained for ever: roomd answers and closes
// the connection, so a client that trickles (or never ends) such bodies
// holds no descriptor past the answer, with a token or without.
#[actix_web::test]
async fn refused_chunked_bodies_do_not_hold_their_connections() {
    let db = TestDb::sqlite();
    let mut settings = common::settings_for(&db);
    settings.server.body_timeout_secs = 1;
    let app = common::spawn_app_with(settings, db.backend).await;
    assert_eq!(chunked_then_silence(&app.base, None).await, 401);
    let token = common::sign_with(common::KEY, common::SECRET, "never sent");
    assert_eq!(chunked_then_silence(&app.base, Some(&token)).await, 408);
    app.stop().await;
}
