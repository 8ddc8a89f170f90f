//! `roomd webhook send` builds and signs a webhook that a running roomd accepts.

mod common;

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
