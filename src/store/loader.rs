//! Loads the rooms of starting actors, a batch of names at a time.
//!
//! An actor's first event waits for its room's committed state. One load
//! per actor was a pool checkout (with its ping) and a query at least: a
//! burst of new rooms (128 at once at the start of the bench's half-peak
//! run) queued 128 of them on the pool, and their first events waited
//! 12-27 ms (p50) where the same burst on live rooms waited 6. Now the
//! names that queue up while a batch is out are looked up together, in
//! one query: a room that does not exist yet needs nothing more, and each
//! one that does gets the rest of its load on its own, so that a room
//! with a long history holds no other room's start. A lookup that hangs
//! holds neither its task (the next batch goes out beside it) nor, for
//! long, the rooms in it (they are looked up again alone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::load::{find_latest_rooms, load_rest, load_room};
use super::{StoreError, within};
use crate::record::{RoomRecord, StoredRoom};

/// Names per lookup.
const MAX_BATCH: usize = 64;

/// Lookups that queue up the next batch: while they are out, names wait
/// and go together.
const TASKS: usize = 4;

/// How long a task waits for its lookup before it takes the next batch
/// anyway. A lookup takes a millisecond or so; one that takes this long is
/// waiting on something that may never come.
const PATIENCE: Duration = Duration::from_millis(50);

struct Job {
    name: Arc<str>,
    horizon: DateTime<Utc>,
    reply: oneshot::Sender<Result<StoredRoom, StoreError>>,
}

/// A handle to the loader; its tasks stop when the last handle is dropped.
#[derive(Clone)]
pub struct Loader {
    jobs: mpsc::Sender<Job>,
}

/// What every load shares.
#[derive(Clone)]
struct Parts {
    db: DatabaseConnection,
    /// How long one query may take before it is abandoned: a connection
    /// that stopped answering must not keep a task, and every room after
    /// it, waiting. (The abandoned connection's pool slot stays taken
    /// until the server ends the query: sqlx pings it before reuse.)
    deadline: Duration,
    spawn: Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>,
}

impl Loader {
    /// `spawn` runs the loader's tasks, and the rest of each existing
    /// room's load, where the actors run, so that an answer wakes no other
    /// thread.
    pub fn start(
        db: DatabaseConnection,
        deadline: Duration,
        spawn: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(MAX_BATCH * TASKS);
        let rx = Arc::new(Mutex::new(rx));
        let parts = Parts {
            db,
            deadline,
            spawn: Arc::new(spawn),
        };
        for _ in 0..TASKS {
            (parts.spawn)(Box::pin(run(parts.clone(), rx.clone())));
        }
        Self { jobs }
    }

    /// What an actor for `name` needs to rebuild itself (see
    /// [`load_room`]), with nothing from before `horizon`.
    pub async fn load(
        &self,
        name: Arc<str>,
        horizon: DateTime<Utc>,
    ) -> Result<StoredRoom, StoreError> {
        let (reply, done) = oneshot::channel();
        let job = Job {
            name,
            horizon,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::LoaderStopped)?;
        done.await.map_err(|_| StoreError::LoaderStopped)?
    }
}

async fn run(parts: Parts, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The lock is held only while waiting, so the next idle task takes
    // what queues up while this one looks its names up.
    while rx.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // An actor that gave up waiting needs nothing.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (done, finished) = oneshot::channel::<()>();
        let lookup = look_up(parts.clone(), jobs);
        (parts.spawn)(Box::pin(async move {
            lookup.await;
            let _ = done.send(());
        }));
        // A lookup that takes far longer than one should (a connection
        // that stopped answering) keeps this task no longer: the next
        // batch goes out beside it (found by the adversary: four hung
        // lookups held every start for their whole deadline).
        let _ = tokio::time::timeout(PATIENCE, finished).await;
    }
}

/// Answers `batch` from one lookup of its names.
async fn look_up(parts: Parts, mut batch: Vec<Job>) {
    let names: Vec<&str> = batch.iter().map(|job| &*job.name).collect();
    // Half the deadline, so that after a lookup that hung each room still
    // has the other half to be looked up alone: one name's stuck
    // connection then fails only that room (found by the adversary: it
    // failed every new room batched with it).
    let half = parts.deadline / 2;
    match within(half, find_latest_rooms(&parts.db, &names)).await {
        Ok(latest) => {
            let latest: HashMap<Arc<str>, RoomRecord> = latest
                .into_iter()
                .map(|room| (room.name.clone(), room))
                .collect();
            for job in batch.drain(..) {
                match latest.get(&job.name) {
                    None => {
                        let _ = job.reply.send(Ok(StoredRoom::default()));
                    }
                    Some(room) => {
                        let (db, room) = (parts.db.clone(), room.clone());
                        let rest = async move { load_rest(&db, room, job.horizon).await };
                        answer(&parts, job.reply, within(parts.deadline, rest));
                    }
                }
            }
        }
        Err(err) if batch.len() > 1 => {
            // One name that cannot be read (a row roomd did not write, a
            // connection that hung) must not fail the others' starts:
            // each alone, so only its own actor gets the error.
            tracing::warn!(rooms = batch.len(), error = %err, "looking up a batch of rooms failed; loading them one by one");
            for job in batch.drain(..) {
                let db = parts.db.clone();
                let alone = async move { load_room(&db, &job.name, job.horizon).await };
                answer(&parts, job.reply, within(half, alone));
            }
        }
        Err(err) => {
            let job = batch.pop().expect("a batch of one");
            let _ = job.reply.send(Err(err));
        }
    }
}

/// Runs `load` on a task of its own and answers `reply` with it, unless
/// the actor waiting on `reply` has given up by then.
fn answer(
    parts: &Parts,
    reply: oneshot::Sender<Result<StoredRoom, StoreError>>,
    load: impl Future<Output = Result<StoredRoom, StoreError>> + Send + 'static,
) {
    (parts.spawn)(Box::pin(async move {
        if !reply.is_closed() {
            let _ = reply.send(load.await);
        }
    }));
}
