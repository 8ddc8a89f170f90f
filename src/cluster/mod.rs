//! Several nodes on one PostgreSQL (`cluster.mode = "postgres"`).
//!
//! Each room belongs to a shard (`crate::shard`), each shard to at most one
//! node at a time. PostgreSQL's transactions and row locks do the agreeing;
//! there is no other consensus:
//! - a node holds a lease (`cluster_nodes.lease_until`), renewed every
//!   heartbeat with the database's clock;
//! - it claims shards whose owner's lease ran out, up to a fair share, each
//!   claim raising the shard's epoch (`FOR UPDATE SKIP LOCKED`), then loads
//!   those shards' rooms;
//! - every commit proves the epoch it was loaded under (`store::Writer`), so
//!   a node that lost a shard without noticing (paused, cut off) writes
//!   nothing more for it;
//! - a node above its share (another joined) releases the excess, and one
//!   that stops releases all of its shards at once; the others wake on
//!   `NOTIFY` and claim them.
//!
//! A node that does not own a room sends its webhooks and reads on to the
//! owner (`forward`).

mod forward;
pub mod table;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub use forward::{FORWARDED_HEADER, Forwarded, MAX_HOPS, NO_OWNER_HEADER, hop_header};
pub use table::{NodeRow, ShardRow};

use crate::config::ClusterSettings;
use crate::metrics::Metrics;
use crate::room::Supervisor;
use crate::shard::Ownership;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "the database was set up with cluster.shards = {stored}, this node has {configured}: every node must use the same count"
    )]
    ShardCount { stored: u32, configured: u32 },
    #[error(
        "cluster.node_id {node:?} is held by another live node: every node needs its own id (set cluster.node_id, or leave it empty for a generated one)"
    )]
    NodeIdInUse { node: String },
    #[error("another process registered as node {node:?} after this one's lease ran out")]
    Superseded { node: String },
}

/// Where a room's events and reads go from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the room.
    Here,
    /// Another live node does, at this URL.
    Owner { node: String, url: String },
    /// No live node owns it now (a takeover is under way).
    Unknown,
}

/// The shard map as last read from the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardMap {
    /// Which read this is: a read that began later holds a newer map.
    #[serde(skip)]
    read: u64,
    pub read_at: Option<DateTime<Utc>>,
    pub nodes: Vec<NodeRow>,
    pub shards: Vec<ShardRow>,
}

impl ShardMap {
    fn owner(&self, shard: u32) -> Option<&NodeRow> {
        let row = self.shards.get(shard as usize)?;
        let owner = row.owner.as_deref()?;
        self.nodes.iter().find(|n| n.node_id == owner && n.live)
    }
}

/// What admins see of the cluster from this node.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node_id: String,
    pub advertise_url: String,
    pub shards: u32,
    pub owned_shards: usize,
    pub lease_valid: bool,
    pub forwards: u64,
    pub fence_refusals: u64,
    pub map: ShardMap,
}

pub struct Cluster {
    db: DatabaseConnection,
    node: Arc<str>,
    incarnation: Uuid,
    settings: ClusterSettings,
    ownership: Arc<Ownership>,
    map: RwLock<Arc<ShardMap>>,
    /// Reads of the map begun, numbering them.
    map_reads: AtomicU64,
    /// Asks for the map to be read again now, apart from the heartbeat
    /// (which may be busy loading a takeover's rooms for seconds).
    refresh: Notify,
    /// Bumped whenever the map is read again: requests waiting for an owner
    /// look again.
    map_version: watch::Sender<u64>,
    /// Wakes the heartbeat early (a peer released shards, or we must claim).
    wake: Notify,
    /// Set when another process took this node's id: this one must go.
    superseded: watch::Sender<bool>,
    leaving: AtomicBool,
    /// Shards served whose rooms' load failed: loaded again next heartbeat.
    unloaded: std::sync::Mutex<HashSet<u32>>,
    /// Wakes a takeover's load, which a node that leaves abandons.
    leave_started: Notify,
    /// Set on shutdown: `listen` lets its connection go while the runtime
    /// still runs (dropped later, sqlx's listener panics).
    closed: watch::Sender<bool>,
    /// Held by a heartbeat and by `leave`, so no renewal lands after the
    /// lease was ended.
    ticking: tokio::sync::Mutex<()>,
    forwards: AtomicU64,
    client: reqwest::Client,
    stream_client: reqwest::Client,
    /// The API secret: signs the hop header between nodes.
    secret: Vec<u8>,
    metrics: Arc<Metrics>,
}

