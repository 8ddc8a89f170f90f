//! `POST /v1/webhooks/livekit`: read (bounded), verify, parse, hand over to
//! the room's actor, answer once committed. No rule about rooms lives here.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use std::time::Instant;

use super::{AppState, error::ApiError};
use crate::livekit;
use crate::room::Delivered;

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
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    // The event's name once the body is verified; unverified requests are
    // counted as "unknown" so nobody can mint metric labels.
    let mut event = None;
    let result = accept(&req, payload, &state, &mut event).await;
    let outcome = match &result {
        Ok(delivered) => delivered.as_str(),
        Err(err) => err.code(),
    };
    let event = event.unwrap_or_else(|| "unknown".to_owned());
    state
        .metrics
        .webhooks
        .with_label_values(&[metric_label(&event), outcome])
        .inc();
    state
        .metrics
        .webhook_seconds
        .observe(started.elapsed().as_secs_f64());
    let delivered = result?;
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

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    event: &mut Option<String>,
) -> Result<Delivered, ApiError> {
    let body = read_body(req, payload, state.max_body_bytes).await?;
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.verifier.verify(authorization, &body)?;
    let delivery = livekit::parse(&body, chrono::Utc::now())?;
    *event = Some(delivery.event.clone());
    let span = tracing::info_span!(
        "webhook",
        event = %delivery.event,
        event_id = delivery.id.as_deref().unwrap_or(""),
        room = delivery.room.as_ref().map_or("", |r| r.name.as_str()),
        room_sid = delivery.room.as_ref().and_then(|r| r.sid.as_deref()).unwrap_or(""),
        identity = delivery.participant().map_or("", |p| p.identity.as_str()),
    );
    let delivered = state
        .rooms
        .deliver(delivery)
        .instrument(span.clone())
        .await?;
    span.in_scope(|| tracing::info!(outcome = delivered.as_str(), "webhook committed"));
    Ok(delivered)
}

/// Reads the raw body, refusing more than `limit` bytes before reading them
/// when `Content-Length` says so, else as soon as the stream passes it.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
