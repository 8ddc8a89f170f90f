//! The webhook load: workers take rooms in turn, each room's events one at a
//! time (LiveKit's notifier keeps one queue per room), many rooms at once.
//! A 503 or a refused connection is retried with backoff, as LiveKit
//! retries; anything else is a failure.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::model::{Event, Mix, RoomModel, Signer};
use crate::report::Statuses;

pub struct Plan {
    pub endpoint: String,
    pub mix: Mix,
    /// Churn steps per burst after the first.
    pub steps: usize,
    /// Churn bursts per room, when neither `duration` nor `events` is set.
    pub rounds: usize,
    pub duration: Option<Duration>,
    pub events: Option<u64>,
    pub window: usize,
    pub duplicates: f64,
    pub concurrency: usize,
    /// Deliveries (attempts) per second across all workers; none = as fast
    /// as answers come.
    pub rate: Option<f64>,
    /// How long one event may keep failing before the run gives up on it.
    pub give_up: Duration,
    pub signer: Signer,
    /// No connection reused: LiveKit's notifier connects for every delivery.
    pub new_connections: bool,
}

/// What the workers saw.
#[derive(Default)]
pub struct Outcome {
    pub latencies: Vec<Duration>,
    /// Each room's first delivery: the one that makes roomd start the
    /// room's actor and load it (its answered attempt).
    pub cold: Vec<Duration>,
    pub statuses: Statuses,
    /// Event ids answered 200 (committed, roomd says).
    pub acked: Vec<String>,
    /// Events given up on (never answered 200).
    pub abandoned: u64,
    /// Distinct events generated.
    pub generated: u64,
}

struct Shared<'a> {
    plan: &'a Plan,
    client: reqwest::Client,
    rooms: Mutex<VecDeque<RoomModel>>,
    done: Mutex<Vec<RoomModel>>,
    generated: AtomicU64,
    sent: AtomicU64,
    started: Instant,
}

impl Shared<'_> {
    fn time_is_up(&self) -> bool {
        self.plan
            .duration
            .is_some_and(|d| self.started.elapsed() >= d)
            || self
                .plan
                .events
                .is_some_and(|n| self.generated.load(Ordering::Relaxed) >= n)
    }

    fn unbounded(&self) -> bool {
        self.plan.duration.is_some() || self.plan.events.is_some()
    }

    /// Open-loop pacing: the n-th attempt waits for its slot.
    async fn pace(&self) {
        if let Some(rate) = self.plan.rate {
            let n = self.sent.fetch_add(1, Ordering::Relaxed);
            let at = self.started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

pub async fn run(plan: &Plan, rooms: Vec<RoomModel>) -> (Outcome, Vec<RoomModel>, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(if plan.new_connections {
            0
        } else {
            plan.concurrency
        })
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let shared = Shared {
        plan,
        client,
        rooms: Mutex::new(rooms.into()),
        done: Mutex::new(Vec::new()),
        generated: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        started: Instant::now(),
    };
    let workers = (0..plan.concurrency.max(1)).map(|_| worker(&shared));
    let mut outcome = Outcome::default();
    for part in futures_util::future::join_all(workers).await {
        outcome.latencies.extend(part.latencies);
        outcome.cold.extend(part.cold);
        outcome.statuses.merge(part.statuses);
        outcome.acked.extend(part.acked);
        outcome.abandoned += part.abandoned;
    }
    let elapsed = shared.started.elapsed();
    outcome.generated = shared.generated.load(Ordering::Relaxed);
    let mut rooms = shared.done.into_inner().unwrap();
    rooms.extend(shared.rooms.into_inner().unwrap());
    (outcome, rooms, elapsed)
}

async fn worker(shared: &Shared<'_>) -> Outcome {
    let plan = shared.plan;
    let mut out = Outcome::default();
    loop {
        if shared.time_is_up() {
            break;
        }
        let Some(mut room) = shared.rooms.lock().unwrap().pop_front() else {
            break;
        };
        if !shared.unbounded() && room.is_started() && room.rounds >= plan.rounds {
            for event in room.finish_events(&plan.signer) {
                shared.generated.fetch_add(1, Ordering::Relaxed);
                deliver(shared, &event, &mut out).await;
            }
            shared.done.lock().unwrap().push(room);
            continue;
        }
        let mut cold = !room.is_started();
        let events = room.next_events(&plan.mix, plan.steps, &plan.signer);
        shared
            .generated
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in room.arrange(events, plan.window, plan.duplicates) {
            let answers = out.latencies.len();
            deliver(shared, &event, &mut out).await;
            if std::mem::take(&mut cold) && out.latencies.len() > answers {
                out.cold.extend(out.latencies.last());
            }
        }
        shared.rooms.lock().unwrap().push_back(room);
    }
    out
}

async fn deliver(shared: &Shared<'_>, event: &Event, out: &mut Outcome) {
    let first = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        shared.pace().await;
        let sent = Instant::now();
        let response = shared
            .client
            .post(&shared.plan.endpoint)
            .header("Content-Type", "application/webhook+json")
            .header("Authorization", &event.token)
            .body(event.body.clone())
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                // The whole answer, as LiveKit's client reads it: a body
                // left unread can cost the connection its reuse, and the
                // next delivery a new connection.
                let _ = r.bytes().await;
                out.latencies.push(sent.elapsed());
                out.statuses.add(status.to_string());
                match status {
                    200 => {
                        out.acked.push(event.id.clone());
                        return;
                    }
                    503 => {}
                    _ => {
                        eprintln!("{}: refused with {status}", event.id);
                        out.abandoned += 1;
                        return;
                    }
                }
            }
            Err(err) => {
                out.statuses.add(if err.is_timeout() {
                    "timeout"
                } else {
                    "connect"
                });
            }
        }
        if first.elapsed() >= shared.plan.give_up {
            eprintln!("{}: giving up after {:?}", event.id, shared.plan.give_up);
            out.abandoned += 1;
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
