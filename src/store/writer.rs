//! The group-commit writer: the only code that writes rooms, participants and
//! the event log.
//!
//! Actors hand it one applied event each (the audit row plus the rows the
//! state machine changed) and wait for their own reply. It takes whatever has
//! queued up, up to `max_batch`, and commits it in one transaction, so the
//! commit rate of the disk bounds batches per second, not events per second.
//! SQLite has a single writer anyway, so it gets one writer task; on
//! PostgreSQL a few tasks overlap their batches' round trips (`start`).
//!
//! On PostgreSQL a batch is one statement, one round trip (`pg`); SQLite, in
//! process, takes the same rows as one transaction of a few statements.
//!
//! The event log decides duplicates: its insert is `ON CONFLICT (event_id) DO
//! NOTHING`, and an event whose row already exists (a LiveKit retry, also one
//! from before a restart) commits none of its changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, Statement, TransactionTrait, TryInsertResult,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::StoreError;
use super::entity::{participants, rooms, webhook_events};
use crate::config::WriterSettings;
use crate::metrics::Metrics;
use crate::record::{Changes, Committed, EventRecord, RoomRecord, SessionChange};
use crate::shard::Fence;

mod pg;

/// Rows per multi-row upsert: well inside SQLite's and PostgreSQL's limits on
/// bound parameters (13 columns x 1000).
const UPSERT_CHUNK: usize = 1000;

