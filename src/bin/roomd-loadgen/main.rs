//! roomd-loadgen: plays LiveKit against a running roomd, keeps the ground
//! truth, and checks roomd against it at the end.
//!
//! - `webhooks`: signed LiveKit webhooks with churn, reconnects, duplicates
//!   and reordering; checks served counts (and, given `--database-url`, the
//!   stored rows and that every 200 was committed); exits non-zero on any
//!   mismatch.
//! - `reads`: `GET /v1/rooms/{name}` as fast as answers come.
//! - `naive-db`: the same events written one transaction per event, straight
//!   to the database: the naive design's ceiling.
//! - `stall`: connections that send a webhook's headers and most of a large
//!   body, then stall: what roomd answers and what its memory does.
//! - `soak`: round after round of short-lived rooms beside rooms that never
//!   end; memory per round and the never-ending rooms' counts checked.

mod check;
mod model;
mod naive;
mod report;
mod seed;
mod soak;
mod stall;
mod webhooks;

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use model::{Mix, RoomModel, Signer};
use report::{Statuses, print_latency, print_percentiles, rss_mib};

#[derive(Parser, Debug)]
#[command(about = "Load, ground truth and ceilings for roomd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send signed LiveKit webhooks and check roomd against the ground truth.
    Webhooks(WebhookArgs),
    /// Read one room's count over and over.
    Reads(ReadArgs),
    /// Write the same events one transaction per event (no roomd involved).
    NaiveDb(NaiveArgs),
    /// Rounds of short-lived rooms beside rooms that never end: roomd's
    /// memory per round, the never-ending rooms checked each round.
    Soak(SoakArgs),
    /// Connections that send a webhook's headers and all but the last byte
    /// of a large body, then stall (the slow-body probe).
    Stall(StallArgs),
    /// Write live rooms with people in them straight to the database (what
    /// a restart must rebuild).
    Seed(SeedArgs),
    /// Wait for roomd's /readyz; print how long since `--since-ns`.
    Ready(ReadyArgs),
}

#[derive(Args, Debug)]
struct SeedArgs {
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 10_000)]
    rooms: usize,
    /// Open participants per room.
    #[arg(long, default_value_t = 10)]
    participants: usize,
    /// Names the rooms: seed-RUN-N.
    #[arg(long, default_value = "s")]
    run: String,
}

#[derive(Args, Debug)]
struct ReadyArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// When roomd was started, in nanoseconds since the Unix epoch
    /// (`date +%s%N`).
    #[arg(long)]
    since_ns: u128,
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
struct StallArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// The body each announces (all but its last byte is sent).
    #[arg(long, default_value_t = 1024 * 1024 - 1)]
    body_bytes: usize,
    /// Send a token that verifies (a sender holding the secret); else none.
    #[arg(long)]
    signed: bool,
    /// How long each connection waits for an answer, stalled.
    #[arg(long, default_value_t = 15.0)]
    hold: f64,
    /// roomd's process id, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct SoakArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// New rooms per round (started, churned once, finished).
    #[arg(long, default_value_t = 500)]
    short_rooms: usize,
    /// Rooms that never end.
    #[arg(long, default_value_t = 20)]
    long_rooms: usize,
    /// Churn bursts per never-ending room per round.
    #[arg(long, default_value_t = 10)]
    long_churn: usize,
    #[arg(long, default_value_t = 20)]
    participants: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 0.5)]
    reconnects: f64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[command(flatten)]
    run: RunArgs,
    /// roomd's process id, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Args, Debug)]
struct Workload {
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    /// People in each room at once.
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Churn bursts per room after everyone joined (ignored with --duration
    /// or --events, which keep churning until they are reached).
    #[arg(long, default_value_t = 2)]
    churn: usize,
    /// Churn steps (a leave, a join, or a reconnect) per burst.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Share of churn steps that are reconnects (new sid, same identity).
    #[arg(long, default_value_t = 0.25)]
    reconnects: f64,
    /// Rooms in flight at once (each sends its events one at a time).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    #[command(flatten)]
    run: RunArgs,
}

/// What names a run's rooms and events, and signs them.
#[derive(Args, Debug)]
struct RunArgs {
    /// Names rooms lg-RUN-N and events EV_RUN_N_M; random by default.
    #[arg(long)]
    run: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    #[arg(long, env = "LIVEKIT_API_SECRET", default_value = "secret")]
    api_secret: String,
}

impl RunArgs {
    fn signer(&self) -> Signer {
        Signer {
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
        }
    }

    fn id(&self) -> String {
        self.run
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned())
    }
}

impl Workload {
    fn mix(&self) -> Mix {
        Mix {
            participants: self.participants,
            reconnects: self.reconnects,
            aborts: 0.2,
        }
    }

    fn signer(&self) -> Signer {
        self.run.signer()
    }

