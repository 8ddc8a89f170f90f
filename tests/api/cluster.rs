//! Several roomd processes on one PostgreSQL (`cluster.mode = "postgres"`),
//! fed the way LiveKit feeds a webhook URL behind a round-robin balancer:
//! one serial queue per room, each try to the next node, retries after 1, 2,
//! 4 and 8 s on a connection error or a 5xx. Nodes are killed, stopped,
//! paused and started in the middle; the counts must stay exact.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::Roomd;
use common::{KEY, SECRET, TestDb, sign_with, webhook};
use reqwest::StatusCode;
use roomd::config::WriterSettings;
use roomd::metrics::Metrics;
use roomd::record::{Changes, EventRecord};
use roomd::shard::Fence;
use roomd::store::{StoreError, Writer};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

/// LiveKit's retry schedule for one delivery.
const BACKOFF: [u64; 4] = [1, 2, 4, 8];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Person `n` of `tag` joining `room`: sid `PA_{tag}{n}`, identity
/// `{tag}{n}`, event `EV_{tag}{n}`, in instance `RM_{tag}`.
fn join_of(room: &str, tag: &str, n: u32) -> String {
    let who = format!("{tag}{n}");
    webhook::joined(room, &format!("RM_{tag}"), &format!("PA_{who}"), &who)
        .id(&format!("EV_{who}"))
        .body()
}

/// A node of the cluster, as its own process.
fn node(db: &TestDb, id: &str) -> Roomd {
    node_with(db, id, &[])
}

/// `node`, with more settings.
fn node_with(db: &TestDb, id: &str, settings: &[(&str, &str)]) -> Roomd {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = format!("http://{bind}");
    let mut env = vec![
        ("ROOMD__CLUSTER__MODE", "postgres"),
        ("ROOMD__CLUSTER__NODE_ID", id),
        ("ROOMD__CLUSTER__ADVERTISE_URL", &url),
    ];
    env.extend_from_slice(settings);
    Roomd::start_with(&db.url, &bind, &env)
}

/// Two nodes that have split the shards; the first, up first, keeps the
/// lower half when the second joins.
async fn two_nodes(db: &TestDb, first: &str, second: &str) -> (Roomd, Roomd) {
    let client = reqwest::Client::new();
    let a = node(db, first).ready(&client).await;
    let b = node(db, second).ready(&client).await;
    until_shards(&a, |s| s == 128).await;
    until_shards(&b, |s| s == 128).await;
    (a, b)
}

/// A room named `prefix` and a number whose shard the first of
/// `two_nodes` holds.
fn room_of_first(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| roomd::shard::shard_of(name, 256) < 128)
        .unwrap()
}

/// A room named `prefix` and a number whose shard the second of
/// `two_nodes` holds, and that shard.
fn room_of_second(prefix: &str) -> (String, u32) {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .map(|name| (roomd::shard::shard_of(&name, 256), name))
        .find(|(shard, _)| *shard >= 128)
        .map(|(shard, name)| (name, shard))
        .unwrap()
}

