//! `POST /v1/webhooks/livekit`: read (bounded), verify, parse, hand over to
//! the room's actor, answer once committed. No rule about rooms lives here.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{AppState, error::ApiError};
use crate::cluster::{self, Cluster, FORWARDED_HEADER, Forwarded, Route};
use crate::livekit;
use crate::room::messages::{Delivered, RoomError};
use crate::room::{DeliverError, Unavailable};
use crate::store::StoreError;

#[derive(Serialize)]
struct Ack<'a> {
    status: &'static str,
    event: &'a str,
    outcome: &'static str,
    duplicate: bool,
}

#[post("/v1/webhooks/livekit")]
pub async fn receive(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    // The event's name once the body is verified; unverified requests are
    // counted as "unknown" so nobody can mint metric labels.
    let mut event = None;
    let result = accept(&req, &mut payload, &state, &mut event).await;
    if result.is_err() {
        discard(payload);
    }
    let outcome = match &result {
        Ok(Accepted::Here(delivered)) => delivered.as_str(),
        Ok(Accepted::Forwarded(_)) => "forwarded",
        Err(err) => err.code(),
    };
    let event = event.unwrap_or_else(|| crate::event::label("unknown"));
    state
        .metrics
        .webhooks
        .with_label_values(&[metric_label(&event), outcome])
        .inc();
    state
        .metrics
        .webhook_seconds
        .observe(started.elapsed().as_secs_f64());
    let delivered = match result? {
        Accepted::Here(delivered) => delivered,
        Accepted::Forwarded(answer) => return Ok(pass_back(answer)),
    };
    Ok(HttpResponse::Ok().json(Ack {
        status: "ok",
        event: &event,
        outcome: delivered.as_str(),
        duplicate: delivered == Delivered::Duplicate,
    }))
}

/// LiveKit's event names, as metric labels; any other name (a newer
/// LiveKit, or a signed sender making names up) is counted as `other`, so
/// the label set stays bounded.
fn metric_label(event: &str) -> &str {
    const KNOWN: [&str; 13] = [
        "room_started",
        "room_finished",
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "track_published",
        "track_unpublished",
        "egress_started",
        "egress_updated",
        "egress_ended",
        "ingress_started",
        "ingress_ended",
        "unknown",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == event)
        .unwrap_or("other")
}

/// What became of a verified webhook.
enum Accepted {
    /// Committed (or recognised) here.
    Here(Delivered),
    /// Sent on to the room's owner, which answered this.
    Forwarded(Forwarded),
}

/// The owner's answer, as it gave it (its JSON body, status and
/// `Retry-After`), so LiveKit sees one roomd.
fn pass_back(answer: Forwarded) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    if let Some(retry_after) = answer.retry_after {
        response.insert_header((header::RETRY_AFTER, retry_after));
    }
    response.body(answer.body)
}

