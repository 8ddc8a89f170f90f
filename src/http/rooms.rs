//! Frontend reads, served from the actors' published snapshots (a room with
//! no actor, retired or ended before a restart, is read from the database).

use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::{Deserialize, Serialize};

use super::auth::Reader;
use super::{AppState, error::ApiError};
use crate::room::snapshot::RoomView;

/// Counts are public when `api.public_counts` is set; else they need a token
/// for the room (or an admin one).
fn may_read_counts(state: &AppState, reader: &Reader, name: Option<&str>) -> Result<(), ApiError> {
    if state.public_counts {
        return Ok(());
    }
    match name {
        Some(name) => reader.require_room(name),
        None => reader.require_admin(),
    }
}

#[get("/v1/rooms/{name}")]
pub async fn room(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    may_read_counts(&state, &Reader::of(&req, &state.tokens)?, Some(&name))?;
    match state.supervisor.room_view(&name).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::RoomNotFound(name)),
    }
}

#[derive(Serialize)]
struct Participants {
    room: String,
    participant_count: usize,
    participants: crate::room::presence::ParticipantList,
}

#[get("/v1/rooms/{name}/participants")]
pub async fn participants(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    Reader::of(&req, &state.tokens)?.require_room(&name)?;
    if let Some(answer) = from_owner(&req, &state, &name).await {
        return Ok(answer);
    }
    let Some(detail) = state.supervisor.room_detail(&name).await? else {
        return Err(ApiError::RoomNotFound(name));
    };
    Ok(HttpResponse::Ok().json(Participants {
        room: name,
        participant_count: detail.room.participant_count,
        participants: detail.participants,
    }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// `a,b,c`: just these rooms (a lobby asking for several at once).
    names: Option<String>,
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
    /// The last name of the previous page.
    after: Option<String>,
}

#[derive(Serialize)]
struct RoomList {
    rooms: Vec<RoomView>,
    /// Asked for by `names` but never seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown: Vec<String>,
    /// Pass as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// How many rooms one `?names=` may ask for.
const MAX_NAMES: usize = 100;

/// A page size from `?limit=`: 100 by default, at most 1000.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(100) {
        limit @ 1..=1000 => Ok(limit),
        _ => Err(ApiError::BadQuery("limit must be 1..=1000".into())),
    }
}

#[get("/v1/rooms")]
pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    may_read_counts(&state, &Reader::of(&req, &state.tokens)?, None)?;
    if let Some(names) = &query.names {
        let mut asked: Vec<&str> = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !asked.contains(&name) {
                asked.push(name);
            }
        }
        if asked.len() > MAX_NAMES {
            return Err(ApiError::BadQuery(format!(
                "names may list at most {MAX_NAMES} rooms"
            )));
        }
        let mut rooms = Vec::new();
        let mut unknown = Vec::new();
        for (name, view) in asked.iter().zip(state.supervisor.room_views(&asked).await?) {
            match view {
                Some(view) => rooms.push(view),
                None => unknown.push((*name).to_owned()),
            }
        }
        return Ok(HttpResponse::Ok().json(RoomList {
            rooms,
            unknown,
            next: None,
        }));
    }
    let page = state
        .supervisor
        .live_rooms(query.after.as_deref(), page_limit(query.limit)?)
        .await?;
    Ok(HttpResponse::Ok().json(RoomList {
        rooms: page.items,
        unknown: Vec::new(),
        next: page.next,
    }))
}

/// On a cluster, another node's room is answered by its owner, from memory.
/// `None`: answer here (this node owns the room, or the owner cannot be
/// reached, and then the list comes from what the owner committed).
async fn from_owner(req: &HttpRequest, state: &AppState, name: &str) -> Option<HttpResponse> {
    let super::OwnerRead {
        cluster,
        node,
        url,
        authorization,
        path_and_query,
    } = super::owner_read(req, state, name)?;
    match cluster
        .forward_read(&url, path_and_query, authorization)
        .await
    {
        Ok(answer) if answer.status == 200 => Some(
            HttpResponse::Ok()
                .content_type("application/json")
                .body(answer.body),
        ),
        Ok(answer) => {
            tracing::info!(room = %name, owner = %node, status = answer.status, "the owner refused the read; answering from the database");
            None
        }
        Err(err) => {
            // Without the URL: its query may hold the reader's token.
            tracing::info!(room = %name, owner = %node, error = %err.without_url(), "the owner cannot be reached; answering from the database");
            None
        }
    }
}
