//! `roomd webhook send` builds and signs a webhook that a running roomd accepts.

use crate::common;

use std::process::{Command, Output};

/// Runs `roomd webhook send` against `base` with this secret, off the test's
/// runtime thread (the server it talks to runs there too).
async fn webhook_send(base: &str, secret: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomd"));
    command
        .args([
            "--config",
            "/nonexistent/roomd.toml",
            "webhook",
            "send",
            "--url",
            base,
        ])
        .args(args)
        .env_clear()
        .env("LIVEKIT_API_KEY", common::KEY)
        .env("LIVEKIT_API_SECRET", secret);
    actix_web::rt::task::spawn_blocking(move || command.output().expect("run roomd webhook send"))
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_cli_sends_a_webhook_roomd_accepts() {
    let db = common::TestDb::sqlite();
    let app = common::spawn_app(&db).await;
    let args = [
        "--event",
        "participant_joined",
        "--room",
        "demo",
        "--identity",
        "alice",
        "--kind",
        "agent",
    ];
    let out = webhook_send(&app.base, common::SECRET, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("200 OK"));
    let view = app.room("demo").await;
    assert_eq!(view["participant_count"], 1);
    assert_eq!(view["counts_by_kind"]["agent"], 1);

    let args = [
        "--event",
        "participant_left",
        "--room",
        "demo",
        "--identity",
        "alice",
    ];
    let out = webhook_send(&app.base, "not-the-secret", &args).await;
    assert!(!out.status.success(), "a wrongly signed webhook is refused");
    assert_eq!(app.count("demo").await, 1);
    app.stop().await;
}

#[actix_web::test]
async fn the_cli_mints_read_tokens_roomd_accepts() {
    let db = common::TestDb::sqlite();
    let app = common::spawn_app(&db).await;
    app.ok(&common::webhook::joined("demo", "RM_demo", "PA_1", "alice").body())
        .await;
    let token = |args: &'static [&'static str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_roomd"))
            .args(["--config", "/nonexistent/roomd.toml", "token"])
            .args(args)
            .env_clear()
            .env("LIVEKIT_API_KEY", common::KEY)
            .env("LIVEKIT_API_SECRET", common::SECRET)
            .output()
            .expect("run roomd token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let read = |path: &str, token: String| {
        let request = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(read("/v1/debug/actors", token(&["--admin"])).await, 200);
    let alice = token(&["--room", "demo", "--identity", "alice"]);
    assert_eq!(
        read("/v1/rooms/demo/participants", alice.clone()).await,
        200
    );
    assert_eq!(read("/v1/debug/actors", alice).await, 403);
    app.stop().await;
}

// The dev key on an address others can reach: roomd refuses to start, and
// says what to set.
#[test]
fn roomd_refuses_the_dev_key_on_a_public_bind() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .args(["serve", "--config", "/nonexistent/roomd.toml"])
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
        )
        .env("ROOMD__SERVER__BIND", "0.0.0.0:0")
        .output()
        .expect("run roomd");
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("LIVEKIT_API_SECRET") && said.contains("server.bind"),
        "{said}"
    );
}
