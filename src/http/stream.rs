//! `GET /v1/rooms/{name}/stream`: Server-Sent Events with the room's count and
//! its joins and leaves as they commit, so frontends need not poll. The first
//! event is the current snapshot, or, for a client reconnecting with
//! `Last-Event-ID`, exactly the updates it missed.

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use futures_util::{StreamExt, stream};
use serde_json::json;

use super::auth::Reader;
use super::{AppState, error::ApiError};
use crate::room::Supervisor;
use crate::room::feed::{Cursor, Next};
use crate::room::messages::Claim;

fn sse(id: &str, event: &str, data: &serde_json::Value) -> Result<Bytes, actix_web::Error> {
    Ok(Bytes::from(format!(
        "id: {id}\nevent: {event}\ndata: {data}\n\n"
    )))
}

/// The room now, as a `snapshot` event standing for update `id`: its count
/// and its list from one snapshot.
async fn snapshot(
    supervisor: &Supervisor,
    name: &str,
    id: &str,
) -> Result<Bytes, actix_web::Error> {
    let detail = supervisor.room_detail(name).await.ok().flatten();
    let (room, participants) = match detail {
        Some(d) => (Some(d.room), d.participants),
        None => (None, Default::default()),
    };
    sse(
        id,
        "snapshot",
        &json!({ "room": room, "participants": participants }),
    )
}

/// One client's subscription; its room's feed is released when the client
/// goes (the stream is dropped).
struct Listener {
    supervisor: Supervisor,
    name: String,
    cursor: Option<Cursor>,
    /// Its place under `api.max_streams`, given back when it goes.
    _open: Claim,
    /// A comment now and then: proxies keep quiet streams open, and writing
    /// is how a client that went away is noticed (its stream is dropped).
    keepalive: tokio::time::Interval,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The receiver must be gone before the feed counts its listeners.
        drop(self.cursor.take());
        self.supervisor.unsubscribe(&self.name);
    }
}

#[get("/v1/rooms/{name}/stream")]
pub async fn room_stream(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    Reader::of(&req, &state.tokens)?.require_room(&name)?;
    if state.supervisor.room_view(&name).await?.is_none() {
        return Err(ApiError::RoomNotFound(name));
    }
    let open = Claim::take(&state.streams, state.max_streams).ok_or(ApiError::TooManyStreams {
        limit: state.max_streams,
    })?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    let open = match from_owner(&req, &state, &name, last_event_id, open).await {
        Ok(proxied) => return Ok(proxied),
        Err(open) => open,
    };
    let subscription = state.supervisor.subscribe(&name, last_event_id);
    let supervisor = state.supervisor.clone();

    let first: Vec<Result<Bytes, actix_web::Error>> = match subscription.replay {
        Some(missed) => missed
            .iter()
            .map(|u| {
                sse(
                    &u.id,
                    "update",
                    &serde_json::to_value(u.as_ref()).unwrap_or_default(),
                )
            })
            .collect(),
        None => vec![snapshot(&supervisor, &name, &subscription.snapshot_id).await],
    };
    let listener = Listener {
        supervisor,
        name,
        cursor: Some(subscription.cursor),
        _open: open,
        keepalive: {
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + state.stream_keepalive,
                state.stream_keepalive,
            );
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        },
    };
    let live = stream::unfold(listener, |mut l| async move {
        let cursor = l.cursor.as_mut()?;
        let next = tokio::select! {
            next = cursor.next(l.supervisor.feeds(), &l.name) => next,
            _ = l.keepalive.tick() => {
                return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), l));
            }
        };
        let item = match next {
            Next::Update(u) => sse(
                &u.id,
                "update",
                &serde_json::to_value(u.as_ref()).unwrap_or_default(),
            ),
            // This client fell behind: it gets the room as it is now instead
            // of the updates it missed (the room never waited for it).
            Next::Resync { id } => snapshot(&l.supervisor, &l.name, &id).await,
            Next::Closed => return None,
        };
        Some((item, l))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream::iter(first).chain(live)))
}

/// On a cluster, another node's room streams from its owner, passed through
/// as it comes: only the owner sees the room's updates. `Err`: serve it
/// here (this node owns the room, or the owner cannot be reached, and then
/// the client gets the committed snapshot), with its place given back.
async fn from_owner(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
    last_event_id: Option<&str>,
    open: Claim,
) -> Result<HttpResponse, Claim> {
    let Some(super::OwnerRead {
        cluster,
        node,
        url,
        authorization,
        path_and_query,
    }) = super::owner_read(req, state, name)
    else {
        return Err(open);
    };
    match cluster
        .forward_stream(&url, path_and_query, authorization, last_event_id)
        .await
    {
        Ok(response) if response.status().is_success() => {
            let body = response.bytes_stream().map(move |chunk| {
                // The place under `api.max_streams` lasts as long as the stream.
                let _open = &open;
                chunk.map_err(|e| actix_web::error::ErrorBadGateway(e.without_url()))
            });
            Ok(HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("Cache-Control", "no-cache"))
                .streaming(body))
        }
        Ok(response) => {
            tracing::info!(room = %name, owner = %node, status = response.status().as_u16(), "the owner refused the stream; serving it here");
            Err(open)
        }
        Err(err) => {
            // Without the URL: its query may hold the reader's token.
            tracing::info!(room = %name, owner = %node, error = %err.without_url(), "the owner cannot be reached; serving the stream here");
            Err(open)
        }
    }
}
