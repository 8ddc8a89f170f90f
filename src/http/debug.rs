//! Admin views of the supervisor and its actors (admin grant required).

use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Deserialize;
use serde_json::json;

use super::auth::Reader;
use super::rooms::page_limit;
use super::{AppState, error::ApiError};

#[derive(Deserialize)]
pub struct ActorsQuery {
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
    /// The last room of the previous page.
    after: Option<String>,
}

/// The supervisor's status and one page of its actors, in room name order.
#[get("/v1/debug/actors")]
pub async fn actors(
    req: HttpRequest,
    query: web::Query<ActorsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Reader::of(&req, &state.tokens)?.require_admin()?;
    let page = state
        .supervisor
        .snapshots(query.after.as_deref(), page_limit(query.limit)?);
    let actors: Vec<_> = page
        .items
        .into_iter()
        .map(|(name, s)| {
            json!({
                "room": name,
                "sid": s.room.as_ref().and_then(|r| r.sid.clone()),
                "status": s.room.as_ref().map(|r| r.status),
                "participant_count": s.room.as_ref().map_or(0, |r| r.participant_count),
                "mailbox_depth": state.supervisor.mailbox_depth(&name),
                "last_event": s.last_event,
                "counters": s.counters,
                "actor_started_at": s.actor_started_at,
            })
        })
        .collect();
    let mut body = json!({ "supervisor": state.supervisor.status(), "actors": actors });
    if let Some(next) = page.next {
        body["next"] = next.into();
    }
    Ok(HttpResponse::Ok().json(body))
}

#[get("/v1/debug/actors/{name}")]
pub async fn actor(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Reader::of(&req, &state.tokens)?.require_admin()?;
    let name = name.into_inner();
    match state.supervisor.actor_snapshot(&name) {
        Some(snapshot) => Ok(HttpResponse::Ok().json(json!({
            "room": name,
            "mailbox_depth": state.supervisor.mailbox_depth(&name),
            "snapshot": snapshot,
        }))),
        None => Err(ApiError::RoomNotFound(name)),
    }
}

/// On a cluster: the nodes with their leases, the shard map, and this node's
/// forwards and fence refusals. 404 on a single node.
#[get("/v1/debug/cluster")]
pub async fn cluster(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Reader::of(&req, &state.tokens)?.require_admin()?;
    match &state.cluster {
        Some(cluster) => Ok(HttpResponse::Ok().json(cluster.status())),
        None => Err(ApiError::NoRoute),
    }
}