/// A node that must refuse to start: what it printed.
fn refused(db: &TestDb, settings: &[(&str, &str)]) -> String {
    let port = free_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .args(["serve", "--config", "/nonexistent/roomd.toml"])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .env("ROOMD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("ROOMD__CLUSTER__MODE", "postgres")
        .env(
            "ROOMD__CLUSTER__ADVERTISE_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .envs(settings.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "it must not start");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What the sender saw.
#[derive(Default)]
struct Sent {
    tries: AtomicUsize,
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    connect_errors: AtomicUsize,
    exhausted: AtomicUsize,
    /// What each exhausted event met, try by try.
    history: std::sync::Mutex<Vec<String>>,
    /// Each 5xx answer, with the node that gave it, as it was given.
    refusals: std::sync::Mutex<Vec<String>>,
}

/// LiveKit's notifier for one room behind a round-robin balancer: each event
/// in order, each try to the next node in `nodes` that takes the connection.
async fn deliver_room(
    client: reqwest::Client,
    nodes: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    events: Vec<String>,
    sent: Arc<Sent>,
    progress: Arc<AtomicUsize>,
) {
    for body in events {
        let mut tries = 0;
        let mut met = Vec::new();
        loop {
            sent.tries.fetch_add(1, Ordering::Relaxed);
            // The balancer: the next node in turn; one that refuses the
            // connection is skipped for the next (as HAProxy's redispatch
            // does), so LiveKit sees a connection error only when none is up.
            let mut answer = None;
            for _ in 0..nodes.len() {
                let base = &nodes[next.fetch_add(1, Ordering::Relaxed) % nodes.len()];
                match client
                    .post(format!("{base}/v1/webhooks/livekit"))
                    .header("Authorization", sign_with(KEY, SECRET, &body))
                    .header("Content-Type", "application/webhook+json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status();
                        met.push(format!(
                            "{base} {status} {}",
                            r.text().await.unwrap_or_default()
                        ));
                        answer = Some(status);
                        break;
                    }
                    Err(e) => {
                        met.push(format!("{base} {e}"));
                        sent.connect_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match answer {
                Some(StatusCode::OK) => {
                    sent.ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(status) => {
                    assert!(status.is_server_error(), "{status} for {body}");
                    sent.unavailable.fetch_add(1, Ordering::Relaxed);
                    let answer = met.last().cloned().unwrap_or_default();
                    sent.refusals.lock().unwrap().push(answer);
                }
                None => {}
            }
            if tries == BACKOFF.len() {
                sent.exhausted.fetch_add(1, Ordering::Relaxed);
                sent.history
                    .lock()
                    .unwrap()
                    .push(format!("{body}\n  {}", met.join("\n  ")));
                break;
            }
            tokio::time::sleep(Duration::from_secs(BACKOFF[tries])).await;
            tries += 1;
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// `rooms` rooms, each with `joins` joins and then a leave for every other
/// participant, in `phase`'s own ids; returns the bodies and each room's
/// count once they are applied.
fn script(phase: &str, rooms: usize, joins: usize) -> (Vec<Vec<String>>, HashMap<String, usize>) {
    let mut scripts = Vec::new();
    let mut truth = HashMap::new();
    for r in 0..rooms {
        let room = format!("c{r}");
        let sid = format!("RM_c{r}");
        let mut events = Vec::new();
        for p in 0..joins {
            events.push(
                webhook::joined(
                    &room,
                    &sid,
                    &format!("PA_{phase}_{r}_{p}"),
                    &format!("{phase}-{p}"),
                )
                .id(&format!("EV_{phase}_{r}_j{p}"))
                .body(),
            );
        }
        for p in (0..joins).step_by(2) {
            events.push(
                webhook::left(
                    &room,
                    &sid,
                    &format!("PA_{phase}_{r}_{p}"),
                    &format!("{phase}-{p}"),
                )
                .id(&format!("EV_{phase}_{r}_l{p}"))
                .body(),
            );
        }
        truth.insert(room, joins / 2);
        scripts.push(events);
    }
    (scripts, truth)
}

/// Runs `scripts` against `nodes`; calls `midway` once half the events are
/// answered. Returns what the sender saw.
async fn drive(
    nodes: Vec<String>,
    scripts: Vec<Vec<String>>,
    midway: impl FnOnce() + Send + 'static,
) -> Arc<Sent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let total: usize = scripts.iter().map(Vec::len).sum();
    let nodes = Arc::new(nodes);
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Sent::default());
    let progress = Arc::new(AtomicUsize::new(0));
    let mut queues = Vec::new();
    for events in scripts {
        queues.push(tokio::spawn(deliver_room(
            client.clone(),
            nodes.clone(),
            next.clone(),
            events,
            sent.clone(),
            progress.clone(),
        )));
    }
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let progress = progress.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while progress.load(Ordering::Relaxed) < total / 2 && !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            midway();
        })
    };
    for queue in queues {
        queue.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    sent
}

/// Every room's count from each node and from PostgreSQL equals the truth,
/// and every event is in the log once.
async fn assert_exact(db: &DatabaseConnection, nodes: &[&Roomd], truth: &HashMap<String, usize>) {
    for (room, want) in truth {
        for node in nodes {
            let view = node.get(&format!("/v1/rooms/{room}"), None).await;
            assert_eq!(
                view["participant_count"], *want,
                "{room} read from {}: {view}",
                node.base
            );
        }
        let stored = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!(
                    "SELECT current_participants FROM rooms WHERE livekit_name = '{room}' AND status = 'active'"
                ),
            ))
            .await
            .unwrap()
            .expect("the room is in PostgreSQL");
        let stored: i32 = stored.try_get("", "current_participants").unwrap();
        assert_eq!(stored as usize, *want, "{room} in PostgreSQL");
    }
    let twice = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT event_id FROM webhook_events GROUP BY event_id HAVING count(*) > 1",
        ))
        .await
        .unwrap();
    assert!(twice.is_empty(), "every event is committed once");
}

async fn owned_shards(node: &Roomd) -> Option<u64> {
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/debug/cluster", node.base))
        .bearer_auth(common::admin_token())
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["owned_shards"].as_u64()
}

/// Polls (bounded, no timing assertion) until `pred` holds for `node`.
async fn until_shards(node: &Roomd, pred: impl Fn(u64) -> bool) -> u64 {
    let mut last = 0;
    for _ in 0..300 {
        last = owned_shards(node).await.unwrap_or(0);
        if pred(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_one_to_sigkill_gain_one_and_hand_one_over_with_counts_exact() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node(db, "a").ready(&client).await;
        let b = node(db, "b").ready(&client).await;
        let c = node(db, "c").ready(&client).await;
        // Fair shares once all three hold leases: 86 + 86 + 84 of 256.
        for n in [&a, &b, &c] {
            let held = until_shards(n, |s| (80..=86).contains(&s)).await;
            assert!((80..=86).contains(&held), "{} holds {held}", n.base);
        }
        let pg = Database::connect(&db.url).await.unwrap();

        // Phase 1: SIGKILL one of three in the middle.
        let (scripts, mut truth) = script("k", 24, 20);
        let bases = vec![a.base.clone(), b.base.clone(), c.base.clone()];
        let started = Instant::now();
        let victim = Arc::new(std::sync::Mutex::new(Some(c)));
        let killed = victim.clone();
        let sent = drive(bases, scripts, move || {
            killed.lock().unwrap().take().unwrap().kill_9();
        })
        .await;
        for h in sent.history.lock().unwrap().iter() {
            eprintln!("exhausted: {h}");
        }
        eprintln!(
            "sigkill phase: {} tries, {} ok, {} 5xx, {} connection errors, {} exhausted, {:.1} s",
            sent.tries.load(Ordering::Relaxed),
            sent.ok.load(Ordering::Relaxed),
            sent.unavailable.load(Ordering::Relaxed),
            sent.connect_errors.load(Ordering::Relaxed),
            sent.exhausted.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            sent.exhausted.load(Ordering::Relaxed),
            0,
            "no event ran out of retries"
        );
        assert!(
            victim.lock().unwrap().is_none(),
            "the node was killed midway"
        );
        assert_exact(&pg, &[&a, &b], &truth).await;

        // Phase 2: a node joins and gets its share from the others.
        let d = node(db, "d").ready(&client).await;
        let held = until_shards(&d, |s| s >= 80).await;
        assert!(held >= 80, "the new node took its share: {held}");
        assert_exact(&pg, &[&a, &b, &d], &truth).await;

        // Phase 3: SIGTERM one in the middle: its shards go to the others at once.
        let (scripts, more) = script("t", 24, 20);
        for (room, n) in more {
            *truth.get_mut(&room).unwrap() += n;
        }
        let bases = vec![a.base.clone(), b.base.clone(), d.base.clone()];
        let (a_log, b_log, d_log) = (a.log_handle(), b.log_handle(), d.log_handle());
        // Where this phase's lines begin in each log.
        let begun: Vec<usize> = [&a_log, &b_log, &d_log]
            .iter()
            .map(|log| log.lock().unwrap().len())
            .collect();
        let leaving = Arc::new(std::sync::Mutex::new(Some(d)));
        let stopped = leaving.clone();
        let sent = drive(bases, scripts, move || {
            let d = stopped.lock().unwrap().take().unwrap();
            std::thread::spawn(move || assert!(d.terminate().success()));
        })
        .await;
        for h in sent.history.lock().unwrap().iter() {
            eprintln!("exhausted: {h}");
        }
        for r in sent.refusals.lock().unwrap().iter() {
            eprintln!("5xx: {r}");
        }
        for ((name, log), begun) in [("a", &a_log), ("b", &b_log), ("d", &d_log)]
            .into_iter()
            .zip(begun)
        {
            let lines = log.lock().unwrap();
            std::fs::write(format!("/tmp/cluster-{name}.log"), lines.join("\n")).unwrap();
            if sent.unavailable.load(Ordering::Relaxed) > 0 {
                // CI keeps only what the test printed: this phase's
                // warnings, and what led to them.
                for line in lines[begun..].iter().filter(|l| {
                    l.contains("WARN") || l.contains("ERROR") || l.contains("did not answer")
                }) {
                    eprintln!("{name}: {line}");
                }
            }
        }
        eprintln!(
            "sigterm phase: {} tries, {} ok, {} 5xx, {} connection errors, {} exhausted",
            sent.tries.load(Ordering::Relaxed),
            sent.ok.load(Ordering::Relaxed),
            sent.unavailable.load(Ordering::Relaxed),
            sent.connect_errors.load(Ordering::Relaxed),
            sent.exhausted.load(Ordering::Relaxed),
        );
        assert_eq!(
            sent.exhausted.load(Ordering::Relaxed),
            0,
            "no event ran out of retries"
        );
        assert_eq!(
            sent.unavailable.load(Ordering::Relaxed),
            0,
            "a node that stops hands its rooms over without a 503"
        );
        assert_exact(&pg, &[&a, &b], &truth).await;
        drop((a, b)); // killed: see `Roomd`'s Drop
        pg.close().await.ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_writes_nothing_more() {
    common::on_postgres(async |db| {
        let (a, b) = two_nodes(db, "pa", "pb").await;
        let pg = Database::connect(&db.url).await.unwrap();
        // A room on `a`, with someone in.
        let room = room_of_first("paused");
        let first = join_of(&room, "p", 1);
        assert_eq!(a.send(&first).await, StatusCode::OK);

        let pid = libc::pid_t::try_from(a.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // `b` takes every shard once `a`'s lease runs out.
        let held = until_shards(&b, |s| s == 256).await;
        assert_eq!(held, 256);
        let second = join_of(&room, "p", 2);
        assert_eq!(b.send(&second).await, StatusCode::OK);

        // Reads queued at `a` while it is paused are answered after it wakes,
        // with what was committed meanwhile, never from its memory. (actix may
        // answer a request that waited out the pause 408 before roomd sees it.)
        let stale_reads: Vec<_> = (0..5)
            .map(|_| {
                let url = format!("{}/v1/rooms/{room}", a.base);
                tokio::spawn(async move {
                    let answer = reqwest::get(url).await.unwrap();
                    let status = answer.status();
                    let text = answer.text().await.unwrap();
                    (status, text)
                })
            })
            .collect();

        // `a` wakes with a request it took before it knew: it must not commit.
        let third = join_of(&room, "p", 3);
        let sending = {
            let base = a.base.clone();
            let token = sign_with(KEY, SECRET, &third);
            // As a peer sends it on its last hop, so `a` answers it itself.
            let hops = roomd::cluster::hop_header(SECRET.as_bytes(), roomd::cluster::MAX_HOPS, &token);
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{base}/v1/webhooks/livekit"))
                    .header("Authorization", token)
                    .header(roomd::cluster::FORWARDED_HEADER, hops)
                    .body(third)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let status = sending.await.unwrap().unwrap();
        assert_ne!(
            status,
            StatusCode::OK,
            "a node past its lease commits nothing"
        );
        let mut answered = 0;
        for read in stale_reads {
            let (status, text) = read.await.unwrap();
            if status == StatusCode::REQUEST_TIMEOUT {
                continue;
            }
            let view: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
            assert_eq!(
                view["participant_count"], 2,
                "a node past its lease reads no stale memory"
            );
            answered += 1;
        }
        eprintln!("{answered} of 5 reads queued during the pause were answered");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                a.logs()
                    .iter()
                    .any(|l| l.contains("commit refused by the fence")
                        || l.contains("no node holds this room's shard")
                        // Woken, it stepped the actor down before the
                        // event was applied, and then knew the shard gone.
                        || l.contains("another node owns the room's shard")),
                "the paused node refused the event itself (by the fence, or by knowing it lost the shard)"
            );
        }
        let truth = HashMap::from([(room.clone(), 2)]);
        until_shards(&a, |s| s == 128).await;
        assert_exact(&pg, &[&a, &b], &truth).await;
        drop((a, b)); // killed: see `Roomd`'s Drop
        pg.close().await.ok();
    })
    .await;
}

// An active room whose actor retired keeps its snapshot (so it stays
// listed); a node that loses the room's shard must drop it, or, when the
// shard comes back, it would show the room as it left it, not as the other
// node changed it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_comes_back_is_read_as_the_other_node_left_it() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let retire_at_once = [("ROOMD__ROOMS__IDLE_TIMEOUT_SECS", "0")];
        let a = node_with(db, "ba", &retire_at_once).ready(&client).await;
        let b = node_with(db, "bb", &retire_at_once).ready(&client).await;
        until_shards(&a, |s| s == 128).await;
        until_shards(&b, |s| s == 128).await;
        // A room on `b` (which holds the upper half, and gets it back after
        // a pause: `a` hands over its highest shards first), emptied.
        let (room, shard) = room_of_second("back");
        for body in [
            webhook::joined(&room, "RM_back", "PA_b1", "b1").body(),
            webhook::left(&room, "RM_back", "PA_b1", "b1").body(),
        ] {
            assert_eq!(b.send(&body).await, StatusCode::OK);
        }
        let admin = common::admin_token();
        let actor_gone = async || {
            let answer = client
                .get(format!("{}/v1/debug/actors/{room}", b.base))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            answer.status() == StatusCode::NOT_FOUND
        };
        common::until("the empty room's actor on b retires", actor_gone).await;
        assert_eq!(
            b.get(&format!("/v1/rooms/{room}"), None).await["status"],
            "active"
        );

        let pid = libc::pid_t::try_from(b.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        until_shards(&a, |s| s == 256).await;
        let finished = webhook::room_finished(&room, "RM_back").body();
        assert_eq!(a.send(&finished).await, StatusCode::OK);
        let taken = a.get("/v1/debug/cluster", Some(&admin)).await["map"]["shards"][shard as usize]
            ["epoch"]
            .as_i64()
            .unwrap();
        // Readers at `b` from before it wakes until its shard is back: not
        // one may see the room as `b` left it (the adversary saw `b`, just
        // woken, serve its kept snapshot until its first map read).
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let url = format!("{}/v1/rooms/{room}", b.base);
                let done = done.clone();
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut stale = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        let Ok(answer) = client.get(&url).send().await else {
                            continue;
                        };
                        if answer.status() != StatusCode::OK {
                            continue;
                        }
                        let view: serde_json::Value = answer.json().await.unwrap();
                        if view["status"] != "ended" {
                            stale.push(view);
                        }
                    }
                    stale
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        // `b` finds its shards gone, then claims its share again: the
        // room's shard under a newer epoch than `a`'s.
        let back = async || {
            let status = b.get("/v1/debug/cluster", Some(&admin)).await;
            let row = &status["map"]["shards"][shard as usize];
            status["owned_shards"] == 128
                && row["owner"] == "bb"
                && row["epoch"].as_i64().is_some_and(|e| e > taken)
        };
        common::until("the room's shard is back on b", back).await;
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            let stale = reader.await.unwrap();
            assert!(
                stale.is_empty(),
                "read from b as it left the room: {stale:?}"
            );
        }
        let view = b.get(&format!("/v1/rooms/{room}"), None).await;
        assert_eq!(view["status"], "ended", "read from b: {view}");
        drop((a, b)); // killed: see `Roomd`'s Drop
    })
    .await;
}