    fn run_id(&self) -> String {
        self.run.id()
    }

    fn rooms(&self, run: &str) -> Vec<RoomModel> {
        (0..self.rooms)
            .map(|i| RoomModel::new(run, i, self.run.seed))
            .collect()
    }
}

#[derive(Args, Debug)]
struct WebhookArgs {
    #[command(flatten)]
    load: Workload,
    /// roomd's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Webhook path (another one for the HTTP-ceiling server).
    #[arg(long, default_value = "/v1/webhooks/livekit")]
    path: String,
    /// Share of deliveries sent twice (LiveKit's retries).
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    /// An event may arrive up to WINDOW-1 places late within its room.
    #[arg(long, default_value_t = 1)]
    reorder: usize,
    /// Keep churning for this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Keep churning until this many distinct events were generated.
    #[arg(long)]
    events: Option<u64>,
    /// Attempts per second across all rooms (open loop); default: as fast as
    /// answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds one event may keep getting 503s or refused connections.
    #[arg(long, default_value_t = 120.0)]
    give_up_secs: f64,
    /// Also check the stored rows and that every 200 was committed.
    #[arg(long)]
    database_url: Option<String>,
    /// Skip the end checks (for the HTTP-ceiling server).
    #[arg(long)]
    no_check: bool,
    /// A new connection for every delivery, as LiveKit's notifier makes
    /// (it closes each answer's body unread, so Go's client does not reuse
    /// the connection); by default connections are kept alive.
    #[arg(long)]
    new_connections: bool,
    /// roomd's process id, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Args, Debug)]
struct ReadArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The path to read, e.g. /v1/rooms/lg-x-0.
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Args, Debug)]
struct NaiveArgs {
    #[command(flatten)]
    load: Workload,
    #[arg(long)]
    database_url: String,
    /// Pool size (roomd's default is 8).
    #[arg(long, default_value_t = 8)]
    connections: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Webhooks(args) => webhooks(args).await,
        Command::Reads(args) => reads(args).await,
        Command::NaiveDb(args) => naive_db(args).await,
        Command::Seed(args) => {
            seed::run(&args.database_url, &args.run, args.rooms, args.participants).await
        }
        Command::Ready(args) => ready(args).await,
        Command::Stall(args) => {
            let url = url::Url::parse(&args.url)?;
            let addr = format!(
                "{}:{}",
                url.host_str().unwrap_or("127.0.0.1"),
                url.port_or_known_default().unwrap_or(80)
            );
            let signer = args.run.signer();
            let token = args.signed.then(|| {
                // Verifies; its sha256 is of a body that never arrives.
                roomd::livekit::sign_webhook(
                    &signer.api_key,
                    &signer.api_secret,
                    b"never sent",
                    Duration::from_secs(600),
                )
                .expect("sign")
            });
            stall::run(stall::Probe {
                addr,
                connections: args.connections,
                body_bytes: args.body_bytes,
                token,
                hold: Duration::from_secs_f64(args.hold),
                pid: args.pid,
            })
            .await
        }
        Command::Soak(args) => {
            soak::run(soak::Soak {
                base: args.url.trim_end_matches('/').to_owned(),
                rounds: args.rounds,
                short_rooms: args.short_rooms,
                long_rooms: args.long_rooms,
                long_churn: args.long_churn,
                mix: Mix {
                    participants: args.participants,
                    reconnects: args.reconnects,
                    aborts: 0.2,
                },
                steps: args.steps,
                concurrency: args.concurrency,
                signer: args.run.signer(),
                run: args.run.id(),
                seed: args.run.seed,
                pid: args.pid,
            })
            .await
        }
    }
}

