//! Loads the rooms of starting actors a batch at a time.
//!
//! An actor's first event waits for its room's committed state. One load
//! per actor was a pool checkout (with its ping) and a query each: a burst
//! of new rooms (128 at once at the start of the bench's half-peak run)
//! queued 128 of them on the pool, and their first events waited 12-27 ms
//! (p50) where the same burst on live rooms waited 6. Loads that queue up
//! while one is in flight now go as one [`load_rooms`]: one query when none
//! of the rooms exists yet, three when some do.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::StoreError;
use super::load::{load_room, load_rooms};
use crate::record::StoredRoom;

/// Rooms per batch: a bound on one batch's rows, and on the time its
/// slowest room holds the others.
const MAX_BATCH: usize = 64;

/// Batches in flight at once: a room with a long history holds one task,
/// not every start. Half of the default pool, which reads share.
const TASKS: usize = 4;

struct Job {
    name: Arc<str>,
    horizon: DateTime<Utc>,
    reply: oneshot::Sender<Result<StoredRoom, StoreError>>,
}

/// A handle to the loader tasks; they stop when the last handle is dropped.
#[derive(Clone)]
pub struct Loader {
    jobs: mpsc::Sender<Job>,
}

impl Loader {
    /// Hands [`TASKS`] tasks to `spawn`, which runs them where the actors
    /// run, so that a load's answer wakes no other thread.
    pub fn start(db: DatabaseConnection, mut spawn: impl FnMut(BoxFuture<'static, ()>)) -> Self {
        // As many waiting loads as actors may start before the first
        // batch is out; a full queue only makes `load` wait.
        let (jobs, rx) = mpsc::channel(MAX_BATCH * TASKS);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..TASKS {
            spawn(Box::pin(run(db.clone(), rx.clone())));
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

async fn run(db: DatabaseConnection, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The lock is held only while waiting, so the next idle task takes
    // what queues up while this one loads.
    while rx.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // An actor that gave up waiting (its load timed out) needs nothing.
        batch.retain(|job| !job.reply.is_closed());
        let Some(horizon) = batch.iter().map(|job| job.horizon).min() else {
            continue;
        };
        // The oldest horizon: the others get a few milliseconds more of
        // history, which they forget as they would have.
        let names: Vec<&str> = batch.iter().map(|job| &*job.name).collect();
        match load_rooms(&db, &names, horizon).await {
            Ok(rooms) => {
                for (job, room) in batch.drain(..).zip(rooms) {
                    let _ = job.reply.send(Ok(room));
                }
            }
            Err(err) if batch.len() > 1 => {
                // One room whose rows cannot be read (or take too long)
                // must not fail the others' starts: each alone, so only
                // its own actor gets the error.
                tracing::warn!(rooms = batch.len(), error = %err, "loading a batch of rooms failed; loading them one by one");
                for job in batch.drain(..) {
                    if job.reply.is_closed() {
                        continue;
                    }
                    let loaded = load_room(&db, &job.name, job.horizon).await;
                    let _ = job.reply.send(loaded);
                }
            }
            Err(err) => {
                let job = batch.pop().expect("a batch of one");
                let _ = job.reply.send(Err(err));
            }
        }
    }
}