struct Job {
    event: EventRecord,
    changes: Arc<Changes>,
    /// On a cluster: the shard and epoch the room was loaded under.
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// A handle to the writer tasks. Cloning it is cheap; they stop when the
/// last handle is dropped, after committing what was queued.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Whose shards a fenced commit must find still held (`cluster.mode =
/// "postgres"`): the node id.
pub type FenceOwner = Option<Arc<str>>;

impl Writer {
    /// Spawns the writer on the current runtime: `settings.transactions`
    /// tasks (0: 1 on SQLite, 4 on PostgreSQL) that each take the next batch
    /// from one queue, so that many batches can be in flight. Ordering within
    /// a room does not depend on this: a room's actor hands over its next
    /// event only after the last one committed.
    pub fn start(
        db: DatabaseConnection,
        settings: &WriterSettings,
        fence_owner: FenceOwner,
        metrics: Arc<Metrics>,
    ) -> Self {
        let transactions = match (settings.transactions, db.get_database_backend()) {
            (0, DbBackend::Sqlite) => 1,
            (0, _) => 4,
            (n, _) => n,
        };
        let (jobs, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let task = Task {
            db,
            max_batch: settings.max_batch.max(1),
            deadline: Duration::from_millis(settings.transaction_timeout_ms),
            fence_owner,
            metrics,
            kept: Arc::default(),
        };
        for _ in 0..transactions {
            tokio::spawn(task.clone().run(rx.clone()));
        }
        Self { jobs }
    }

    /// Commits one event and its changes; returns once they are durable.
    /// With a `fence`, only if the shard is still this node's under that
    /// epoch when the transaction runs (else `StoreError::Fenced`).
    pub async fn commit(
        &self,
        event: EventRecord,
        changes: impl Into<Arc<Changes>>,
        fence: Option<Fence>,
    ) -> Result<Committed, StoreError> {
        let (reply, done) = oneshot::channel();
        self.jobs
            .send(Job {
                event,
                changes: changes.into(),
                fence,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// One writer task's parts.
#[derive(Clone)]
struct Task {
    db: DatabaseConnection,
    max_batch: usize,
    /// How long one transaction may take before it is abandoned.
    deadline: Duration,
    fence_owner: FenceOwner,
    metrics: Arc<Metrics>,
    /// Connections kept between batches, shared by the tasks.
    kept: Arc<std::sync::Mutex<Vec<Held>>>,
}

impl Task {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        // The lock is held only while waiting for work, so the next idle task
        // takes the next batch while this one commits.
        while rx.lock().await.recv_many(&mut batch, self.max_batch).await > 0 {
            let started = std::time::Instant::now();
            match self.write(&batch).await {
                Ok(results) => {
                    self.metrics.commit_batch_size.observe(batch.len() as f64);
                    tracing::debug!(
                        events = batch.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "committed batch"
                    );
                    for (job, result) in batch.drain(..).zip(results) {
                        if let Err(StoreError::Fenced { .. }) = &result {
                            self.metrics.fence_refusals.inc();
                        }
                        let _ = job.reply.send(result);
                    }
                }
                Err(err) if batch.len() > 1 && !self.reachable().await => {
                    // Down, not a bad event: retrying events one by one would
                    // hold this writer for a connect timeout per event.
                    tracing::warn!(events = batch.len(), error = %err, "batch commit failed; the database is unreachable");
                    let cause = Arc::new(err);
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(StoreError::Unreachable(cause.clone())));
                    }
                }
                Err(err) if batch.len() > 1 => {
                    // One bad event must not keep the others from committing: retry
                    // each alone, so only the culprit gets the error.
                    tracing::warn!(events = batch.len(), error = %err, "batch commit failed; retrying events one by one");
                    for job in batch.drain(..) {
                        let result = self
                            .write(std::slice::from_ref(&job))
                            .await
                            .map_err(|err| err.sid_taken(job.event.room_sid.as_deref()));
                        let _ = job.reply.send(result.and_then(|mut r| r.remove(0)));
                    }
                }
                Err(err) => {
                    let job = batch.pop().expect("batch has one job");
                    let err = err.sid_taken(job.event.room_sid.as_deref());
                    // A refused body is logged once, with its answer (409).
                    if !matches!(err, StoreError::SidTaken { .. }) {
                        tracing::warn!(event_id = ?job.event.event_id, error = %err, "commit failed");
                    }
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        tracing::debug!("writer stopped");
    }

    /// One transaction, abandoned at the deadline: a connection that stopped
    /// answering must not hold its rooms (they are rebuilt from the database
    /// after the error). Dropping the future drops the connection's
    /// transaction; sqlx tests a connection before reusing it and closes one
    /// that does not answer.
    async fn write(&self, jobs: &[Job]) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
        let owner = self.fence_owner.as_deref();
        if self.db.get_database_backend() == DbBackend::Postgres && pg::fits(jobs) {
            return self.write_one_statement(jobs).await;
        }
        match tokio::time::timeout(self.deadline, write(&self.db, jobs, owner)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::TimedOut(self.deadline)),
        }
    }

    async fn reachable(&self) -> bool {
        matches!(
            tokio::time::timeout(self.deadline, self.db.ping()).await,
            Ok(Ok(()))
        )
    }
}

async fn write(
    db: &DatabaseConnection,
    jobs: &[Job],
    fence_owner: Option<&str>,
) -> Result<Vec<Result<Committed, StoreError>>, DbErr> {
    let now = Utc::now();
    let txn = db.begin().await?;
    let held = match fence_owner {
        Some(node) => held_shards(&txn, node, jobs.iter().filter_map(|j| j.fence)).await?,
        None => HashSet::new(),
    };
    let fenced = |job: &Job| job.fence.is_some_and(|f| !held.contains(&f));
    let row_ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::new_v4()).collect();
    let admitted = jobs.iter().zip(&row_ids).filter(|(job, _)| !fenced(job));
    let stored = insert_events(&txn, admitted.map(|(j, id)| (&j.event, id))).await?;

    let mut results = Vec::with_capacity(jobs.len());
    let mut duplicate_ids = Vec::new();
    // Keyed by id so that a row changed by two events of one batch is written
    // once, with its last value (a multi-row upsert may not touch a row twice).
    let mut rooms: HashMap<Uuid, &RoomRecord> = HashMap::new();
    let mut sessions: HashMap<Uuid, &SessionChange> = HashMap::new();
    for (job, row_id) in jobs.iter().zip(&row_ids) {
        if let Some(fence) = job.fence.filter(|_| fenced(job)) {
            results.push(Err(StoreError::Fenced {
                shard: fence.shard,
                epoch: fence.epoch,
            }));
        } else if stored.contains(row_id) {
            rooms.extend(job.changes.rooms.iter().map(|r| (r.id, r)));
            sessions.extend(job.changes.sessions.iter().map(|s| (s.row.id, s)));
            results.push(Ok(Committed::Stored));
        } else {
            duplicate_ids.extend(job.event.event_id.as_deref());
            results.push(Ok(Committed::Duplicate));
        }
    }
    count_redeliveries(&txn, duplicate_ids).await?;
    upsert_rooms(&txn, rooms.into_values(), now).await?;
    upsert_sessions(&txn, sessions.into_values(), now).await?;
    txn.commit().await?;
    Ok(results)
}

impl Task {
    /// A batch as one statement on PostgreSQL (`pg`), on a connection the
    /// tasks keep between batches: taking one from the pool and giving it
    /// back costs a ping each time (sqlx tests a connection it gets back),
    /// a round trip per commit. The one used last goes first, so a room
    /// under LiveKit's serial delivery has every commit served by one
    /// PostgreSQL backend, kept warm: the next idle task takes the next
    /// event, and four connections in turn cost it a fifth of its rate.
    /// One that failed or timed out is dropped, not given back; one kept
    /// idle longer than `HOLD_IDLE` goes back to the pool, which tests it
    /// before it is used again.
    async fn write_one_statement(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
        let owner = self.fence_owner.as_deref();
        let row_ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::new_v4()).collect();
        let deadline = tokio::time::Instant::now() + self.deadline;
        let timed_out = |_| StoreError::TimedOut(self.deadline);
        let kept = {
            let mut kept = self.kept.lock().expect("kept connections");
            match kept.pop() {
                Some(last) if last.since.elapsed() < HOLD_IDLE => Some(last),
                // The rest were used before it: as idle, or more.
                _ => {
                    kept.clear();
                    None
                }
            }
        };
        let mut conn = match kept {
            Some(h) => h.conn,
            None => {
                let pool = self.db.get_postgres_connection_pool();
                tokio::time::timeout_at(deadline, pool.acquire())
                    .await
                    .map_err(timed_out)?
                    .map_err(sqlx_error)?
            }
        };
        // The statement on the kept connection, under one deadline: a pool
        // connection abandoned mid-statement goes back to sqlx's ping,
        // which can hang for good and take the pool's slot with it (the
        // adversary's row lock on a redelivered event used the pool up).
        let work = async {
            let done = pg::write(&mut conn, jobs, &row_ids, owner).await?;
            let results: Vec<_> = jobs
                .iter()
                .zip(&row_ids)
                .map(|(job, row_id)| match job.fence {
                    Some(fence) if !done.held.contains(&fence) => Err(StoreError::Fenced {
                        shard: fence.shard,
                        epoch: fence.epoch,
                    }),
                    _ if done.stored.contains(row_id) => Ok(Committed::Stored),
                    _ => Ok(Committed::Duplicate),
                })
                .collect();
            Ok::<_, sea_orm::sqlx::Error>(results)
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(results)) => {
                self.kept.lock().expect("kept connections").push(Held {
                    conn,
                    since: std::time::Instant::now(),
                });
                Ok(results)
            }
            // Dropped at once, socket and all, never given back to the pool.
            Ok(Err(err)) => {
                drop(conn.detach());
                Err(sqlx_error(err))
            }
            Err(elapsed) => {
                drop(conn.detach());
                Err(timed_out(elapsed))
            }
        }
    }
}

/// A connection the writer tasks keep between batches.
struct Held {
    conn: sea_orm::sqlx::pool::PoolConnection<sea_orm::sqlx::Postgres>,
    since: std::time::Instant,
}

/// How long a writer task keeps a connection it is not using.
const HOLD_IDLE: Duration = Duration::from_secs(5);

fn sqlx_error(err: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Db(match err {
        sea_orm::sqlx::Error::PoolTimedOut => {
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)
        }
        err => DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err.into())),
    })
}