// A stopping owner that knows no next owner answers a forwarded webhook
// "no owner" after its shorter share of the wait; the node LiveKit sent it
// to waits out the rest of its own, and the event lands there (found by
// the adversary as 503s while a node joined under load: the next owner's
// load outlasted the old owner's share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_knows_no_successor_costs_no_503() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node(db, "na").ready(&client).await;
        let b = node_with(db, "nb", &[("ROOMD__CLUSTER__FORWARD_TIMEOUT_MS", "200")])
            .ready(&client)
            .await;
        until_shards(&a, |s| s == 128).await;
        until_shards(&b, |s| s == 128).await;
        let (room, shard) = room_of_second("heir");
        let first = join_of(&room, "h", 1);
        assert_eq!(b.send(&first).await, StatusCode::OK);

        // Hold the room's shard row: `b`, stopping, gives its shards up
        // first and then waits to release them in the database, knowing no
        // owner for the room meanwhile.
        let pg = Database::connect(&db.url).await.unwrap();
        let lock = locked(
            &pg,
            &format!("SELECT shard FROM cluster_shards WHERE shard = {shard} FOR UPDATE"),
        )
        .await;
        let pid = libc::pid_t::try_from(b.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        common::until("b gave its shards up", async || {
            owned_shards(&b).await == Some(0)
        })
        .await;
        let unlock = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            lock.rollback().await.unwrap();
        });
        let second = join_of(&room, "h", 2);
        assert_eq!(
            a.send(&second).await,
            StatusCode::OK,
            "sent to a, which asked b, which knew no owner"
        );
        unlock.await.unwrap();
        assert!(
            a.logs()
                .iter()
                .any(|l| l.contains("the room's owner gave it up and knows no other")),
            "a waited for the shard itself"
        );
        assert_exact(&pg, &[&a], &HashMap::from([(room, 2)])).await;
        drop((a, b)); // killed: see `Roomd`'s Drop
        pg.close().await.ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_owner_closed_costs_no_503() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node(db, "ra").ready(&client).await;
        // `b` is reached through a proxy that can cut a kept-alive connection.
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], port).into()).await;
        let relay_url = format!("http://127.0.0.1:{}", proxy.port);
        let b = Roomd::start_with(
            &db.url,
            &bind,
            &[
                ("ROOMD__CLUSTER__MODE", "postgres"),
                ("ROOMD__CLUSTER__NODE_ID", "rb"),
                ("ROOMD__CLUSTER__ADVERTISE_URL", &relay_url),
            ],
        )
        .ready(&client)
        .await;
        until_shards(&a, |s| s == 128).await;
        until_shards(&b, |s| s == 128).await;
        let (room, _) = room_of_second("kept");
        // Sent on from `a` to `b`, leaving `a` a pooled connection to `b`.
        assert_eq!(a.send(&join_of(&room, "r", 1)).await, StatusCode::OK);

        proxy.cut_next();
        assert_eq!(
            a.send(&join_of(&room, "r", 2)).await,
            StatusCode::OK,
            "a sends it again on a new connection; b never went away"
        );
        assert!(
            a.logs()
                .iter()
                .any(|l| l.contains("sending the webhook once more")),
            "the pooled connection was cut"
        );
        let pg = Database::connect(&db.url).await.unwrap();
        assert_exact(&pg, &[&a, &b], &HashMap::from([(room, 2)])).await;
        drop((a, b)); // killed: see `Roomd`'s Drop
        pg.close().await.ok();
    })
    .await;
}

