//! Persistence through sea-orm: the entities, the queries an actor needs to
//! rebuild a room, and the group-commit [`Writer`], which is the only code
//! that writes room state. Nothing here decides what an event means.

pub mod entity;
mod load;
mod loader;
mod retention;
pub mod rows;
mod writer;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

pub use load::{
    ActivePage, active_room_names, active_rooms_page, find_latest_rooms, load_active_rooms,
    load_instance, load_room, open_counts_by_kind,
};
pub use loader::Loader;
pub use retention::delete_audit_before;
pub use writer::{FenceOwner, Writer};

/// `query`, or `StoreError::TimedOut` once `deadline` has passed. The query
/// is then dropped; its connection goes back to the pool once a ping on it
/// answers, or is closed when none does within the transaction deadline
/// (see `released`).
pub async fn within<T>(
    deadline: Duration,
    query: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, query)
        .await
        .unwrap_or(Err(StoreError::TimedOut(deadline)))
}

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("the writer has stopped")]
    WriterStopped,
    #[error("the loader has stopped")]
    LoaderStopped,
    #[error("the database cannot be reached")]
    Unreachable(#[source] std::sync::Arc<StoreError>),
    #[error("the transaction did not finish within {0:?}; it was abandoned")]
    TimedOut(Duration),
    #[error(
        "shard {shard} is no longer this node's under epoch {epoch}: another node owns the room"
    )]
    Fenced { shard: u32, epoch: i64 },
    #[error("a stored row is not what roomd writes: {0}")]
    Corrupt(String),
    /// The event names a room sid that another room's row holds. LiveKit's
    /// sids are unique, so only a hand-made body does this; it fails the
    /// same way on every retry, so it is refused, not left to retry.
    #[error("room sid {sid:?} belongs to another room; the event cannot be stored")]
    SidTaken { sid: String },
}

impl StoreError {
    /// A unique violation on `rooms.livekit_sid` (both backends name the
    /// column in their message) is `SidTaken`; anything else is kept.
    fn sid_taken(self, sid: Option<&str>) -> Self {
        let taken = matches!(&self, Self::Db(err) if matches!(
            err.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(message)) if message.contains("livekit_sid")
        ));
        match sid {
            Some(sid) if taken => Self::SidTaken {
                sid: sid.to_owned(),
            },
            _ => self,
        }
    }
}

/// Opens the pool. SQLite runs in WAL mode with `synchronous = NORMAL`: a
/// commit survives a killed process (not a power cut), which is the promise
/// roomd makes when it answers 200. `transaction_timeout_ms` is the
/// writer's deadline, which PostgreSQL enforces on its side too.
pub async fn connect(
    settings: &DatabaseSettings,
    transaction_timeout_ms: u64,
) -> Result<DatabaseConnection, DbErr> {
    pool(settings, Some(transaction_timeout_ms)).await
}

async fn pool(
    settings: &DatabaseSettings,
    transaction_timeout_ms: Option<u64>,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .sqlx_logging(false)
        .map_sqlx_postgres_pool_opts(move |opts| match transaction_timeout_ms {
            Some(ms) => opts
                .after_release(move |conn, _| Box::pin(released(conn, Duration::from_millis(ms)))),
            None => opts,
        })
        .map_sqlx_postgres_opts(move |opts| match transaction_timeout_ms {
            // The server's side of the writer's deadline: a transaction
            // whose client stopped talking is rolled back, not left holding
            // its row locks.
            Some(ms) => {
                let ms = ms.to_string();
                opts.options([
                    ("statement_timeout", ms.as_str()),
                    ("idle_in_transaction_session_timeout", ms.as_str()),
                ])
            }
            None => opts,
        })
        .map_sqlx_sqlite_opts(|opts| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    Database::connect(options).await
}

/// Whether a connection given back to the pool may be used again: it must
/// answer a ping within `deadline`, the transaction deadline the server
/// enforces too. sqlx pings it once more after this, but without a deadline:
/// a connection dropped mid-query on a link that stopped answering (the
/// `within` above gave up on it) kept its pool slot for good, and as many
/// of them as the pool holds stopped every room's start (found by the
/// adversary). An error here makes sqlx drop the socket instead.
async fn released(
    conn: &mut sea_orm::sqlx::PgConnection,
    deadline: Duration,
) -> Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    match tokio::time::timeout(deadline, conn.ping()).await {
        Ok(answered) => answered.map(|()| true),
        Err(_) => Err(sea_orm::sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "a connection given back to the pool did not answer a ping within {deadline:?}"
            ),
        ))),
    }
}

/// Brings the schema up to date.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// [`migrate`] on a pool of its own without the writer's deadline: building
/// an index on a large table takes longer than a transaction may.
///
/// On PostgreSQL several nodes may start at once on an empty database: they
/// migrate one at a time, under an advisory lock held on the one connection
/// the migration uses (two at once collide creating the same types).
pub async fn migrate_without_deadline(settings: &DatabaseSettings) -> Result<(), DbErr> {
    let one = DatabaseSettings {
        max_connections: 1,
        ..settings.clone()
    };
    let db = pool(&one, None).await?;
    let postgres = db.get_database_backend() == sea_orm::DbBackend::Postgres;
    // An arbitrary constant: roomd's migration lock.
    const LOCK: &str = "SELECT pg_advisory_lock(7406913311)";
    const UNLOCK: &str = "SELECT pg_advisory_unlock(7406913311)";
    if postgres {
        db.execute_unprepared(LOCK).await?;
    }
    let migrated = migrate(&db).await;
    if postgres {
        db.execute_unprepared(UNLOCK).await.ok();
    }
    db.close().await.ok();
    migrated
}