async fn accept(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    event: &mut Option<crate::event::Label>,
) -> Result<Accepted, ApiError> {
    // The token first, from the header: a request LiveKit did not sign is
    // refused before roomd reads, or holds memory for, any of its body.
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let body_hash = state.verifier.token(authorization)?;
    // A token that verified is there.
    let token = authorization.unwrap_or_default();
    let body = state.bodies.read(req, payload, token).await?;
    body_hash.check(&body)?;
    let delivery = livekit::parse(&body, crate::event::now())?;
    *event = Some(delivery.event.clone());
    let span = tracing::info_span!(
        "webhook",
        event = %delivery.event,
        event_id = delivery.id.as_deref().unwrap_or(""),
        room = delivery.room().map_or("", |r| r.name.as_str()),
        room_sid = delivery.room().and_then(|r| r.sid.as_deref()).unwrap_or(""),
        identity = delivery.participant().map_or("", |p| &*p.identity),
    );
    // One bound for all of this request's routing, however often it is
    // routed again or sent on: a node a request was sent on to gets a
    // shorter share, so its answer gets back before the sender gives up.
    let hops = state.cluster.as_ref().map_or(0, |cluster| {
        cluster.hops(
            req.headers()
                .get(FORWARDED_HEADER)
                .and_then(|v| v.to_str().ok()),
            token,
        )
    });
    let deadline = state
        .cluster
        .as_ref()
        .map(|cluster| Instant::now() + cluster.forward_timeout() / (u32::from(hops) + 1));
    let mut routed_again = false;
    loop {
        if let (Some(cluster), Some(room), Some(deadline)) =
            (&state.cluster, delivery.room(), deadline)
            && let Some(answer) = send_on(cluster, hops, deadline, &room.name, token, &body)
                .instrument(span.clone())
                .await?
        {
            return Ok(Accepted::Forwarded(answer));
        }
        match state
            .supervisor
            .deliver(&delivery)
            .instrument(span.clone())
            .await
        {
            Ok(delivered) => {
                span.in_scope(|| tracing::info!(outcome = delivered.as_str(), "webhook committed"));
                return Ok(Accepted::Here(delivered));
            }
            // The shard left this node (it is stopping, or gave the shard
            // to a node that joined) between routing and the commit: no
            // actor here took the event, or the fence refused its commit,
            // so nothing of it was written, and its new owner can have it
            // now rather than after LiveKit's retry.
            Err(DeliverError::Unavailable {
                cause:
                    Unavailable::NotOwner
                    | Unavailable::Room(RoomError::Store(StoreError::Fenced { .. })),
                ..
            }) if state.cluster.is_some() && !routed_again => {
                span.in_scope(|| tracing::info!("the room's shard left this node while the webhook was routed here; routing it again"));
                routed_again = true;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// On a cluster, sends a verified webhook for another node's room on to that
/// node (as hop `hops + 1`, by `deadline`) and returns its answer; `None`
/// when this node owns the room.
async fn send_on(
    cluster: &Cluster,
    hops: u8,
    deadline: Instant,
    room: &str,
    token: &str,
    body: &web::Bytes,
) -> Result<Option<Forwarded>, ApiError> {
    let mut failed: Option<String> = None;
    let mut refused: Option<Forwarded> = None;
    let mut tried_again = false;
    loop {
        let within = deadline.saturating_duration_since(Instant::now());
        match cluster.route_past(room, failed.as_deref(), within).await {
            Route::Here => return Ok(None),
            // Still the node that said it knows no owner: its answer stands.
            Route::Owner { node, .. } if refused.is_some() && failed.as_ref() == Some(&node) => {
                return Ok(refused);
            }
            Route::Owner { node, url } if hops < cluster::MAX_HOPS => {
                let within = deadline.saturating_duration_since(Instant::now());
                match cluster
                    .forward_webhook(&url, token, body.clone(), hops, within)
                    .await
                {
                    // The owner gave the room up (it is stopping, or handed
                    // the shard to a node that joined) and waited its
                    // shorter share of the bound for the next owner in
                    // vain: this node waits out the rest of its own.
                    Ok(answer)
                        if answer.no_owner && failed.is_none() && Instant::now() < deadline =>
                    {
                        tracing::info!(owner = %node, "the room's owner gave it up and knows no other; waiting for its shards to move");
                        failed = Some(node);
                        refused = Some(answer);
                    }
                    Ok(answer) => {
                        tracing::info!(owner = %node, status = answer.status, "webhook forwarded to the room's owner");
                        return Ok(Some(answer));
                    }
                    // A live owner can fail a forward at once: it closed
                    // an idle pooled connection just as this node reused
                    // it. Once more, on a new connection, before waiting for
                    // shards that are not moving; a delivery the owner did
                    // get is answered `duplicate`.
                    Err(err) if !err.is_timeout() && !tried_again && Instant::now() < deadline => {
                        tracing::info!(owner = %node, error = %crate::telemetry::chain(&err), "the room's owner did not answer; sending the webhook once more");
                        tried_again = true;
                    }
                    // The owner went away (stopped, killed): its shards are
                    // about to move; wait for that once, not for LiveKit's
                    // next retry.
                    Err(err) if failed.is_none() && Instant::now() < deadline => {
                        tracing::info!(owner = %node, error = %crate::telemetry::chain(&err), "the room's owner did not answer; waiting for its shards to move");
                        failed = Some(node);
                    }
                    Err(err) => return Err(ApiError::Unavailable(Box::new(err))),
                }
            }
            Route::Owner { .. } => {
                // Two nodes' maps disagree for a moment; LiveKit's retry
                // finds them settled.
                cluster.no_owner("webhook", "too_many_hops");
                return Err(ApiError::NoOwner {
                    tell_sender: hops > 0,
                });
            }
            Route::Unknown => {
                cluster.no_owner("webhook", "no_owner");
                // A node that sent the webhook here may wait longer for
                // the shard to move (so may one whose request made too many
                // hops above); LiveKit only retries, and never sees it.
                return Err(ApiError::NoOwner {
                    tell_sender: hops > 0,
                });
            }
        }
    }
}

/// Reads webhook bodies within bounds: at most `max_bytes` each, each within
/// `timeout` of its headers, and at most `reads` of them at once, so slow or
/// stalled senders (even signed ones) cannot pile up memory. One body per
/// token at a time: a token signs one body (LiveKit retries a delivery with
/// its token only after giving up on the previous try), so a captured token
/// replayed with stalled bodies holds one slot, not all of them.
pub struct BodyReader {
    max_bytes: usize,
    timeout: Duration,
    reads: Arc<Semaphore>,
    max_reads: usize,
    reading: Mutex<HashSet<String>>,
}

/// A token whose body is being read; forgotten when dropped.
struct Reading<'a> {
    tokens: &'a Mutex<HashSet<String>>,
    token: String,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.tokens
            .lock()
            .expect("reading lock")
            .remove(&self.token);
    }
}

impl BodyReader {
    pub fn new(max_bytes: usize, timeout: Duration, max_reads: usize) -> Self {
        Self {
            max_bytes,
            timeout,
            reads: Arc::new(Semaphore::new(max_reads)),
            max_reads,
            reading: Mutex::default(),
        }
    }

    async fn read(
        &self,
        req: &HttpRequest,
        payload: &mut web::Payload,
        token: &str,
    ) -> Result<web::Bytes, ApiError> {
        let limit = self.max_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::TooLarge { limit });
        }
        if !self
            .reading
            .lock()
            .expect("reading lock")
            .insert(token.to_owned())
        {
            return Err(ApiError::BodyBeingRead);
        }
        let _reading = Reading {
            tokens: &self.reading,
            token: token.to_owned(),
        };
        let _read = self
            .reads
            .try_acquire()
            .map_err(|_| ApiError::TooManyBodies {
                limit: self.max_reads,
            })?;
        tokio::time::timeout(self.timeout, read_body(payload, declared, limit))
            .await
            .map_err(|_| ApiError::BodyTimeout {
                secs: self.timeout.as_secs(),
            })?
    }
}

/// What is left of a refused request's body is read and thrown away, for at
/// most a second, off the request. Dropping it at once would be worse: actix
/// then keeps the connection to drain a chunked body, with no deadline, for
/// as long as the client trickles (or never ends) it. Held here, the body is
/// unread when the answer goes out, so actix closes the connection after it.
fn discard(mut payload: web::Payload) {
    actix_web::rt::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = payload.next().await {}
        })
        .await;
    });
}

/// The raw body, refused as soon as it passes `limit` bytes. Memory grows
/// with what arrives, not with what `Content-Length` announces.
async fn read_body(
    payload: &mut web::Payload,
    declared: Option<usize>,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    const FIRST_ALLOCATION: usize = 16 * 1024;
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(FIRST_ALLOCATION));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
