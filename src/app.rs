//! Start-up in one place: database, migrations, writer, supervisor (with the
//! live rooms rebuilt), then the HTTP server. Nothing takes traffic before
//! recovery is done.

use std::net::TcpListener;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::livekit::WebhookVerifier;
use crate::room::{Rooms, SupervisorSettings};
use crate::store::{self, Writer};

pub struct Application {
    port: u16,
    server: Server,
    rooms: Rooms,
    /// The thread room actors run on, away from the HTTP workers.
    arbiter: Arbiter,
}

impl Application {
    /// Builds everything and binds the listener; call [`run`](Self::run) to serve.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        if settings.uses_dev_key() {
            tracing::warn!(
                api_key = %settings.livekit.api_key,
                "running with livekit-server --dev's well-known API key/secret: anyone can forge webhooks; set LIVEKIT_API_KEY and LIVEKIT_API_SECRET in production"
            );
        }
        let db = store::connect(&settings.database).await?;
        store::migrate(&db).await?;

        let writer = Writer::start(
            db.clone(),
            settings.writer.max_batch,
            settings.writer.queue_capacity,
        );
        let arbiter = Arbiter::new();
        let rooms = Rooms::new(
            db.clone(),
            writer,
            arbiter.handle(),
            SupervisorSettings {
                mailbox_capacity: settings.rooms.mailbox_capacity,
                commit_timeout: Duration::from_millis(settings.rooms.commit_timeout_ms),
            },
        );
        let recovered = rooms.recover().await?;
        tracing::info!(rooms = recovered, "live rooms rebuilt from the database");

        let listener = TcpListener::bind(settings.bind_addr()?)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            rooms: rooms.clone(),
            verifier: WebhookVerifier::new(&settings.livekit.api_key, &settings.livekit.api_secret),
            db,
            max_body_bytes: settings.server.max_body_bytes,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::configure)
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        tracing::info!(port, database = %redact(&settings.database.url), "roomd listening");
        Ok(Self {
            port,
            server: server.run(),
            rooms,
            arbiter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM or its handle):
    /// in-flight requests finish, so every acknowledged event is committed.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await?;
        self.arbiter.stop();
        Ok(())
    }
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
