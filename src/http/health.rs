//! Liveness, readiness, metrics and the API description.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::AppState;

/// The process is up.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Live rooms are rebuilt and the database answers.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let recovered = state.supervisor.is_recovered();
    let database = state.supervisor.database_answers().await;
    let body = json!({"recovered": recovered, "database": database});
    if recovered && database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// Prometheus text format.
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .live_actors
        .set(state.supervisor.live_actors() as i64);
    state
        .metrics
        .parked_actors
        .set(state.supervisor.parked_actors() as i64);
    state
        .metrics
        .mailbox_depth
        .set(state.supervisor.mailbox_depth_total() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// The OpenAPI document of this API.
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("openapi.json"))
}
