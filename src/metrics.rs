//! Prometheus metrics, one registry per app (so tests can run several apps in
//! one process), rendered at `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Webhooks by event name and outcome (applied, ignored, stale, duplicate)
    /// or refusal (unauthorized, bad_request, payload_too_large, busy, unavailable).
    pub webhooks: IntCounterVec,
    /// Seconds from a webhook's arrival to its answer.
    pub webhook_seconds: Histogram,
    /// Events per committed transaction.
    pub commit_batch_size: Histogram,
    pub live_actors: IntGauge,
    /// Of those, the parked ones (rooms with nobody in, between events).
    pub parked_actors: IntGauge,
    /// Messages waiting in room mailboxes, all rooms together.
    pub mailbox_depth: IntGauge,
    pub actor_restarts: IntCounter,
    pub reconcile_corrections: IntCounterVec,
    pub reconcile_failures: IntCounter,
    /// Audit rows removed by the retention job.
    pub audit_rows_deleted: IntCounter,
    /// Cluster: webhooks and reads sent on to the owning node, by what came back
    /// (ok, refused: a 4xx/5xx status passed on, failed: no answer, no_owner).
    pub forwards: IntCounterVec,
    /// Cluster: commits refused because their shard moved to another node.
    pub fence_refusals: IntCounter,
    /// Cluster: shards this node holds.
    pub owned_shards: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("roomd".into()), None).expect("a valid prefix");
        let webhooks = IntCounterVec::new(
            Opts::new("webhooks_total", "Webhooks by event and outcome"),
            &["event", "outcome"],
        )
        .expect("valid metric");
        let webhook_seconds = Histogram::with_opts(
            HistogramOpts::new("webhook_duration_seconds", "Webhook arrival to answer").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            ),
        )
        .expect("valid metric");
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new("commit_batch_size", "Events per committed transaction").buckets(
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
        )
        .expect("valid metric");
        let live_actors =
            IntGauge::new("live_actors", "Room actors, running or parked").expect("valid metric");
        let parked_actors = IntGauge::new(
            "parked_actors",
            "Room actors parked between events (rooms with nobody in)",
        )
        .expect("valid metric");
        let mailbox_depth = IntGauge::new("mailbox_depth", "Messages waiting in room mailboxes")
            .expect("valid metric");
        let actor_restarts = IntCounter::new(
            "actor_restarts_total",
            "Room actors rebuilt after a crash or a failed commit",
        )
        .expect("valid metric");
        let reconcile_corrections = IntCounterVec::new(
            Opts::new(
                "reconcile_corrections_total",
                "Corrections made by reconciliation with LiveKit",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_failures = IntCounter::new(
            "reconcile_failures_total",
            "Reconciliation rounds that could not reach LiveKit",
        )
        .expect("valid metric");
        let audit_rows_deleted = IntCounter::new(
            "audit_rows_deleted_total",
            "webhook_events rows deleted past audit.retention_days",
        )
        .expect("valid metric");
        let forwards = IntCounterVec::new(
            Opts::new(
                "cluster_forwards_total",
                "Requests sent on to the node that owns the room, by result",
            ),
            &["kind", "result"],
        )
        .expect("valid metric");
        let fence_refusals = IntCounter::new(
            "cluster_fence_refusals_total",
            "Commits refused because the room's shard moved to another node",
        )
        .expect("valid metric");
        let owned_shards =
            IntGauge::new("cluster_owned_shards", "Shards this node holds").expect("valid metric");
        for metric in [
            Box::new(webhooks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_seconds.clone()),
            Box::new(commit_batch_size.clone()),
            Box::new(live_actors.clone()),
            Box::new(parked_actors.clone()),
            Box::new(mailbox_depth.clone()),
            Box::new(actor_restarts.clone()),
            Box::new(reconcile_corrections.clone()),
            Box::new(reconcile_failures.clone()),
            Box::new(audit_rows_deleted.clone()),
            Box::new(forwards.clone()),
            Box::new(fence_refusals.clone()),
            Box::new(owned_shards.clone()),
        ] {
            registry
                .register(metric)
                .expect("each metric registered once");
        }
        Self {
            registry,
            webhooks,
            webhook_seconds,
            commit_batch_size,
            live_actors,
            parked_actors,
            mailbox_depth,
            actor_restarts,
            reconcile_corrections,
            reconcile_failures,
            audit_rows_deleted,
            forwards,
            fence_refusals,
            owned_shards,
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
