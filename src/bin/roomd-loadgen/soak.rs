//! The soak: what months of production look like, compressed. Every round
//! opens many short-lived rooms under names never used before (a room per
//! meeting), churns them and finishes them, while a few rooms never end and
//! churn hard (reconnects, leaves, joins) the whole time. After each round it
//! checks every never-ending room's served count against the truth and
//! prints roomd's resident memory, so growth that should not be there shows
//! as a slope.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::check;
use crate::model::{Mix, RoomModel, Signer};
use crate::report::rss_mib;
use crate::webhooks::{self, Plan};

pub struct Soak {
    pub base: String,
    pub rounds: usize,
    pub short_rooms: usize,
    pub long_rooms: usize,
    /// Churn bursts a never-ending room gets per round.
    pub long_churn: usize,
    pub mix: Mix,
    pub steps: usize,
    pub concurrency: usize,
    pub signer: Signer,
    pub run: String,
    pub seed: u64,
    pub pid: Option<u32>,
}

pub async fn run(soak: Soak) -> anyhow::Result<()> {
    let plan = |rounds| Plan {
        endpoint: format!("{}/v1/webhooks/livekit", soak.base),
        mix: soak.mix,
        steps: soak.steps,
        rounds,
        duration: None,
        events: None,
        window: 2,
        duplicates: 0.05,
        concurrency: soak.concurrency,
        rate: None,
        give_up: Duration::from_secs(120),
        signer: Signer {
            api_key: soak.signer.api_key.clone(),
            api_secret: soak.signer.api_secret.clone(),
        },
        new_connections: false,
    };
    let mut long: Vec<RoomModel> = (0..soak.long_rooms)
        .map(|i| RoomModel::new(&format!("{}-long", soak.run), i, soak.seed))
        .collect();
    let rss_start = soak.pid.and_then(rss_mib);
    println!(
        "soak {}: {} rounds of {} new rooms (started, churned, finished) beside {} rooms that never end ({} churn bursts x {} steps a round)",
        soak.run, soak.rounds, soak.short_rooms, soak.long_rooms, soak.long_churn, soak.steps
    );
    let started = Instant::now();
    let mut total_events = 0;
    for round in 1..=soak.rounds {
        let short: Vec<RoomModel> = (0..soak.short_rooms)
            .map(|i| RoomModel::new(&format!("{}-r{round}", soak.run), i, soak.seed).finishing())
            .collect();
        let round_started = Instant::now();
        let (short_outcome, _, _) = webhooks::run(&plan(1), short).await;
        let target = long.first().map_or(0, |r| r.rounds) + soak.long_churn;
        let (long_outcome, rooms, _) = webhooks::run(&plan(target), long).await;
        long = rooms;
        let events = short_outcome.generated + long_outcome.generated;
        total_events += events;
        let abandoned = short_outcome.abandoned + long_outcome.abandoned;
        let mismatches = check::served(&soak.base, &long).await?;
        let rss = soak
            .pid
            .and_then(rss_mib)
            .map_or("unreadable".into(), |m| format!("{m:.1} MiB"));
        println!(
            "round {round}: {events} events in {:.1} s, server RSS {rss}, never-ending rooms {} with {} people, {mismatches} mismatches, {abandoned} abandoned",
            round_started.elapsed().as_secs_f64(),
            long.len(),
            long.iter().map(RoomModel::expected_count).sum::<usize>(),
        );
        if mismatches > 0 || abandoned > 0 {
            bail!("roomd does not match the ground truth in round {round}");
        }
    }
    if let (Some(before), Some(after)) = (rss_start, soak.pid.and_then(rss_mib)) {
        println!("server RSS over the soak: {before:.1} -> {after:.1} MiB");
    }
    println!(
        "ok: {total_events} events in {:.1} s; every never-ending room matches the truth",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