/// Lease and heartbeat short enough that a test can outlast them.
const SHORT_LEASE: [(&str, &str); 2] = [
    ("ROOMD__CLUSTER__LEASE_TTL_MS", "1000"),
    ("ROOMD__CLUSTER__HEARTBEAT_MS", "200"),
];

// A node that takes over shards loads their rooms while it holds the
// heartbeat. On a large database that load outlasted the lease: the node
// gave up every shard the moment it had them, while the database still
// named it their owner (found by the adversary: 86 shards' rooms answered
// 503 on every node for over ten minutes). The load now keeps the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_takeover_outlasts_its_lease_keeps_the_shards() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node_with(db, "la", &SHORT_LEASE).ready(&client).await;
        let mut b = node_with(db, "lb", &SHORT_LEASE).ready(&client).await;
        until_shards(&a, |s| s == 128).await;
        until_shards(&b, |s| s == 128).await;
        let (room, _) = room_of_second("long");
        let first = join_of(&room, "l", 1);
        assert_eq!(b.send(&first).await, StatusCode::OK);

        // The rooms table locked: `a`'s load of `b`'s shards waits on it
        // for more than twice the lease.
        let pg = Database::connect(&db.url).await.unwrap();
        let lock = locked(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
        let pid = libc::pid_t::try_from(b.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(
            b.wait_for_exit(Duration::from_secs(30))
                .is_some_and(|status| status.success()),
            "b stopped cleanly"
        );
        common::until("a began to load b's shards", async || {
            a.logs().iter().any(|l| l.contains("released shards"))
                || owned_shards(&a).await.is_some_and(|s| s > 128)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        lock.rollback().await.unwrap();

        assert_eq!(until_shards(&a, |s| s == 256).await, 256);
        let second = join_of(&room, "l", 2);
        assert_eq!(a.send(&second).await, StatusCode::OK);
        let logs = a.logs();
        assert!(
            logs.iter().any(|l| l.contains("took shards")),
            "a loaded b's shards"
        );
        assert!(
            !logs.iter().any(|l| l.contains("gave up every shard")),
            "a kept its lease while it loaded: {logs:#?}"
        );
        assert_exact(&pg, &[&a], &HashMap::from([(room, 2)])).await;
        drop(a);
        pg.close().await.ok();
    })
    .await;
}

// A node whose lease lapsed (here: a heartbeat held up longer than the
// lease) gives up every shard in memory, but the database still names it
// their owner and its next heartbeat renews the lease, so no other node's
// claim can take them. It must let go of them itself, or their rooms have
// no owner for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_gave_its_shards_up_on_a_lapsed_lease_takes_them_back() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node_with(db, "ga", &SHORT_LEASE).ready(&client).await;
        until_shards(&a, |s| s == 256).await;
        let room = "lapsed";
        let first = join_of(room, "g", 1);
        assert_eq!(a.send(&first).await, StatusCode::OK);

        // The heartbeat's renewal waits on the locked node table for more
        // than twice the lease, so `a` finds its lease lapsed after it.
        let pg = Database::connect(&db.url).await.unwrap();
        let lock = locked(&pg, "LOCK TABLE cluster_nodes IN ACCESS EXCLUSIVE MODE").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        lock.rollback().await.unwrap();
        common::until("a gave its shards up", async || {
            a.logs().iter().any(|l| l.contains("gave up every shard"))
        })
        .await;

        assert_eq!(until_shards(&a, |s| s == 256).await, 256);
        let second = join_of(room, "g", 2);
        assert_eq!(a.send(&second).await, StatusCode::OK);
        assert_exact(&pg, &[&a], &HashMap::from([(room.to_string(), 2)])).await;
        drop(a);
        pg.close().await.ok();
    })
    .await;
}

