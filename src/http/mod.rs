//! HTTP routes. Handlers extract, call the domain and map the result; the
//! status and body of every error is decided in `error.rs`.

mod auth;
mod debug;
pub mod error;
mod health;
pub mod request_id;
mod rooms;
mod stream;
mod ui;
mod webhooks;

use actix_web::web;

use crate::livekit::WebhookVerifier;
use crate::room::Supervisor;

pub use error::ApiError;
pub use webhooks::BodyReader;

/// What every handler may use. Built once at start.
pub struct AppState {
    pub supervisor: Supervisor,
    pub verifier: WebhookVerifier,
    /// Verifies the LiveKit tokens readers send.
    pub tokens: crate::livekit::Tokens,
    pub public_counts: bool,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub bodies: BodyReader,
    /// How often a live-update stream sends a keep-alive comment.
    pub stream_keepalive: std::time::Duration,
    /// Live-update streams open now, and how many may be.
    pub streams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub max_streams: usize,
    /// This node's part in a cluster; `None` on a single node.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// A read of another node's room, to send on to its owner.
pub(crate) struct OwnerRead<'a> {
    pub cluster: &'a crate::cluster::Cluster,
    pub node: String,
    pub url: String,
    pub authorization: Option<&'a str>,
    pub path_and_query: &'a str,
}

/// On a cluster, where a read of `room` should go instead of being answered
/// here: `None` when this node owns the room, no live node does, or the read
/// was already sent on by a node (`FORWARDED_HEADER`, signed; a read makes
/// one hop, so maps that disagree for a moment cannot bounce it).
pub(crate) fn owner_read<'a>(
    req: &'a actix_web::HttpRequest,
    state: &'a AppState,
    room: &str,
) -> Option<OwnerRead<'a>> {
    use crate::cluster::{FORWARDED_HEADER, MAX_HOPS, Route};
    let cluster = state.cluster.as_deref()?;
    let Route::Owner { node, url } = cluster.route(room) else {
        return None;
    };
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    if cluster.hops(header(FORWARDED_HEADER), path_and_query) >= MAX_HOPS {
        return None;
    }
    Some(OwnerRead {
        cluster,
        node,
        url,
        authorization: header(actix_web::http::header::AUTHORIZATION.as_str()),
        path_and_query,
    })
}

/// CORS for the frontend's origins: reads only (GET), with the Authorization
/// header for LiveKit tokens and Last-Event-ID for resuming streams.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let cors = actix_cors::Cors::default()
        .allowed_methods(["GET"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::HeaderName::from_static("last-event-id"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::BadQuery(err.to_string()).into()),
    )
    .service(webhooks::receive)
    .service(rooms::list)
    .service(rooms::room)
    .service(rooms::participants)
    .service(stream::room_stream)
    .service(debug::actors)
    .service(debug::actor)
    .service(debug::cluster)
    .service(health::healthz)
    .service(health::readyz)
    .service(health::metrics)
    .service(health::openapi)
    .service(ui::root)
    .service(ui::index)
    .service(ui::script)
    .service(ui::style)
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NoRoute)
    }));
}
