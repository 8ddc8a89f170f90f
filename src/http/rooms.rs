//! Frontend reads, served from the actors' published snapshots.

use actix_web::{HttpResponse, get, web};

use super::{AppState, error::ApiError};

#[get("/v1/rooms/{name}")]
pub async fn room(
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    match state.rooms.room_view(&name).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(ApiError::RoomNotFound(name)),
    }
}