/// A transaction holding the lock that `sql` takes, until it is rolled back.
async fn locked(pg: &DatabaseConnection, sql: &str) -> sea_orm::DatabaseTransaction {
    let txn = pg.begin().await.unwrap();
    txn.execute_unprepared(sql).await.unwrap();
    txn
}

/// The shards `node` holds by the database.
async fn shards_of(pg: &DatabaseConnection, node: &str) -> Vec<u32> {
    pg.query_all_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT shard FROM cluster_shards WHERE owner = $1 ORDER BY shard",
        [node.into()],
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get::<i32>("", "shard").unwrap() as u32)
    .collect()
}

// A node whose heartbeat is busy (here: handing shards to a node that
// joined, held up by a row lock; in the wild: loading a takeover's rooms)
// still finds where a room went when its owner stops: requests read the map
// themselves, not at the next heartbeat (found by the adversary: 503s after
// a full wait while nodes loaded under repeated joins and stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_busy_in_its_heartbeat_still_routes_to_a_rooms_new_owner() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        // A lease that outlasts the held-up heartbeat.
        let lease = [("ROOMD__CLUSTER__LEASE_TTL_MS", "30000")];
        let a = node_with(db, "ba", &lease).ready(&client).await;
        let mut b = node_with(db, "bb", &lease).ready(&client).await;
        let c = node_with(db, "bc", &lease).ready(&client).await;
        for n in [&a, &b, &c] {
            until_shards(n, |s| (80..=86).contains(&s)).await;
        }
        let pg = Database::connect(&db.url).await.unwrap();
        // `c` hands its highest shards over when `d` joins; one of them
        // locked holds `c`'s heartbeat in that release.
        let highest = *shards_of(&pg, "bc").await.last().unwrap();
        let lock = locked(
            &pg,
            &format!("SELECT shard FROM cluster_shards WHERE shard = {highest} FOR UPDATE"),
        )
        .await;
        let d = node_with(db, "bd", &lease).ready(&client).await;
        until_shards(&a, |s| s == 64).await;
        until_shards(&b, |s| s == 64).await;
        assert_eq!(
            until_shards(&c, |s| s == 64).await,
            64,
            "c gave its excess up"
        );

        let held_by_b = shards_of(&pg, "bb").await;
        let room = (0..)
            .map(|i| format!("moved{i}"))
            .find(|name| held_by_b.contains(&roomd::shard::shard_of(name, 256)))
            .unwrap();
        let first = join_of(&room, "m", 1);
        assert_eq!(b.send(&first).await, StatusCode::OK);

        let pid = libc::pid_t::try_from(b.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(
            b.wait_for_exit(Duration::from_secs(30))
                .is_some_and(|status| status.success()),
            "b stopped cleanly"
        );
        common::until("a and d took b's shards", async || {
            shards_of(&pg, "bb").await.is_empty()
                && shards_of(&pg, "ba").await.len() + shards_of(&pg, "bd").await.len()
                    == 256 - shards_of(&pg, "bc").await.len()
        })
        .await;

        // `c`'s map is from before `b` stopped, and its heartbeat is still
        // held: it sends the event to `b`, finds it gone, and must look up
        // the new owner itself.
        let second = join_of(&room, "m", 2);
        assert_eq!(c.send(&second).await, StatusCode::OK);
        lock.rollback().await.unwrap();
        assert_exact(&pg, &[&a, &c, &d], &HashMap::from([(room, 2)])).await;
        drop((a, c, d));
        pg.close().await.ok();
    })
    .await;
}