/// The fence: which of `fences` this node still holds, each row locked `FOR
/// SHARE` until the transaction ends. A takeover (`UPDATE ... epoch + 1`)
/// waits for the lock or skips the shard, so a batch either commits before
/// the new owner's epoch exists, and the new owner loads what it wrote, or
/// finds the epoch moved and writes nothing for that shard. Only the
/// database's row locks decide; no clock is involved.
async fn held_shards(
    txn: &impl ConnectionTrait,
    node: &str,
    fences: impl Iterator<Item = Fence>,
) -> Result<HashSet<Fence>, DbErr> {
    let shards: std::collections::BTreeSet<u32> = fences.map(|f| f.shard).collect();
    if shards.is_empty() {
        return Ok(HashSet::new());
    }
    let list = shards
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // Numbers roomd computed, not input: safe to inline, and sorted so two
    // batches lock in one order.
    let sql = format!(
        "SELECT shard, epoch FROM cluster_shards WHERE owner = $1 AND shard IN ({list}) \
         ORDER BY shard FOR SHARE"
    );
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            [node.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Fence {
                shard: row.try_get::<i32>("", "shard")? as u32,
                epoch: row.try_get("", "epoch")?,
            })
        })
        .collect()
}

/// Inserts the audit rows in one statement per chunk; returns the row ids
/// that were inserted. A row missing from the answer had an `event_id` that
/// was already committed: a redelivery.
async fn insert_events<'a>(
    db: &impl ConnectionTrait,
    events: impl Iterator<Item = (&'a EventRecord, &'a Uuid)>,
) -> Result<HashSet<Uuid>, DbErr> {
    let rows: Vec<webhook_events::ActiveModel> = events
        .map(|(e, id)| webhook_events::ActiveModel {
            id: Set(*id),
            event_id: Set(e.event_id.clone()),
            event: Set(e.event.to_string()),
            room_name: Set(e.room_name.clone()),
            room_sid: Set(e.room_sid.clone()),
            room_id: Set(e.room_id),
            participant_identity: Set(e.participant_identity.clone()),
            participant_sid: Set(e.participant_sid.clone()),
            created_at: Set(e.created_at),
            received_at: Set(e.received_at),
            outcome: Set(e.outcome.to_owned()),
            deliveries: Set(1),
        })
        .collect();
    let mut stored = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let inserted = webhook_events::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing_on([webhook_events::Column::EventId])
            .exec_with_returning_keys(db)
            .await?;
        if let TryInsertResult::Inserted(keys) = inserted {
            stored.extend(keys);
        }
    }
    Ok(stored)
}

