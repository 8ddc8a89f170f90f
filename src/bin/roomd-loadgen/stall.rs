//! `stall`: the slow-body probe. Many connections each send a webhook's
//! headers and all but the last byte of a large body, then wait; what roomd
//! answered, how soon, and what its memory did meanwhile.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{Statuses, print_latency, rss_mib};

pub struct Probe {
    /// host:port of roomd.
    pub addr: String,
    pub connections: usize,
    pub body_bytes: usize,
    /// The `Authorization` header's value, if any.
    pub token: Option<String>,
    pub hold: Duration,
    pub pid: Option<u32>,
}

/// One connection: headers, all but the last byte, then the status line of
/// whatever comes back within `hold` (`None` if nothing did).
async fn stall(probe: &Probe) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(&probe.addr).await else {
        return (None, started.elapsed());
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "POST /v1/webhooks/livekit HTTP/1.1\r\nHost: {}\r\nContent-Type: application/webhook+json\r\nContent-Length: {}\r\n",
        probe.addr, probe.body_bytes
    );
    if let Some(token) = &probe.token {
        head.push_str(&format!("Authorization: {token}\r\n"));
    }
    head.push_str("\r\n");
    let body = vec![b'x'; probe.body_bytes.saturating_sub(1)];
    // Written beside the read: a server that answers before reading stops
    // reading, and the write then waits (or fails) while the answer arrives.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        // Hold the connection open (the last byte never comes).
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(writer);
    });
    let mut answer = [0u8; 12];
    let status = tokio::time::timeout(probe.hold, reader.read_exact(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|_| std::str::from_utf8(&answer[9..12]).ok()?.parse().ok());
    let took = started.elapsed();
    if status.is_some() {
        write.abort();
    } else {
        // Keep it stalled until every connection has had its `hold`.
        tokio::time::sleep(probe.hold.saturating_sub(took)).await;
        write.abort();
    }
    (status, took)
}

pub async fn run(probe: Probe) -> anyhow::Result<()> {
    let rss = || probe.pid.and_then(rss_mib);
    let before = rss();
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before.unwrap_or(0.0)));
    let sampler = probe.pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_mib(pid).unwrap_or(0.0);
                {
                    let mut peak = peak.lock().expect("peak");
                    *peak = peak.max(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let started = Instant::now();
    let results =
        futures_util::future::join_all((0..probe.connections).map(|_| stall(&probe))).await;
    let mut statuses = Statuses::default();
    let mut answered = Vec::new();
    for (status, took) in results {
        match status {
            Some(code) => {
                statuses.add(code.to_string());
                answered.push(took);
            }
            None => statuses.add("no answer"),
        }
    }
    println!(
        "stall: {} connections x {} bytes ({}), held up to {:.0} s, done in {:.1} s",
        probe.connections,
        probe.body_bytes,
        if probe.token.is_some() {
            "signed"
        } else {
            "no token"
        },
        probe.hold.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("status: {statuses}");
    if !answered.is_empty() {
        print!("time to answer, ");
        print_latency(answered);
    }
    if let Some(sampler) = sampler {
        sampler.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "server RSS MiB: before {:.1}, peak while stalled {:.1}, 2 s after closing {:.1}",
            before.unwrap_or(0.0),
            *peak.lock().expect("peak"),
            rss().unwrap_or(0.0)
        );
    }
    Ok(())
}
