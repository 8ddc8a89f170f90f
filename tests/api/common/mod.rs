//! Test helpers: a fresh database per test (SQLite always, PostgreSQL when
//! `ROOMD_TEST_POSTGRES_URL` is set), the real roomd app on a random port,
//! and LiveKit-format webhook bodies signed the way LiveKit signs them.

pub mod fake_livekit;
pub mod process;
pub mod proxy;
pub mod webhook;

use std::time::Duration;

use actix_web::dev::ServerHandle;
use reqwest::StatusCode;
use roomd::app::Application;
use roomd::config::Settings;
use roomd::store::entity::{participants, rooms, webhook_events};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter,
};
use serde_json::Value;

pub const KEY: &str = "APIroomdTests";
pub const SECRET: &str = "roomd-test-secret-0123456789abcdef";

/// Set in CI: the PostgreSQL server tests create their databases on.
const POSTGRES_VAR: &str = "ROOMD_TEST_POSTGRES_URL";

pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("roomd.db").display()
        );
        Self {
            url,
            backend: "sqlite",
            admin: None,
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database, or `None` when no server is configured.
    /// In CI a missing URL is a failure, not a skip.
    pub async fn postgres() -> Option<Self> {
        let admin_url = match std::env::var(POSTGRES_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").is_err(),
                    "{POSTGRES_VAR} must be set in CI: the PostgreSQL tests may not be skipped there"
                );
                return None;
            }
        };
        let name = format!("roomd_t_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("postgres url");
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            backend: "postgres",
            admin: Some((admin_url, name)),
            _dir: None,
        })
    }

    /// Every backend this run tests: SQLite, plus PostgreSQL when configured.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        dbs.extend(Self::postgres().await);
        dbs
    }

    pub async fn drop_database(self) {
        if let Some((admin_url, name)) = &self.admin
            && let Ok(admin) = Database::connect(admin_url).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            admin.close().await.ok();
        }
    }
}

pub fn settings_for(db: &TestDb) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.server.shutdown_timeout_secs = 5;
    settings.database.url = db.url.clone();
    settings.livekit.api_key = KEY.into();
    settings.livekit.api_secret = SECRET.into();
    settings
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: DatabaseConnection,
    pub backend: &'static str,
    pub key: String,
    pub secret: String,
    handle: ServerHandle,
    pub supervisor: roomd::room::Supervisor,
    room_service: Option<std::sync::Arc<roomd::livekit::RoomService>>,
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(settings_for(db), db.backend).await
}

pub async fn spawn_app_with(settings: Settings, backend: &'static str) -> TestApp {
    spawn(settings, backend, true).await
}

/// The app reconciling with `livekit`, once its round at start-up is over
/// (that round would race a test's webhooks). The periodic round is left
/// to its default (60 s): tests reconcile on demand.
pub async fn spawn_with_livekit(db: &TestDb, livekit: &fake_livekit::FakeLiveKit) -> TestApp {
    let mut settings = settings_for(db);
    settings.livekit.url = livekit.url.clone();
    let app = spawn_app_with(settings, db.backend).await;
    until("the reconciliation at start-up", async || {
        app.supervisor.status().last_reconcile.is_some()
    })
    .await;
    app
}

/// Waits (bounded: a guard against a hung test, not a speed requirement)
/// until `check` holds.
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// The app listening but not yet recovered: `app.supervisor.recover()` finishes start-up.
pub async fn spawn_unrecovered(settings: Settings, backend: &'static str) -> TestApp {
    spawn(settings, backend, false).await
}

async fn spawn(settings: Settings, backend: &'static str, recover: bool) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        roomd::telemetry::init(&settings.log);
    }
    let key = settings.livekit.api_key.clone();
    let secret = settings.livekit.api_secret.clone();
    let db = roomd::store::connect(&settings.database, settings.writer.transaction_timeout_ms)
        .await
        .expect("test db connect");
    let app = Application::build(settings).await.expect("app builds");
    if recover {
        app.recover().await.expect("recovery");
    }
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let supervisor = app.supervisor().clone();
    let room_service = app.room_service();
    actix_web::rt::spawn(app.run());
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        db,
        backend,
        key,
        secret,
        handle,
        supervisor,
        room_service,
    }
}

/// A webhook token as LiveKit mints it: HS256, `iss` = key, `sha256` = base64(SHA-256(body)).
pub fn sign_with(key: &str, secret: &str, body: &str) -> String {
    roomd::livekit::sign_webhook(key, secret, body.as_bytes(), Duration::from_secs(300))
        .expect("sign")
}