// A joining node's share is released by the others each at its own
// heartbeat. It claimed the first release and loaded those rooms holding its
// heartbeat, so shards released after that claim had no owner until the load
// ended (found by the adversary: 22-64 shards ownerless for 4-9 s per join on
// 10,000-18,000 rooms, 108-992 503s). It now claims them while it loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_claims_its_whole_share_while_it_loads_the_first_part() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let (a, b) = two_nodes(db, "ja", "jb").await;
        let (room, shard) = room_of_second("joined");
        assert!(shard >= 214, "a shard b hands over: {shard}");
        let first = join_of(&room, "j", 1);
        assert_eq!(b.send(&first).await, StatusCode::OK);

        // The rooms table locked holds the joining node's load; b's
        // highest shard locked holds b's hand-over until a's is claimed.
        let pg = Database::connect(&db.url).await.unwrap();
        let rooms_lock = locked(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
        let row_lock = locked(
            &pg,
            "SELECT shard FROM cluster_shards WHERE shard = 255 FOR UPDATE",
        )
        .await;
        // Its load waits on the lock, not cut short by a statement timeout.
        let c = node_with(
            db,
            "jc",
            &[("ROOMD__WRITER__TRANSACTION_TIMEOUT_MS", "60000")],
        )
        .ready(&client)
        .await;
        until_shards(&a, |s| s == 86).await;
        assert!(
            until_shards(&c, |s| s >= 40).await >= 40,
            "c claimed a's part"
        );
        row_lock.rollback().await.unwrap();
        let held = until_shards(&c, |s| s >= 80).await;
        assert!(held >= 80, "c claimed b's part while loading a's: {held}");
        // Still loading (the rooms are locked): the claim's log line comes
        // after the shards are served, so it is waited for, not assumed
        // (a clean-clone CI run read the logs before it arrived).
        common::until("c logs the claim it made while loading", async || {
            c.logs()
                .iter()
                .any(|l| l.contains("claimed shards released while loading others"))
        })
        .await;

        rooms_lock.rollback().await.unwrap();
        let second = join_of(&room, "j", 2);
        assert_eq!(a.send(&second).await, StatusCode::OK);
        assert_exact(&pg, &[&a, &b, &c], &HashMap::from([(room, 2)])).await;
        drop((a, b, c));
        pg.close().await.ok();
    })
    .await;
}

// Loads stuck behind a lock (here: the rooms table, under cold rooms'
// first events) held every connection of the pool the lease was renewed
// from, so every node's lease lapsed at once and each gave up and reloaded
// every shard (found by the adversary). The cluster has its own pool now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_stuck_behind_a_lock_do_not_cost_the_lease() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let mut settings = SHORT_LEASE.to_vec();
        settings.push(("ROOMD__DATABASE__MAX_CONNECTIONS", "2"));
        let a = node_with(db, "sa", &settings).ready(&client).await;
        until_shards(&a, |s| s == 256).await;

        let pg = Database::connect(&db.url).await.unwrap();
        let lock = locked(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
        // Four cold rooms: their loads wait on the lock, on both connections.
        let sends: Vec<_> = (0..4)
            .map(|i| {
                let base = a.base.clone();
                let body = webhook::joined(&format!("stuck{i}"), "RM_s", "PA_s", "s")
                    .id(&format!("EV_s{i}"))
                    .body();
                tokio::spawn(async move {
                    reqwest::Client::new()
                        .post(format!("{base}/v1/webhooks/livekit"))
                        .header("Authorization", sign_with(KEY, SECRET, &body))
                        .body(body)
                        .send()
                        .await
                        .map_or(StatusCode::BAD_GATEWAY, |r| r.status())
                })
            })
            .collect();
        // Past twice the lease.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        lock.rollback().await.unwrap();
        let mut truth = HashMap::new();
        for (i, send) in sends.into_iter().enumerate() {
            if send.await.unwrap() == StatusCode::OK {
                truth.insert(format!("stuck{i}"), 1);
            }
        }
        let logs = a.logs();
        assert!(
            !logs.iter().any(|l| l.contains("gave up every shard")),
            "the lease held while loads waited: {:#?}",
            logs.iter()
                .filter(|l| l.contains("WARN"))
                .collect::<Vec<_>>()
        );
        assert_eq!(owned_shards(&a).await, Some(256));
        assert_exact(&pg, &[&a], &truth).await;
        drop(a);
        pg.close().await.ok();
    })
    .await;
}

