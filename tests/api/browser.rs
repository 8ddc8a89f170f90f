//! The admin page and the frontend example in a real browser: Debian's
//! headless Chromium driven over WebDriver (chromedriver), against a real
//! roomd process fed signed webhooks. Every wait is for a condition in the
//! DOM, with a deadline that only guards against a hung test.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::Roomd;
use common::{TestDb, webhook};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `None` where Chromium is not installed, except in CI (`.ci/run` installs
/// it), where a missing browser is a failure, not a skip.
fn driver() -> Option<Driver> {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{CHROMEDRIVER} must be installed in CI: the browser tests may not be skipped there"
        );
        eprintln!("skipped: no {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Some(Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    })
}

async fn browser(driver: &Driver) -> Client {
    // Two rustls providers are compiled in (through different crates); the
    // WebDriver connection is plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            // The network here is closed: Chromium's own background traffic
            // would only fail (and slow it down).
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{}", driver.port);
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a browser");
}

/// The text of the first element `css` finds, once `want` holds for it.
async fn until_text(client: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if want(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: still {last:?} after 20 s");
}

/// Clicks what `css` finds. The page redraws its tables as rooms change,
/// so a button found a moment ago may be gone: it is looked up again
/// (a clean-clone CI run clicked a redrawn row's stale button).
async fn click(client: &Client, css: &str) {
    let mut last = None;
    for _ in 0..200 {
        match client.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(err) => last = Some(err),
            },
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: no click after 20 s: {last:?}");
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_and_the_example_follow_a_room_live_in_a_browser() {
    let Some(driver) = driver() else { return };
    let db = TestDb::sqlite();
    let roomd = Roomd::start_with(
        &db.url,
        "127.0.0.1:0",
        &[("ROOMD__API__CORS_ORIGINS", "[\"*\"]")],
    );
    let send = async |body: String| assert_eq!(roomd.send(&body).await, StatusCode::OK);
    send(webhook::joined("standup", "RM_s", "PA_a", "alice").body()).await;
    send(webhook::joined("standup", "RM_s", "PA_b", "bob").body()).await;

    let client = browser(&driver).await;
    // `/` sends the browser to the page.
    client.goto(&format!("{}/", roomd.base)).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/ui"));
    let count = "tr[data-room='standup'] td.count";
    until_text(&client, count, |t| t == "2").await;
    send(webhook::joined("standup", "RM_s", "PA_c", "carol").body()).await;
    until_text(&client, count, |t| t == "3").await;

    // With an admin token: the actors, and the room's people and feed.
    let token = client.find(Locator::Id("token")).await.unwrap();
    token.send_keys(&common::admin_token()).await.unwrap();
    click(&client, "#token-form button[type=submit]").await;
    until_text(&client, "#actors tbody tr td", |t| t == "standup").await;
    click(&client, "tr[data-room='standup'] button").await;
    until_text(&client, "#participants", |t| {
        t.contains("alice") && t.contains("bob") && t.contains("carol")
    })
    .await;
    send(webhook::left("standup", "RM_s", "PA_b", "bob").body()).await;
    until_text(&client, "#feed li", |t| t.contains("participant_left bob")).await;
    until_text(&client, "#detail-count", |t| t.starts_with("2 in the room")).await;
    until_text(&client, "#participants", |t| !t.contains("bob")).await;
    until_text(&client, count, |t| t == "2").await;
    screenshot(&client, "admin-page.png").await;
    client.set_window_size(390, 844).await.unwrap();
    until_text(&client, count, |t| t == "2").await;
    screenshot(&client, "admin-page-phone.png").await;
    let token_in_url = client.current_url().await.unwrap();
    assert!(
        token_in_url.query().is_none(),
        "the admin token never goes in the URL bar"
    );
    // Forget: nothing read with the token stays on screen.
    click(&client, "#forget").await;
    let cleared = client
        .execute(
            "return document.getElementById('detail').hidden \
             && document.getElementById('participants').children.length === 0 \
             && document.getElementById('admin').hidden",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cleared, serde_json::Value::Bool(true), "after Forget");

    // The frontend example: one room's count from a join token.
    let example = format!(
        "file://{}/examples/live-count.html#roomd={}&room=standup&token={}",
        env!("CARGO_MANIFEST_DIR"),
        roomd.base,
        common::join_token("standup", "viewer")
    );
    client.goto(&example).await.unwrap();
    until_text(&client, "#count", |t| t == "2").await;
    send(webhook::joined("standup", "RM_s", "PA_d", "dave").body()).await;
    until_text(&client, "#count", |t| t == "3").await;
    screenshot(&client, "live-count.png").await;
    client.close().await.unwrap();
}