async fn webhooks(args: WebhookArgs) -> anyhow::Result<()> {
    let run = args.load.run_id();
    let base = args.url.trim_end_matches('/').to_owned();
    let plan = webhooks::Plan {
        endpoint: format!("{base}{}", args.path),
        mix: args.load.mix(),
        steps: args.load.steps,
        rounds: args.load.churn,
        duration: args.duration.map(Duration::from_secs_f64),
        events: args.events,
        window: args.reorder.max(1),
        duplicates: args.duplicates,
        concurrency: args.load.concurrency,
        rate: args.rate,
        give_up: Duration::from_secs_f64(args.give_up_secs),
        signer: args.load.signer(),
        new_connections: args.new_connections,
    };
    println!(
        "roomd-loadgen run {run}: {} rooms x {} participants, churn {}x{} ({:.0}% reconnects), duplicates {:.0}%, reorder window {}, concurrency {}{}",
        args.load.rooms,
        args.load.participants,
        args.load.churn,
        args.load.steps,
        args.load.reconnects * 100.0,
        args.duplicates * 100.0,
        plan.window,
        args.load.concurrency,
        args.rate
            .map(|r| format!(", rate {r:.0}/s"))
            .unwrap_or_default()
            + if args.new_connections {
                ", a new connection per delivery"
            } else {
                ""
            },
    );
    let rss_before = args.pid.and_then(rss_mib);
    let (outcome, rooms, elapsed) = webhooks::run(&plan, args.load.rooms(&run)).await;
    let ok = outcome.statuses.get("200");
    let secs = elapsed.as_secs_f64();
    println!(
        "{} events, {ok} deliveries answered 200, in {secs:.2} s: {:.0} events/s, {:.0} deliveries/s",
        outcome.generated,
        outcome.generated as f64 / secs,
        ok as f64 / secs
    );
    print_latency(outcome.latencies);
    if !outcome.cold.is_empty() {
        print_percentiles("a room's first delivery, ms", outcome.cold);
    }
    println!("status: {}", outcome.statuses);
    let open: usize = rooms.iter().map(RoomModel::expected_count).sum();
    println!("open participants (truth): {open}");
    if let Some(pid) = args.pid {
        match (rss_before, rss_mib(pid)) {
            (Some(before), Some(after)) => {
                let grown = (after - before) * 1048576.0;
                let each = match open {
                    0 => String::new(),
                    n => format!("{:.0} bytes per open participant, ", grown / n as f64),
                };
                println!(
                    "server RSS: {before:.1} -> {after:.1} MiB ({each}{:.0} bytes per room)",
                    grown / rooms.len().max(1) as f64
                )
            }
            _ => println!("server RSS: unreadable"),
        }
    }
    if args.no_check {
        return Ok(());
    }
    let mut failed = outcome.abandoned > 0;
    if outcome.abandoned > 0 {
        println!("abandoned: {} events never got a 200", outcome.abandoned);
    }
    let served = check::served(&base, &rooms).await?;
    println!("check served: {} rooms, {served} mismatches", rooms.len());
    failed |= served > 0;
    if let Some(url) = &args.database_url {
        let stored = check::stored(url, &run, &rooms, &outcome.acked).await?;
        println!(
            "check stored: {} rooms, {} mismatches; {} acknowledged events, {} not committed",
            rooms.len(),
            stored.room_mismatches,
            outcome.acked.len(),
            stored.acked_missing
        );
        failed |= stored.room_mismatches > 0 || stored.acked_missing > 0;
    }
    if failed {
        bail!("roomd does not match the ground truth");
    }
    println!("ok: roomd matches the ground truth");
    Ok(())
}

async fn ready(args: ReadyArgs) -> anyhow::Result<()> {
    let url = format!("{}/readyz", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let ms = now.as_nanos().saturating_sub(args.since_ns) as f64 / 1e6;
            println!("ready in {ms:.0} ms");
            return Ok(());
        }
        // Polls this often so the figure is good to a few milliseconds.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("{url} did not answer 200 within {} s", args.timeout)
}

async fn reads(args: ReadArgs) -> anyhow::Result<()> {
    let url = format!("{}{}", args.url.trim_end_matches('/'), args.path);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let workers = (0..args.concurrency.max(1)).map(|_| {
        let (client, url) = (&client, &url);
        async move {
            let mut latencies = Vec::new();
            let mut statuses = Statuses::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                        statuses.add(status.to_string());
                    }
                    Err(_) => statuses.add("connect"),
                }
            }
            (latencies, statuses)
        }
    });
    let mut latencies = Vec::new();
    let mut statuses = Statuses::default();
    for (l, s) in futures_util::future::join_all(workers).await {
        latencies.extend(l);
        statuses.merge(s);
    }
    let elapsed = started.elapsed();
    println!(
        "reads: {} in {:.2} s: {:.0} requests/s (concurrency {})",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        args.concurrency
    );
    print_latency(latencies);
    println!("status: {statuses}");
    if statuses.get("200") == 0 || statuses.0.len() > 1 {
        bail!("not every read answered 200");
    }
    Ok(())
}

async fn naive_db(args: NaiveArgs) -> anyhow::Result<()> {
    let run = args.load.run_id();
    let (mix, signer) = (args.load.mix(), args.load.signer());
    let rooms: Vec<Vec<model::Event>> = args
        .load
        .rooms(&run)
        .into_iter()
        .map(|mut room| {
            (0..=args.load.churn)
                .flat_map(|_| room.next_events(&mix, args.load.steps, &signer))
                .collect()
        })
        .collect();
    let (events, latencies, elapsed) = naive::run(
        &args.database_url,
        args.connections,
        args.load.concurrency,
        rooms,
    )
    .await?;
    println!(
        "naive-db run {run}: {events} events, one transaction each, in {:.2} s: {:.0} events/s ({} connections, concurrency {})",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        args.connections,
        args.load.concurrency
    );
    print_latency(latencies);
    Ok(())
}
