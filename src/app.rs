//! Start-up in one place: database, migrations, writer, supervisor, HTTP
//! server; then recovery (the live rooms rebuilt from the database) and the
//! reconciler. The server listens from the start so `/healthz` and `/readyz`
//! answer, but webhooks get 503 until recovery is done.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};

use crate::cluster::Cluster;
use crate::config::{ClusterMode, DatabaseSettings, Settings};
use crate::http::{self, AppState, BodyReader};

use crate::livekit::{RoomService, Tokens, WebhookVerifier};
use crate::metrics::Metrics;
use crate::reconcile;
use crate::room::{Lifecycle, Supervisor, SupervisorSettings};
use crate::store::{self, Writer};

pub struct Application {
    port: u16,
    server: Server,
    supervisor: Supervisor,
    db: sea_orm::DatabaseConnection,
    /// LiveKit's RoomService, when `livekit.url` is set.
    room_service: Option<Arc<RoomService>>,
    reconcile_interval: Duration,
    /// How long audit rows are kept; `None`: forever.
    audit_retention: Option<Duration>,
    /// The thread room actors run on, away from the HTTP workers.
    arbiter: Arbiter,
    /// This node's part in a cluster (`cluster.mode = "postgres"`).
    cluster: Option<Arc<Cluster>>,
}

/// The writer runs on the room actors' thread, with a pool of its own
/// opened there: its connections' sockets are polled by that thread, so an
/// event's commit goes from actor to writer to PostgreSQL and back without
/// waking another thread (two fewer thread hops per event than a writer on
/// the main thread, which under LiveKit's serial delivery is latency).
async fn start_writer(
    arbiter: &Arbiter,
    settings: &Settings,
    fence_owner: crate::store::FenceOwner,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Writer> {
    let database = settings.database.clone();
    let writer_settings = settings.writer.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    arbiter.spawn(async move {
        let started = async {
            let db = store::connect(&database, writer_settings.transaction_timeout_ms).await?;
            anyhow::Ok(Writer::start(db, &writer_settings, fence_owner, metrics))
        };
        let _ = tx.send(started.await);
    });
    rx.await?
}

impl Application {
    /// Builds everything and starts listening; webhooks get 503 until
    /// [`recover`](Self::recover) has run. Then [`run`](Self::run) serves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        raise_open_file_limit();
        if !settings.uses_dev_key() && settings.livekit.api_secret.len() < 32 {
            tracing::warn!(
                bytes = settings.livekit.api_secret.len(),
                "LIVEKIT_API_SECRET is shorter than 32 bytes: HS256 wants a key at least as long as its hash (RFC 7518, section 3.2); use a longer secret"
            );
        }
        if settings.uses_dev_key() {
            tracing::warn!(
                api_key = %settings.livekit.api_key,
                "running with livekit-server --dev's well-known API key/secret: anyone can forge webhooks; set LIVEKIT_API_KEY and LIVEKIT_API_SECRET in production"
            );
        }
        store::migrate_without_deadline(&settings.database).await?;
        let db = store::connect(&settings.database, settings.writer.transaction_timeout_ms).await?;

        let metrics = Arc::new(Metrics::new());
        let cluster = match settings.cluster.mode {
            ClusterMode::Off => None,
            ClusterMode::Postgres => Some(
                Cluster::join(
                    // Its own connections: loads and reads stuck behind a
                    // lock must not keep the lease from being renewed (all
                    // nodes gave up every shard at once when they did).
                    store::connect(
                        &DatabaseSettings {
                            max_connections: CLUSTER_CONNECTIONS,
                            ..settings.database.clone()
                        },
                        settings.writer.transaction_timeout_ms,
                    )
                    .await?,
                    &settings.cluster,
                    &settings.livekit.api_secret,
                    metrics.clone(),
                )
                .await?,
            ),
        };
        let arbiter = Arbiter::new();
        let writer = start_writer(
            &arbiter,
            &settings,
            cluster.as_ref().map(|c| Arc::from(c.node_id())),
            metrics.clone(),
        )
        .await?;
        let supervisor = Supervisor::new(
            db.clone(),
            writer,
            arbiter.handle(),
            SupervisorSettings {
                mailbox_capacity: settings.rooms.mailbox_capacity,
                max_in_flight: settings.rooms.max_in_flight,
                commit_timeout: Duration::from_millis(settings.rooms.commit_timeout_ms),
                lifecycle: Lifecycle {
                    retire_after_finish: Duration::from_secs(
                        settings.rooms.retire_after_finish_secs,
                    ),
                    idle_timeout: Duration::from_secs(settings.rooms.idle_timeout_secs),
                    history_horizon: Duration::from_secs(settings.rooms.history_horizon_secs),
                    load_timeout: Duration::from_millis(settings.writer.transaction_timeout_ms),
                },
                reconciles: !settings.livekit.url.is_empty(),
            },
            cluster.as_ref().map(|c| c.ownership()),
            metrics,
        );
        let room_service = (!settings.livekit.url.is_empty()).then(|| {
            Arc::new(RoomService::new(
                &settings.livekit.url,
                &settings.livekit.api_key,
                &settings.livekit.api_secret,
                Duration::from_secs(settings.livekit.request_timeout_secs),
            ))
        });

        let listener = TcpListener::bind(settings.bind_addr()?)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            supervisor: supervisor.clone(),
            verifier: WebhookVerifier::new(&settings.livekit.api_key, &settings.livekit.api_secret),
            tokens: Tokens::new(&settings.livekit.api_key, &settings.livekit.api_secret),
            public_counts: settings.api.public_counts,
            metrics: supervisor.metrics_handle(),
            bodies: BodyReader::new(
                settings.server.max_body_bytes,
                Duration::from_secs(settings.server.body_timeout_secs),
                settings.server.max_body_reads,
            ),
            stream_keepalive: Duration::from_secs(settings.api.stream_keepalive_secs),
            streams: Arc::default(),
            max_streams: settings.api.max_streams,
            cluster: cluster.clone(),
        });
        let cors_origins = settings.api.cors_origins.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                // Outermost last: every line, a CORS refusal's too, carries
                // the request id, and every error leaves as JSON.
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    http::cors(&cors_origins),
                ))
                .wrap(from_fn(http::error::json_errors))
                .wrap(from_fn(http::request_id::request_id))
                .app_data(state.clone())
                .configure(http::configure)
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        // roomd takes SIGTERM/SIGINT itself (`run`): the streams end first.
        .disable_signals()
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        tracing::info!(port, database = %redact(&settings.database.url), "roomd listening");
        Ok(Self {
            port,
            server: server.run(),
            supervisor,
            db,
            room_service,
            reconcile_interval: Duration::from_secs(settings.livekit.reconcile_interval_secs),
            audit_retention: (settings.audit.retention_days > 0)
                .then(|| Duration::from_secs(settings.audit.retention_days * 86_400)),
            arbiter,
            cluster,
        })
    }

    /// Rebuilds every active room from the database, then opens the webhook
    /// endpoint and starts reconciling with LiveKit (when configured).
    pub async fn recover(&self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let recovered = match &self.cluster {
            // The rooms of the shards this node takes, as it takes them.
            Some(cluster) => {
                cluster.start(self.supervisor.clone()).await?;
                self.supervisor.live_actors()
            }
            None => self.supervisor.recover().await?,
        };
        release_freed_memory();
        tracing::info!(
            rooms = recovered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "live rooms rebuilt from the database; ready"
        );
        match &self.room_service {
            Some(service) => reconcile::spawn(
                self.supervisor.clone(),
                service.clone(),
                self.reconcile_interval,
            ),
            None => tracing::info!("livekit.url is not set: no reconciliation, webhooks alone"),
        }
        if let Some(keep) = self.audit_retention {
            spawn_audit_retention(self.db.clone(), self.supervisor.metrics_handle(), keep);
        }
        Ok(())
    }

    /// LiveKit's RoomService client, when `livekit.url` is set.
    pub fn room_service(&self) -> Option<Arc<RoomService>> {
        self.room_service.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM or its handle):
    /// in-flight requests finish, so every acknowledged event is committed.
    /// On a signal the live-update streams are ended first: they never
    /// finish on their own, and would hold shutdown for its whole timeout.
    pub async fn run(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let supervisor = self.supervisor.clone();
        let cluster = self.cluster.clone();
        actix_web::rt::spawn(async move {
            let replaced = async {
                match &cluster {
                    Some(cluster) => cluster.superseded().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                signal = shutdown_signal() => {
                    if signal.is_err() {
                        return;
                    }
                    tracing::info!("shutting down: streams end, in-flight requests finish");
                    if let Some(cluster) = &cluster {
                        cluster.leave(&supervisor).await;
                    }
                }
                () = replaced => {
                    tracing::error!("another process now runs as this node (this one was paused past its lease); stopping");
                }
            }
            supervisor.feeds().close_all();
            handle.stop(true).await;
        });
        self.server.await?;
        tracing::info!("HTTP server stopped; stopping room actors and closing the database");
        self.arbiter.stop();
        // Bounded: a connection that stopped answering must not hold the
        // process (closing waits for every connection).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.db.close()).await;
        if let Some(cluster) = &self.cluster {
            cluster.close().await;
        }
        if self.cluster.as_ref().is_some_and(|c| c.is_superseded()) {
            return Err(std::io::Error::other(
                "stopped: another process registered under this cluster.node_id",
            ));
        }
        Ok(())
    }
}

/// SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        interrupted = tokio::signal::ctrl_c() => interrupted,
    }
}

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// does: every stream and webhook holds a descriptor, and the common soft
/// default (1,024) is far below what a server of thousands of rooms needs.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            soft == limit.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        tracing::debug!(open_files = limit.rlim_cur, "open-file limit");
    } else {
        tracing::warn!("cannot raise the open-file limit");
    }
}

/// How often the audit retention job runs.
const RETENTION_EVERY: Duration = Duration::from_secs(300);

/// The cluster's own pool: the heartbeat, the map reads requests ask for,
/// and the `LISTEN` connection.
const CLUSTER_CONNECTIONS: u32 = 4;

/// Deletes audit rows older than `keep` now and every few minutes.
fn spawn_audit_retention(db: sea_orm::DatabaseConnection, metrics: Arc<Metrics>, keep: Duration) {
    actix::spawn(async move {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        loop {
            let cutoff = chrono::Utc::now() - keep;
            let deleted = store::delete_audit_before(&db, cutoff, |n| {
                metrics.audit_rows_deleted.inc_by(n);
            })
            .await;
            match deleted {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::info!(rows, %cutoff, "deleted audit rows past their retention")
                }
                Err(err) => tracing::warn!(error = %err, "audit retention failed; retrying later"),
            }
            tokio::time::sleep(RETENTION_EVERY).await;
        }
    });
}

/// Recovery reads every active room at once; hand the transient garbage back
/// to the OS (glibc keeps freed memory in its arenas: with SQLite, whose
/// driver reads on its own thread, that was 2-3x the live rooms' size).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the OS; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
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