/// Counts redeliveries on the original rows: an audit of LiveKit's retries.
/// Copies of one id in one batch each count: `IN (...)` would fold them, so
/// ids are grouped by how many copies came, one statement per group size.
async fn count_redeliveries(db: &impl ConnectionTrait, event_ids: Vec<&str>) -> Result<(), DbErr> {
    let mut copies: HashMap<&str, i32> = HashMap::new();
    for id in event_ids {
        *copies.entry(id).or_default() += 1;
    }
    let mut by_count: HashMap<i32, Vec<&str>> = HashMap::new();
    for (id, n) in copies {
        by_count.entry(n).or_default().push(id);
    }
    for (n, ids) in by_count {
        webhook_events::Entity::update_many()
            .col_expr(
                webhook_events::Column::Deliveries,
                Expr::col(webhook_events::Column::Deliveries).add(n),
            )
            .filter(webhook_events::Column::EventId.is_in(ids))
            .exec(db)
            .await?;
    }
    Ok(())
}

async fn upsert_rooms<'a>(
    db: &impl ConnectionTrait,
    rooms: impl Iterator<Item = &'a RoomRecord>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let rows: Vec<rooms::ActiveModel> = rooms
        .map(|r| rooms::ActiveModel {
            id: Set(r.id),
            livekit_name: Set(r.name.to_string()),
            livekit_sid: Set(r.sid.as_deref().map(str::to_owned)),
            status: Set(r.status.as_str().to_owned()),
            current_participants: Set(r.current_participants),
            started_at: Set(r.started_at),
            ended_at: Set(r.ended_at),
            end_reason: Set(r.end_reason.as_deref().cloned()),
            created_at: Set(now),
            updated_at: Set(now),
            changed_at: Set(r.changed_at),
        })
        .collect();
    use rooms::Column as C;
    for chunk in rows.chunks(UPSERT_CHUNK) {
        rooms::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::column(C::Id)
                    .update_columns([
                        C::LivekitSid,
                        C::Status,
                        C::CurrentParticipants,
                        C::StartedAt,
                        C::EndedAt,
                        C::EndReason,
                        C::UpdatedAt,
                        C::ChangedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

async fn upsert_sessions<'a>(
    db: &impl ConnectionTrait,
    sessions: impl Iterator<Item = &'a SessionChange>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let rows: Vec<participants::ActiveModel> = sessions
        .map(
            |SessionChange { room_id, row: s }| participants::ActiveModel {
                id: Set(s.id),
                room_id: Set(*room_id),
                identity: Set(s.identity.to_string()),
                user_id: Set(s.user_id()),
                sid: Set(s.sid.as_deref().map(str::to_owned)),
                kind: Set(s.kind.as_str().to_owned()),
                name: Set(s.name.as_deref().map(str::to_owned)),
                status: Set(if s.is_open() { "joined" } else { "left" }.to_owned()),
                joined_at: Set(s.joined_at()),
                left_at: Set(s.left_at()),
                leave_reason: Set(s.leave_reason().map(|reason| reason.to_string())),
                created_at: Set(now),
                updated_at: Set(now),
            },
        )
        .collect();
    use participants::Column as C;
    for chunk in rows.chunks(UPSERT_CHUNK) {
        participants::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::column(C::Id)
                    .update_columns([
                        C::Status,
                        C::JoinedAt,
                        C::LeftAt,
                        C::LeaveReason,
                        C::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}
