//! roomd-loadgen: plays LiveKit against a running roomd.
//!
//! Every room gets its events in order, one at a time (LiveKit's notifier
//! keeps one queue per room), many rooms at once; some deliveries are sent
//! twice, as LiveKit's retries do. Bodies and tokens are made before the
//! clock starts. At the end every room's served count is checked against the
//! ground truth; any mismatch exits non-zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use roomd::livekit::body::{BodyParticipant, webhook_body};
use roomd::livekit::sign_webhook;

#[derive(Parser, Debug)]
#[command(about = "Sends signed LiveKit webhooks to roomd and checks the counts it serves")]
struct Args {
    /// roomd's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    /// Participants that join each room; every second one leaves again.
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Rooms in flight at once (each sends its events one at a time).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Share of deliveries sent twice (LiveKit's retries).
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret")]
    api_secret: String,
    /// roomd's process id, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
}

struct Room {
    name: String,
    expected: usize,
    /// (body, token) in the order LiveKit would send them.
    deliveries: Vec<(String, String)>,
}

fn plan(args: &Args, run: &str) -> anyhow::Result<Vec<Room>> {
    let ttl = Duration::from_secs(3600);
    let mut rng = run.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut chance = move |p: f64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 11) as f64 / (1u64 << 53) as f64) < p
    };
    let now = chrono::Utc::now().timestamp();
    (0..args.rooms)
        .map(|r| {
            let name = format!("lg-{run}-{r}");
            let sid = format!("RM_{run}{r}");
            let mut n = 0;
            let mut bodies = Vec::new();
            let mut push = |event: &str, p: Option<&BodyParticipant>| {
                n += 1;
                bodies.push(webhook_body(
                    event,
                    &format!("EV_{run}_{r}_{n}"),
                    now,
                    &name,
                    &sid,
                    p,
                ));
            };
            push("room_started", None);
            let people: Vec<BodyParticipant> = (0..args.participants)
                .map(|p| BodyParticipant {
                    sid: format!("PA_{run}_{r}_{p}"),
                    identity: format!("user-{p}"),
                    kind: if p == 0 {
                        "AGENT".into()
                    } else {
                        String::new()
                    },
                })
                .collect();
            for p in &people {
                push("participant_joined", Some(p));
            }
            for p in people.iter().step_by(2) {
                push("participant_left", Some(p));
            }
            let mut deliveries = Vec::new();
            for body in bodies {
                let token = sign_webhook(&args.api_key, &args.api_secret, body.as_bytes(), ttl)?;
                if chance(args.duplicates) {
                    deliveries.push((body.clone(), token.clone()));
                }
                deliveries.push((body, token));
            }
            Ok(Room {
                name,
                expected: args.participants / 2,
                deliveries,
            })
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let rooms = plan(&args, &run)?;
    let total: usize = rooms.iter().map(|r| r.deliveries.len()).sum();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let endpoint = format!("{}/v1/webhooks/livekit", args.url.trim_end_matches('/'));
    let tally = Tally::default();
    println!(
        "roomd-loadgen run {run}: {} rooms x {} participants, {total} deliveries, concurrency {}, duplicates {:.0}%",
        args.rooms,
        args.participants,
        args.concurrency,
        args.duplicates * 100.0
    );

    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(&rooms)
        .map(|room| {
            let (client, endpoint, tally) = (&client, &endpoint, &tally);
            async move {
                let mut latencies = Vec::with_capacity(room.deliveries.len());
                for (body, token) in &room.deliveries {
                    loop {
                        let sent = Instant::now();
                        let response = client
                            .post(endpoint)
                            .header("Content-Type", "application/webhook+json")
                            .header("Authorization", token)
                            .body(body.clone())
                            .send()
                            .await;
                        latencies.push(sent.elapsed());
                        match response.map(|r| r.status().as_u16()) {
                            Ok(200) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(503) => {
                                // LiveKit retries a 503; so do we, a little later.
                                tally.busy.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Ok(_) => {
                                tally.other.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(_) => {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                latencies
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();

    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "committed {ok} deliveries in {:.2} s: {:.0} events/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "status: 200={ok} 503={} other={} errors={}",
        tally.busy.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed)
    );
    if let Some(mib) = args.pid.and_then(rss_mib) {
        println!("server RSS: {mib:.1} MiB");
    }

    let mut mismatches = 0;
    for room in &rooms {
        let url = format!("{}/v1/rooms/{}", args.url.trim_end_matches('/'), room.name);
        let view: serde_json::Value = client
            .get(&url)
            .send()
            .await?
            .json()
            .await
            .context("room view")?;
        if view["participant_count"].as_u64() != Some(room.expected as u64) {
            mismatches += 1;
            eprintln!(
                "mismatch: {} serves {} expected {}",
                room.name, view["participant_count"], room.expected
            );
        }
    }
    println!("check: {} rooms, {mismatches} mismatches", rooms.len());
    if mismatches > 0
        || tally.other.load(Ordering::Relaxed) > 0
        || tally.errors.load(Ordering::Relaxed) > 0
    {
        bail!("the served state does not match the ground truth");
    }
    Ok(())
}