/// A read token with the admin grant (`roomList`), as `lk token create --list` makes.
/// Each room of a `{"rooms": [...]}` answer as (name, participant count).
pub fn counts(answer: &Value) -> Vec<(&str, u64)> {
    answer["rooms"]
        .as_array()
        .expect("a list of rooms")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["participant_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn admin_token() -> String {
    livekit_api::access_token::AccessToken::with_api_key(KEY, SECRET)
        .with_grants(livekit_api::access_token::VideoGrants {
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

/// A participant's join token for `room`: what a frontend joined with.
pub fn join_token(room: &str, identity: &str) -> String {
    livekit_api::access_token::AccessToken::with_api_key(KEY, SECRET)
        .with_identity(identity)
        .with_grants(livekit_api::access_token::VideoGrants {
            room_join: true,
            room: room.into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub json: Value,
}

impl TestApp {
    /// Sends `body` signed with the app's key, as LiveKit would.
    pub async fn webhook(&self, body: &str) -> Reply {
        let token = sign_with(&self.key, &self.secret, body);
        self.webhook_raw(body.to_owned(), Some(&token)).await
    }

    /// Sends `body` and expects it to be committed.
    pub async fn ok(&self, body: &str) -> Value {
        let reply = self.webhook(body).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "[{}] {body} -> {}",
            self.backend,
            reply.json
        );
        reply.json
    }

    pub async fn webhook_raw(
        &self,
        body: impl Into<reqwest::Body>,
        authorization: Option<&str>,
    ) -> Reply {
        let mut request = self
            .client
            .post(format!("{}/v1/webhooks/livekit", self.base))
            .header("Content-Type", "application/webhook+json")
            .body(body);
        if let Some(token) = authorization {
            request = request.header("Authorization", token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Reply {
            status,
            retry_after,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(path, None).await
    }

    /// `GET path` with `token` as a bearer token, if any.
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/rooms/{name}`; panics unless 200.
    pub async fn room(&self, name: &str) -> Value {
        let (status, json) = self.get(&format!("/v1/rooms/{name}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "[{}] room {name}: {json}",
            self.backend
        );
        json
    }

    pub async fn count(&self, name: &str) -> u64 {
        self.room(name).await["participant_count"].as_u64().unwrap()
    }

    /// The newest `rooms` row for a name.
    pub async fn room_rows(&self, name: &str) -> Vec<rooms::Model> {
        rooms::Entity::find()
            .filter(rooms::Column::LivekitName.eq(name))
            .all(&self.db)
            .await
            .unwrap()
    }

    pub async fn active_room_row(&self, name: &str) -> Option<rooms::Model> {
        self.room_rows(name)
            .await
            .into_iter()
            .find(|r| r.status == "active")
    }

    pub async fn participant_rows(&self, room_id: uuid::Uuid) -> Vec<participants::Model> {
        participants::Entity::find()
            .filter(participants::Column::RoomId.eq(room_id))
            .all(&self.db)
            .await
            .unwrap()
    }

    /// Row counts of the three tables: what a rejected request must not change.
    pub async fn table_counts(&self) -> (u64, u64, u64) {
        (
            rooms::Entity::find().count(&self.db).await.unwrap(),
            participants::Entity::find().count(&self.db).await.unwrap(),
            webhook_events::Entity::find()
                .count(&self.db)
                .await
                .unwrap(),
        )
    }

    /// One reconciliation round with the configured LiveKit, now.
    pub async fn reconcile_now(
        &self,
    ) -> Result<roomd::room::supervisor::ReconcileReport, roomd::reconcile::ReconcileError> {
        let service = self.room_service.as_ref().expect("livekit.url is set");
        roomd::reconcile::reconcile_once(&self.supervisor, service).await
    }

    /// A reconciliation round with the configured LiveKit, running on its own.
    pub fn spawn_reconcile(
        &self,
    ) -> tokio::task::JoinHandle<
        Result<roomd::room::supervisor::ReconcileReport, roomd::reconcile::ReconcileError>,
    > {
        let service = self.room_service.clone().expect("livekit.url is set");
        let supervisor = self.supervisor.clone();
        actix_web::rt::spawn(async move {
            roomd::reconcile::reconcile_once(&supervisor, &service).await
        })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        // Bounded: a drill may have left connections that never answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.db.close()).await;
    }
}

/// Runs `scenario` on every backend, each on a fresh database and app.
pub async fn on_every_backend(scenario: impl AsyncFn(&TestApp)) {
    on_every_database(async |db| {
        let app = spawn_app(db).await;
        scenario(&app).await;
        app.stop().await;
    })
    .await;
}

/// Runs `scenario` on a fresh PostgreSQL database, dropped after it; not at
/// all where no PostgreSQL is configured (CI always configures one: see
/// `TestDb::postgres`). For what only PostgreSQL does, like a cluster.
pub async fn on_postgres(scenario: impl AsyncFn(&TestDb)) {
    if let Some(db) = TestDb::postgres().await {
        scenario(&db).await;
        db.drop_database().await;
    }
}

/// Runs `scenario` on a fresh database of every backend, dropped after it:
/// for tests that start their own apps, processes or settings.
pub async fn on_every_database(scenario: impl AsyncFn(&TestDb)) {
    for db in TestDb::all().await {
        scenario(&db).await;
        db.drop_database().await;
    }
}