// A takeover's load that failed (the database stalled past the statement
// timeout) left the shards served with none of their rooms loaded, for good:
// a room got its actor only with its next event (found by the adversary:
// 64 shards, 6,456 rooms without an actor 30 s after the stall). The load
// is tried again at the next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_whose_load_failed_loads_again() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let a = node(db, "fa").ready(&client).await;
        until_shards(&a, |s| s == 256).await;
        let (room, shard) = room_of_second("reload");
        assert!(shard >= 128);
        let first = join_of(&room, "r", 1);
        assert_eq!(a.send(&first).await, StatusCode::OK);

        // a's hand-over to b held until the rooms table is locked; b's
        // statements time out after 1 s, so its load of them fails.
        let pg = Database::connect(&db.url).await.unwrap();
        let row_lock = locked(
            &pg,
            "SELECT shard FROM cluster_shards WHERE shard = 255 FOR UPDATE",
        )
        .await;
        let b = node_with(
            db,
            "fb",
            &[("ROOMD__WRITER__TRANSACTION_TIMEOUT_MS", "1000")],
        )
        .ready(&client)
        .await;
        let rooms_lock = locked(&pg, "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE").await;
        row_lock.rollback().await.unwrap();
        common::until("b's load failed", async || {
            b.logs().iter().any(|l| l.contains("statement timeout"))
        })
        .await;
        rooms_lock.rollback().await.unwrap();

        // No event for the room: only a load gives it an actor on b.
        let admin = common::admin_token();
        common::until("b loaded the room", async || {
            client
                .get(format!("{}/v1/debug/actors/{room}", b.base))
                .bearer_auth(&admin)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        assert_exact(&pg, &[&a, &b], &HashMap::from([(room, 1)])).await;
        drop((a, b));
        pg.close().await.ok();
    })
    .await;
}

/// The fence at the SQL level, on two connections, in both orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_refuses_a_commit_from_an_old_epoch_in_both_lock_orders() {
    common::on_postgres(async |db| {
        let pool = roomd::store::connect(
            &roomd::config::DatabaseSettings {
                url: db.url.clone(),
                ..roomd::config::Settings::default().database
            },
            5000,
        )
        .await
        .unwrap();
        roomd::store::migrate(&pool).await.unwrap();
        let shards = 4;
        roomd::cluster::table::ensure_shards(&pool, shards)
            .await
            .unwrap();
        for node in ["old", "new"] {
            roomd::cluster::table::register(&pool, node, uuid::Uuid::new_v4(), "http://x", 60_000)
                .await
                .unwrap();
        }
        let claimed = roomd::cluster::table::claim(&pool, "old", 4).await.unwrap();
        let epoch = |shard| claimed.iter().find(|(s, _)| *s == shard).unwrap().1;
        let writer = Writer::start(
            pool.clone(),
            &WriterSettings {
                max_batch: 16,
                queue_capacity: 16,
                transactions: 2,
                transaction_timeout_ms: 10_000,
            },
            Some(Arc::from("old")),
            Arc::new(Metrics::new()),
        );
        let commit = |shard: u32, id: &str| {
            let writer = writer.clone();
            let event =
                EventRecord::of_reconcile("fenced", None, None, chrono::Utc::now(), "applied");
            let event = EventRecord {
                event_id: Some(id.into()),
                ..event
            };
            let fence = Fence {
                shard,
                epoch: epoch(shard),
            };
            async move { writer.commit(event, Changes::default(), Some(fence)).await }
        };
        assert!(commit(0, "EV_f0").await.is_ok(), "the owner's commit lands");

        // Order 1: the takeover is in flight (uncommitted) when the commit
        // checks its fence: the check waits for it, then finds the epoch moved.
        let takeover = pool.begin().await.unwrap();
        takeover
            .execute_unprepared(
                "UPDATE cluster_shards SET owner = 'new', epoch = epoch + 1 WHERE shard = 1",
            )
            .await
            .unwrap();
        let late = tokio::spawn(commit(1, "EV_f1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        takeover.commit().await.unwrap();
        assert!(
            matches!(
                late.await.unwrap(),
                Err(StoreError::Fenced { shard: 1, .. })
            ),
            "a commit under the old epoch after the takeover is refused"
        );

        // Order 2: the commit holds its fence first: the takeover skips the
        // shard (or waits), so the commit lands before the new epoch exists.
        let holder = pool.begin().await.unwrap();
        holder
            .execute_unprepared("SELECT 1 FROM cluster_shards WHERE shard = 2 FOR SHARE")
            .await
            .unwrap();
        sea_orm::ConnectionTrait::execute_unprepared(
            &pool,
            "UPDATE cluster_nodes SET lease_until = now() WHERE node_id = 'old'",
        )
        .await
        .unwrap();
        let taken = roomd::cluster::table::claim(&pool, "new", 4).await.unwrap();
        assert!(
            !taken.iter().any(|(s, _)| *s == 2),
            "a takeover does not take a shard under an in-flight commit: {taken:?}"
        );
        holder.commit().await.unwrap();
        let taken = roomd::cluster::table::claim(&pool, "new", 4).await.unwrap();
        assert!(
            taken.iter().any(|(s, _)| *s == 2),
            "then it does: {taken:?}"
        );
        assert!(matches!(
            commit(2, "EV_f2").await,
            Err(StoreError::Fenced { shard: 2, .. })
        ));
        assert!(matches!(
            commit(3, "EV_f3").await,
            Err(StoreError::Fenced { shard: 3, .. })
        ));
        let stored = pool
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT event_id FROM webhook_events ORDER BY event_id",
            ))
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "only the owner's first commit is in");
        drop(writer);
        pool.close().await.ok();
    })
    .await;
}

