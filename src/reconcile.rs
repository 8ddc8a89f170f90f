//! Reconciliation: LiveKit drops webhooks (full queues, exhausted retries)
//! and roomd can be down while they are sent. Comparing with LiveKit's
//! RoomService at start and then periodically makes roomd's rooms converge to
//! LiveKit's truth anyway. Every correction goes through the room's actor
//! (ordered with its webhooks), is committed with an audit row and logged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;

use crate::livekit::{MAX_KEY_BYTES, RoomService, ServiceError};
use crate::room::messages::Reconciled;
use crate::room::supervisor::{ReconcileReport, Supervisor};
use crate::store::StoreError;

/// LiveKit's RoomService calls in flight at once.
const CONCURRENT_ROOMS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    LiveKit(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One round: end rooms LiveKit no longer has, then make every room LiveKit
/// has agree with its participant list.
pub async fn reconcile_once(
    supervisor: &Supervisor,
    service: &RoomService,
) -> Result<ReconcileReport, ReconcileError> {
    let fetched_at = crate::event::now();
    let listed_at = fetched_at;
    // On a cluster each node reconciles the rooms it owns.
    let mut live = service.rooms().await?;
    live.retain(|room| supervisor.owns(&room.name));
    // A name no webhook could bring in (refused with 400) is not tracked,
    // and its commit would fail every round.
    let before = live.len();
    live.retain(|room| room.name.len() <= MAX_KEY_BYTES);
    if live.len() < before {
        tracing::warn!(
            rooms = before - live.len(),
            limit = MAX_KEY_BYTES,
            "LiveKit lists rooms whose names are too long to track; skipped"
        );
    }
    let live_names: HashSet<&str> = live.iter().map(|r| r.name.as_str()).collect();
    let gone: Vec<String> = supervisor
        .active_room_names()
        .await?
        .into_iter()
        .filter(|name| !live_names.contains(name.as_str()) && supervisor.owns(name))
        .collect();
    let checked = gone.len() + live.len();

    let mut results = Vec::with_capacity(checked);
    for name in &gone {
        results.push(supervisor.reconcile_room(name, None, fetched_at).await);
    }
    let mut per_room = futures_util::stream::iter(live)
        .map(|room| async move {
            let fetched_at = crate::event::now();
            let name = room.name.clone();
            let truth = service.truth(room, listed_at).await;
            match truth {
                Ok(truth) => Ok(supervisor
                    .reconcile_room(&name, Some(truth), fetched_at)
                    .await),
                Err(err) => Err((name, err)),
            }
        })
        .buffer_unordered(CONCURRENT_ROOMS);
    // A room whose participants cannot be listed (gone since ListRooms, or
    // a LiveKit node's leftover) is skipped, not the round: one such room
    // kept every room after it from being reconciled (found by the
    // adversary). LiveKit down fails the round at ListRooms instead.
    let mut unlisted = Vec::new();
    while let Some(result) = per_room.next().await {
        match result {
            Ok(result) => results.push(result),
            Err(failed) => unlisted.push(failed),
        }
    }
    if let Some((name, err)) = unlisted.first() {
        tracing::warn!(
            rooms = unlisted.len(),
            room = %name,
            error = %crate::telemetry::chain(err),
            "LiveKit could not list some rooms' participants; they wait for the next round"
        );
    }

    let mut report = ReconcileReport {
        finished_at: Utc::now(),
        rooms_checked: checked,
        rooms_skipped: unlisted.len(),
        corrections: Vec::new(),
        error: None,
    };
    for result in results {
        match result {
            Ok(Reconciled::Corrected(corrections)) => report.corrections.extend(corrections),
            Ok(Reconciled::Skipped) => report.rooms_skipped += 1,
            Err(err) => {
                tracing::warn!(error = %crate::telemetry::chain(&err), "a room could not be reconciled this round");
                report.rooms_skipped += 1;
            }
        }
    }
    Ok(report)
}

/// Reconciles now and then every `interval`; while LiveKit cannot be
/// reached, retries sooner, backing off from 1 s up to `interval`. roomd
/// keeps serving on webhooks alone meanwhile.
pub fn spawn(supervisor: Supervisor, service: Arc<RoomService>, interval: Duration) {
    actix::spawn(async move {
        let mut backoff = Duration::from_secs(1).min(interval);
        loop {
            let wait = match reconcile_once(&supervisor, &service).await {
                Ok(report) => {
                    tracing::info!(
                        rooms = report.rooms_checked,
                        skipped = report.rooms_skipped,
                        corrections = report.corrections.len(),
                        "reconciled with LiveKit"
                    );
                    for c in &report.corrections {
                        supervisor
                            .metrics()
                            .reconcile_corrections
                            .with_label_values(&[c.what.as_str()])
                            .inc();
                    }
                    supervisor.set_reconcile_report(report);
                    backoff = Duration::from_secs(1).min(interval);
                    interval
                }
                Err(err) => {
                    supervisor.metrics().reconcile_failures.inc();
                    tracing::warn!(error = %crate::telemetry::chain(&err), retry_in_secs = backoff.as_secs(), "cannot reconcile with LiveKit; serving on webhooks alone");
                    supervisor.set_reconcile_report(ReconcileReport {
                        finished_at: Utc::now(),
                        rooms_checked: 0,
                        rooms_skipped: 0,
                        corrections: Vec::new(),
                        error: Some(crate::telemetry::chain(&err)),
                    });
                    let wait = backoff;
                    backoff = (backoff * 2).min(interval);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}