/// The channel peers `NOTIFY` when they release shards.
const CHANNEL: &str = "roomd_cluster";

impl Cluster {
    /// Registers this node and checks the shard count; claims nothing yet.
    pub async fn join(
        db: DatabaseConnection,
        settings: &ClusterSettings,
        secret: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ClusterError> {
        let node: Arc<str> = if settings.node_id.is_empty() {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "roomd".into());
            format!("{host}-{}", &Uuid::new_v4().simple().to_string()[..8]).into()
        } else {
            settings.node_id.as_str().into()
        };
        let stored = table::ensure_shards(&db, settings.shards).await?;
        if stored != settings.shards {
            return Err(ClusterError::ShardCount {
                stored,
                configured: settings.shards,
            });
        }
        let incarnation = Uuid::new_v4();
        // The id may still be leased by this node's previous run (killed a
        // moment ago): that lease runs out within a TTL. One that is still
        // renewed after that belongs to another live process.
        let give_up =
            Instant::now() + Duration::from_millis(settings.lease_ttl_ms + settings.heartbeat_ms);
        while !table::register(
            &db,
            &node,
            incarnation,
            &settings.advertise_url,
            settings.lease_ttl_ms,
        )
        .await?
        {
            if Instant::now() > give_up {
                return Err(ClusterError::NodeIdInUse {
                    node: node.to_string(),
                });
            }
            tracing::info!(node = %node, "node id still leased (a previous run?); waiting for the lease to run out");
            tokio::time::sleep(Duration::from_millis(settings.heartbeat_ms)).await;
        }
        // A restart under the same node id must not inherit its previous
        // life's epochs: that process may still be running (paused).
        let released = table::release_all(&db, &node).await?;
        if released > 0 {
            tracing::info!(node = %node, shards = released, "released the shards a previous run of this node held");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.forward_timeout_ms))
            // Below the peers' keep-alive (actix-web's 5 s): a connection
            // the owner closes idle must not be reused as it closes.
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .expect("a reqwest client without custom TLS builds");
        let stream_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.forward_timeout_ms))
            .build()
            .expect("a reqwest client without custom TLS builds");
        tracing::info!(node = %node, shards = settings.shards, advertise_url = %settings.advertise_url, "joined the cluster");
        Ok(Arc::new(Self {
            db,
            ownership: Arc::new(Ownership::new(settings.shards)),
            node,
            incarnation,
            settings: settings.clone(),
            map: RwLock::default(),
            map_reads: AtomicU64::new(0),
            refresh: Notify::new(),
            map_version: watch::channel(0).0,
            wake: Notify::new(),
            superseded: watch::channel(false).0,
            leaving: AtomicBool::new(false),
            leave_started: Notify::new(),
            unloaded: std::sync::Mutex::default(),
            closed: watch::channel(false).0,
            ticking: tokio::sync::Mutex::new(()),
            forwards: AtomicU64::new(0),
            client,
            stream_client,
            secret: secret.as_bytes().to_vec(),
            metrics,
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Resolves when another process has taken this node's id (this one was
    /// paused past its lease meanwhile): that one is the node now, and this
    /// one should stop serving.
    pub async fn superseded(&self) {
        let mut superseded = self.superseded.subscribe();
        let _ = superseded.wait_for(|s| *s).await;
    }

    pub fn is_superseded(&self) -> bool {
        *self.superseded.borrow()
    }

    /// The shards this node holds; the supervisor and the writer's fence read it.
    pub fn ownership(&self) -> Arc<Ownership> {
        self.ownership.clone()
    }

    /// Where `room` goes from here.
    pub fn route(&self, room: &str) -> Route {
        if self.ownership.owns(room) {
            return Route::Here;
        }
        let map = self.map.read().expect("shard map lock").clone();
        match map.owner(self.ownership.shard_of(room)) {
            Some(owner) if owner.node_id != *self.node => Route::Owner {
                node: owner.node_id.clone(),
                url: owner.advertise_url.clone(),
            },
            _ => Route::Unknown,
        }
    }

    /// `route`, waiting up to `within` for a takeover under way to finish:
    /// a short wait here saves LiveKit a retry a second later.
    pub async fn route_within(&self, room: &str, within: Duration) -> Route {
        self.route_past(room, None, within).await
    }

    /// `route_within`, where a route to `failed` (a node that did not
    /// answer) counts as unsettled too.
    pub async fn route_past(&self, room: &str, failed: Option<&str>, within: Duration) -> Route {
        let deadline = tokio::time::Instant::now() + within;
        let mut version = self.map_version.subscribe();
        loop {
            let route = self.route(room);
            let settled = match &route {
                Route::Here => true,
                Route::Owner { node, .. } => Some(node.as_str()) != failed,
                Route::Unknown => false,
            };
            if settled {
                return route;
            }
            self.wake.notify_one();
            self.refresh.notify_one();
            if tokio::time::timeout_at(deadline, version.changed())
                .await
                .is_err()
            {
                return self.route(room);
            }
        }
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node_id: self.node.to_string(),
            advertise_url: self.settings.advertise_url.clone(),
            shards: self.settings.shards,
            owned_shards: self.ownership.len(),
            lease_valid: self.lease_valid(),
            forwards: self.forwards.load(Ordering::Relaxed),
            fence_refusals: self.metrics.fence_refusals.get(),
            map: (**self.map.read().expect("shard map lock")).clone(),
        }
    }

    fn lease_valid(&self) -> bool {
        self.ownership.lease_valid()
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.settings.lease_ttl_ms)
    }

    /// Takes this node's first share (so `/readyz` means "serving"), then
    /// keeps the lease and the share in the background.
    pub async fn start(self: &Arc<Self>, supervisor: Supervisor) -> Result<(), ClusterError> {
        self.tick(&supervisor).await?;
        supervisor.mark_recovered();
        let cluster = self.clone();
        actix::spawn(async move { cluster.run(supervisor).await });
        let cluster = self.clone();
        actix::spawn(async move { cluster.listen().await });
        let cluster = self.clone();
        actix::spawn(async move { cluster.refresh_map().await });
        Ok(())
    }

    /// Reads the map whenever a request finds its room's owner unsettled or
    /// a peer's shards moved, so routing does not wait for a heartbeat that
    /// is loading a takeover's rooms.
    async fn refresh_map(self: Arc<Self>) {
        loop {
            self.refresh.notified().await;
            if let Err(err) = self.read_map().await {
                tracing::debug!(node = %self.node, error = %crate::telemetry::chain(&err), "could not read the shard map");
            }
            // However many requests wait, at most one read per 50 ms.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run(self: Arc<Self>, supervisor: Supervisor) {
        let heartbeat = Duration::from_millis(self.settings.heartbeat_ms);
        loop {
            // Early when woken, and never sooner than every 50 ms.
            let _ = tokio::time::timeout(heartbeat, self.wake.notified()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(err) = self.tick(&supervisor).await {
                tracing::warn!(node = %self.node, error = %crate::telemetry::chain(&err), "cluster heartbeat failed");
            }
            if !self.lease_valid() && !self.ownership.is_empty() {
                // The others may have taken our shards by now; the fence
                // refuses our writes anyway, but reads must not serve
                // rooms we may no longer have.
                let lost: HashSet<u32> = self.ownership.clear().into_iter().collect();
                tracing::warn!(node = %self.node, shards = lost.len(), "lease not renewed in time; gave up every shard");
                self.step_down(&supervisor, &lost);
            }
        }
    }

    /// Wakes the heartbeat when a peer releases shards.
    async fn listen(self: Arc<Self>) {
        use sea_orm::sqlx::postgres::PgListener;
        loop {
            let pool = self.db.get_postgres_connection_pool();
            match PgListener::connect_with(pool).await {
                Ok(mut listener) => {
                    if listener.listen(CHANNEL).await.is_ok() {
                        let mut closed = self.closed.subscribe();
                        loop {
                            tokio::select! {
                                got = listener.recv() => if got.is_err() { break },
                                _ = closed.wait_for(|c| *c) => return,
                            }
                            self.wake.notify_one();
                            self.refresh.notify_one();
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "cannot LISTEN for cluster changes; polling only")
                }
            }
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One heartbeat: renew the lease, read the map, give up what moved,
    /// claim up to the fair share or release what is past it.
    async fn tick(&self, supervisor: &Supervisor) -> Result<(), ClusterError> {
        let _ticking = self.ticking.lock().await;
        if self.leaving.load(Ordering::Acquire) {
            // Gone from the cluster: only the map is read, so requests still
            // arriving here find the new owners.
            self.read_map().await?;
            return Ok(());
        }
        let sent = Instant::now();
        let renewed = table::renew(
            &self.db,
            &self.node,
            self.incarnation,
            &self.settings.advertise_url,
            self.settings.lease_ttl_ms,
        )
        .await?;
        if renewed == table::Renewed::Superseded {
            // Paused past the lease while a new process took this id: that
            // one is the node now; this one serves no room of its own again.
            self.leaving.store(true, Ordering::Release);
            let owned: HashSet<u32> = self.ownership.clear().into_iter().collect();
            self.step_down(supervisor, &owned);
            self.metrics.owned_shards.set(0);
            self.superseded.send_replace(true);
            return Err(ClusterError::Superseded {
                node: self.node.to_string(),
            });
        }
        // The lease is extended here only once the shards others took are
        // dropped: a node waking from a pause past its lease would otherwise
        // serve, for one map read, rooms that moved on without it.
        let map = match self.read_map().await {
            Ok(map) => map,
            Err(err) => {
                self.ownership.renewed(sent + self.ttl());
                return Err(err);
            }
        };
        let lost: HashSet<u32> = self
            .ownership
            .owned()
            .into_iter()
            .filter(|(shard, epoch)| {
                map.shards.get(*shard as usize).is_none_or(|row| {
                    row.owner.as_deref() != Some(&*self.node) || row.epoch != *epoch
                })
            })
            .map(|(shard, _)| shard)
            .collect();
        if !lost.is_empty() {
            for shard in &lost {
                self.ownership.remove(*shard);
            }
            tracing::warn!(node = %self.node, shards = lost.len(), "shards taken over by another node");
            self.step_down(supervisor, &lost);
        }
        self.ownership.renewed(sent + self.ttl());
        if self.leaving.load(Ordering::Acquire) {
            return Ok(());
        }
        // Shards the database still names this node for but it no longer
        // serves (it cleared them when its lease lapsed, or lost their
        // epoch): nobody's claim takes a shard of a live node, so unless this
        // node lets go of them here, their rooms have no owner for good.
        let held = self.ownership.owned();
        let orphaned: Vec<u32> = map
            .shards
            .iter()
            .filter(|row| {
                row.owner.as_deref() == Some(&*self.node) && !held.contains_key(&row.shard)
            })
            .map(|row| row.shard)
            .collect();
        if !orphaned.is_empty() {
            table::release(&self.db, &self.node, &orphaned).await?;
            tracing::warn!(node = %self.node, shards = orphaned.len(), "released shards recorded as this node's that it no longer served; they are claimed again");
        }

        let unloaded: HashSet<u32> = {
            let mut unloaded = self.unloaded.lock().expect("unloaded lock");
            let held = self.ownership.owned();
            unloaded.retain(|shard| held.contains_key(shard));
            std::mem::take(&mut *unloaded)
        };
        if !unloaded.is_empty() {
            tracing::info!(node = %self.node, shards = unloaded.len(), "loading again the rooms of shards whose load failed");
            self.load(supervisor, unloaded).await?;
        }

        let share = self.share(&map);
        let held = self.ownership.len();
        if held < share {
            let claimed = table::claim(&self.db, &self.node, share - held).await?;
            if !claimed.is_empty() {
                // The others route these shards' rooms here from now on.
                table::notify(&self.db, CHANNEL, &self.node).await?;
                self.take(supervisor, claimed).await?;
                self.read_map().await?;
            }
        } else if held > share {
            // Someone joined: hand the excess over, highest shards first.
            let mut owned: Vec<u32> = self.ownership.owned().into_keys().collect();
            owned.sort_unstable();
            let excess: HashSet<u32> = owned.split_off(share).into_iter().collect();
            self.release(supervisor, &excess).await?;
        }
        self.metrics.owned_shards.set(self.ownership.len() as i64);
        Ok(())
    }

    /// This node's fair share of the shards, by the live nodes in `map`.
    fn share(&self, map: &ShardMap) -> usize {
        let live = map.nodes.iter().filter(|n| n.live).count().max(1) as u32;
        self.settings.shards.div_ceil(live) as usize
    }

    async fn read_map(&self) -> Result<Arc<ShardMap>, ClusterError> {
        let read = self.map_reads.fetch_add(1, Ordering::Relaxed) + 1;
        let (nodes, shards) = table::read_map(&self.db).await?;
        let map = Arc::new(ShardMap {
            read,
            read_at: Some(Utc::now()),
            nodes,
            shards,
        });
        {
            // The heartbeat and `refresh_map` read at once: one that began
            // earlier but came back later must not put an older map back.
            let mut current = self.map.write().expect("shard map lock");
            if current.read > read {
                return Ok(map);
            }
            *current = map.clone();
        }
        self.map_version.send_modify(|v| *v += 1);
        Ok(map)
    }

    /// Starts serving shards just claimed, then loads their rooms from what
    /// every earlier owner committed (the claim waited for their commits).
    /// Loading can take seconds on a large database; meanwhile the node
    /// keeps its lease, and claims the shards others release (a joining
    /// node's share comes from several nodes, each at its own heartbeat),
    /// serving them at once and loading them next, so none waits for this
    /// load with no owner. It stops loading when the node leaves or its
    /// lease ran out (the shards may be others' by then).
    async fn take(
        &self,
        supervisor: &Supervisor,
        claimed: Vec<(u32, i64)>,
    ) -> Result<(), ClusterError> {
        let shards = self.serve(supervisor, &claimed);
        self.load(supervisor, shards).await
    }

    /// Loads the rooms of `shards`, which this node serves, and of those it
    /// claims meanwhile. A load that fails (the database stalled past the
    /// statement timeout) leaves them served, as rooms load on their first
    /// event too, and is tried again at the next heartbeat.
    async fn load(
        &self,
        supervisor: &Supervisor,
        mut shards: HashSet<u32>,
    ) -> Result<(), ClusterError> {
        while !shards.is_empty() {
            let started = Instant::now();
            let ownership = &self.ownership;
            let recovered =
                supervisor.recover_where(|name| shards.contains(&ownership.shard_of(name)));
            let mut more = Vec::new();
            let loaded = self.loading(supervisor, recovered, &mut more).await;
            let next: HashSet<u32> = more.iter().map(|(s, _)| *s).collect();
            match loaded {
                None => return Ok(()),
                Some(Err(err)) => {
                    let mut unloaded = self.unloaded.lock().expect("unloaded lock");
                    unloaded.extend(shards.iter().chain(&next));
                    return Err(err.into());
                }
                Some(Ok(rooms)) => {
                    tracing::info!(node = %self.node, shards = shards.len(), rooms, elapsed_ms = started.elapsed().as_millis() as u64, "took shards");
                }
            }
            shards = next;
        }
        Ok(())
    }

    /// This node serves `claimed` from now on; their rooms are not loaded yet.
    fn serve(&self, supervisor: &Supervisor, claimed: &[(u32, i64)]) -> HashSet<u32> {
        let shards: HashSet<u32> = claimed.iter().map(|(s, _)| *s).collect();
        // Actors left from an earlier hold of these shards know nothing of
        // what the owners in between wrote.
        self.step_down(supervisor, &shards);
        for (shard, epoch) in claimed {
            self.ownership.insert(*shard, *epoch);
        }
        shards
    }

    /// Runs `work` (loading shards' rooms) while doing what `run` would:
    /// extending the lease every heartbeat, and, when woken (a peer released
    /// shards, a request found no owner), claiming up to the fair share into
    /// `more`. `None`: gave the work up, as the node is leaving or its lease
    /// ran out.
    async fn loading<T>(
        &self,
        supervisor: &Supervisor,
        work: impl Future<Output = T>,
        more: &mut Vec<(u32, i64)>,
    ) -> Option<T> {
        let heartbeat = Duration::from_millis(self.settings.heartbeat_ms);
        let mut work = std::pin::pin!(work);
        let mut renew_at = tokio::time::Instant::now() + heartbeat;
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                () = tokio::time::sleep_until(renew_at) => {
                    renew_at += heartbeat;
                    let sent = Instant::now();
                    let ttl = self.settings.lease_ttl_ms;
                    match table::extend(&self.db, &self.node, self.incarnation, ttl).await {
                        Ok(true) => self.ownership.renewed(sent + self.ttl()),
                        Ok(false) => {
                            tracing::warn!(node = %self.node, "lease ran out while loading shards; stopped loading them");
                            return None;
                        }
                        Err(err) => {
                            tracing::warn!(node = %self.node, error = %err, "could not extend the lease while loading shards")
                        }
                    }
                }
                () = self.wake.notified() => {}
                () = self.leave_started.notified() => {}
            }
            if self.leaving.load(Ordering::Acquire) {
                return None;
            }
            if let Err(err) = self.claim_more(supervisor, more).await {
                tracing::warn!(node = %self.node, error = %crate::telemetry::chain(&err), "could not claim shards while loading others");
            }
        }
    }

    /// Claims up to the fair share by the latest map and serves the shards
    /// at once; their rooms are loaded after the load under way.
    async fn claim_more(
        &self,
        supervisor: &Supervisor,
        more: &mut Vec<(u32, i64)>,
    ) -> Result<(), ClusterError> {
        let share = self.share(&self.map.read().expect("shard map lock"));
        let held = self.ownership.len();
        if held >= share {
            return Ok(());
        }
        let claimed = table::claim(&self.db, &self.node, share - held).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        table::notify(&self.db, CHANNEL, &self.node).await?;
        self.serve(supervisor, &claimed);
        tracing::info!(node = %self.node, shards = claimed.len(), "claimed shards released while loading others; serving them now, loading them next");
        more.extend(claimed);
        Ok(())
    }

    fn step_down(&self, supervisor: &Supervisor, shards: &HashSet<u32>) {
        let ownership = &self.ownership;
        supervisor.step_down(|name| shards.contains(&ownership.shard_of(name)));
    }

    /// Hands `shards` over: stop taking their events here first, then
    /// release them in the database and wake the others.
    async fn release(
        &self,
        supervisor: &Supervisor,
        shards: &HashSet<u32>,
    ) -> Result<(), ClusterError> {
        if shards.is_empty() {
            return Ok(());
        }
        for shard in shards {
            self.ownership.remove(*shard);
        }
        self.step_down(supervisor, shards);
        let list: Vec<u32> = shards.iter().copied().collect();
        table::release(&self.db, &self.node, &list).await?;
        table::notify(&self.db, CHANNEL, &self.node).await?;
        tracing::info!(node = %self.node, shards = shards.len(), "released shards to the other nodes");
        Ok(())
    }

    /// On shutdown: give every shard up at once and end the lease, so the
    /// others take over within a heartbeat instead of a lease TTL.
    /// Events that arrive meanwhile wait for the new owner and are sent on to
    /// it; those already admitted here get up to `DRAIN` to commit first.
    pub async fn leave(&self, supervisor: &Supervisor) {
        const DRAIN: Duration = Duration::from_secs(2);
        self.leaving.store(true, Ordering::Release);
        self.leave_started.notify_one();
        let owned: HashSet<u32> = self.ownership.clear().into_iter().collect();
        let drained = Instant::now();
        while supervisor.in_flight() > 0 && drained.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ticking = self.ticking.lock().await;
        // Steps the shards' actors down, then releases the shards.
        let released = self.release(supervisor, &owned).await;
        let ended = table::end_lease(&self.db, &self.node, self.incarnation).await;
        match (released, ended) {
            (Ok(()), Ok(())) => {
                tracing::info!(node = %self.node, shards = owned.len(), "left the cluster")
            }
            (Err(err), _) => {
                tracing::warn!(node = %self.node, error = %crate::telemetry::chain(&err), "could not release shards; the others take them when the lease runs out")
            }
            (_, Err(err)) => {
                tracing::warn!(node = %self.node, error = %err, "could not end the lease")
            }
        }
        let _ = table::notify(&self.db, CHANNEL, &self.node).await;
    }

    /// On shutdown, after `leave`: lets the `LISTEN` connection go and
    /// closes the cluster's pool (bounded, as a connection that stopped
    /// answering must not hold the process).
    pub async fn close(&self) {
        self.closed.send_replace(true);
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.db.clone().close()).await;
    }

    /// Counts a forward for `/v1/debug/cluster` and the metrics.
    fn forwarded(&self, kind: &str, result: &str) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .forwards
            .with_label_values(&[kind, result])
            .inc();
    }
}