/// Reads of another node's room: the list from what the owner committed,
/// the live stream passed through from the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_reads_of_another_nodes_room() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let (a, b) = two_nodes(db, "ra", "rb").await;
        let room = room_of_first("lobby");
        let join = |sid: &str, identity: &str| {
            webhook::joined(&room, "RM_lobby", sid, identity)
                .id(&format!("EV_{sid}"))
                .body()
        };
        assert_eq!(
            b.send(&join("PA_1", "ann")).await,
            StatusCode::OK,
            "forwarded to `a`"
        );

        let token = common::join_token(&room, "viewer");
        let list = b
            .get(&format!("/v1/rooms/{room}/participants"), Some(&token))
            .await;
        assert_eq!(list["participant_count"], 1, "{list}");
        assert_eq!(list["participants"][0]["identity"], "ann", "{list}");
        // Counts by kind as the owner has them, from every read at `b` (they
        // were empty from the database: found by the adversary).
        let view = b.get(&format!("/v1/rooms/{room}"), None).await;
        assert_eq!(view["counts_by_kind"]["standard"], 1, "{view}");
        let views = b.get(&format!("/v1/rooms?names={room}"), None).await;
        assert_eq!(
            views["rooms"][0]["counts_by_kind"]["standard"], 1,
            "{views}"
        );
        let live = b.get("/v1/rooms", None).await;
        assert_eq!(live["rooms"][0]["counts_by_kind"]["standard"], 1, "{live}");

        // A read a node already sent on is answered where it lands, never sent
        // on again (two maps that disagree must not bounce it).
        let forwards = async |node: &Roomd| {
            let status = node
                .get("/v1/debug/cluster", Some(&common::admin_token()))
                .await;
            status["forwards"].as_u64().unwrap()
        };
        let before = forwards(&b).await;
        let path = format!("/v1/rooms/{room}/participants");
        let hop = roomd::cluster::hop_header(SECRET.as_bytes(), roomd::cluster::MAX_HOPS, &path);
        let list: serde_json::Value = client
            .get(format!("{}{path}", b.base))
            .bearer_auth(&token)
            .header(roomd::cluster::FORWARDED_HEADER, hop)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["participant_count"], 1,
            "answered from the database: {list}"
        );
        assert_eq!(forwards(&b).await, before, "and not sent on");

        let mut stream = client
            .get(format!(
                "{}/v1/rooms/{room}/stream?access_token={token}",
                b.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let mut seen = String::new();
        let mut next_event = async || loop {
            if let Some(end) = seen.find("\n\n") {
                let block: String = seen.drain(..end + 2).collect();
                if !block.starts_with(':') {
                    return block;
                }
                continue;
            }
            // A guard against a hung test, not a speed requirement.
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
                .await
                .expect("an event within 20 s")
                .unwrap()
                .expect("the stream is open");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        };
        let snapshot = next_event().await;
        assert!(
            snapshot.contains("event: snapshot") && snapshot.contains("ann"),
            "{snapshot}"
        );
        assert_eq!(b.send(&join("PA_2", "bob")).await, StatusCode::OK);
        let update = next_event().await;
        assert!(
            update.contains("event: update") && update.contains("bob"),
            "{update}"
        );
        assert!(
            !b.logs()
                .iter()
                .chain(a.logs().iter())
                .any(|l| l.contains(&token)),
            "no node logs a reader's token"
        );

        // Only a node can say a request was forwarded: a client's header (here
        // claiming the last hop) counts for nothing.
        for claimed in ["2", "2.AAAA", "garbage", "-1"] {
            let body = join(&format!("PA_h{claimed}"), "hal");
            let status = client
                .post(format!("{}/v1/webhooks/livekit", b.base))
                .header("Authorization", sign_with(KEY, SECRET, &body))
                .header(roomd::cluster::FORWARDED_HEADER, claimed)
                .body(body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::OK, "x-roomd-forwarded: {claimed}");
        }

        // The owner gone: the list comes from what it committed.
        drop(stream);
        a.kill_9();
        let list = b
            .get(&format!("/v1/rooms/{room}/participants"), Some(&token))
            .await;
        assert_eq!(list["participant_count"], 3, "ann, bob and hal: {list}");
        drop(b);
    })
    .await;
}

/// The shard count is the database's: a node configured otherwise would
/// put rooms in other shards than its peers, so it refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_shard_count_refuses_to_start() {
    common::on_postgres(async |db| {
        let first = node(db, "s1").ready(&reqwest::Client::new()).await;
        let said = refused(db, &[("ROOMD__CLUSTER__SHARDS", "64")]);
        assert!(said.contains("cluster.shards = 256"), "{said}");
        drop(first);
    })
    .await;
}

/// A node id is one process's: a second live process under it refuses to
/// start, while a node restarted under its id after a crash waits out its
/// old lease and takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_is_held_by_one_live_process() {
    common::on_postgres(async |db| {
        let client = reqwest::Client::new();
        let first = node(db, "same").ready(&client).await;
        let said = refused(db, &[("ROOMD__CLUSTER__NODE_ID", "same")]);
        assert!(said.contains("is held by another live node"), "{said}");
        assert_eq!(
            owned_shards(&first).await,
            Some(256),
            "the first keeps its shards"
        );

        // Paused past its lease while a new process takes its id, it stops for
        // good once it wakes (the new one is the node now).
        let mut first = first;
        let pid = libc::pid_t::try_from(first.pid()).unwrap();
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let second = node(db, "same").ready(&client).await;
        assert_eq!(until_shards(&second, |s| s == 256).await, 256);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let exited = first
            .wait_for_exit(Duration::from_secs(30))
            .expect("the superseded process stops");
        assert!(
            !exited.success(),
            "and says it did not end well: {exited:?}"
        );
        drop(first);

        second.kill_9();
        let again = node(db, "same").ready(&client).await;
        let held = until_shards(&again, |s| s == 256).await;
        assert_eq!(
            held, 256,
            "restarted under its id, it takes the shards back"
        );
        let body = webhook::joined("back", "RM_back", "PA_b", "bo").body();
        assert_eq!(again.send(&body).await, StatusCode::OK);
        drop(again);
    })
    .await;
}

/// Nodes started together on an empty database migrate one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_at_once_on_an_empty_database_all_come_up() {
    common::on_postgres(async |db| {
        let nodes = std::thread::scope(|s| {
            let started: Vec<_> = ["e1", "e2", "e3"]
                .map(|id| s.spawn(|| node(db, id)))
                .into_iter()
                .collect();
            started
                .into_iter()
                .map(|h| h.join().expect("every node comes up"))
                .collect::<Vec<_>>()
        });
        let client = reqwest::Client::new();
        for n in nodes {
            n.ready(&client).await;
        }
    })
    .await;
}
