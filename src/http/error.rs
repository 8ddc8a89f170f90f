//! The one place that decides an error's status and JSON body, and logs it once.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::livekit::{ParseError, VerifyError};
use crate::room::messages::RoomError;
use crate::room::{DeliverError, Unavailable};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] VerifyError),
    #[error("malformed webhook body: {0}")]
    BadBody(#[from] ParseError),
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read the body: {0}")]
    BodyRead(String),
    #[error("the body did not arrive within {secs} s (server.body_timeout_secs)")]
    BodyTimeout { secs: u64 },
    #[error("{limit} webhook bodies are being read already (server.max_body_reads)")]
    TooManyBodies { limit: usize },
    #[error("a body with this token is being read already (a token signs one body)")]
    BodyBeingRead,
    #[error(transparent)]
    Busy(DeliverError),
    #[error(transparent)]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    #[error("no node holds this room's shard right now (a takeover is under way); retry")]
    NoOwner {
        /// Answering a node that sent the request on: it may wait longer
        /// for the shard to move (`NO_OWNER_HEADER`).
        tell_sender: bool,
    },
    #[error("room {0:?} not found")]
    RoomNotFound(String),
    #[error("a token is required: Authorization: Bearer <LiveKit token>")]
    NeedsToken,
    #[error("invalid token: {0}")]
    BadToken(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("no route for this request")]
    NoRoute,
    #[error("{limit} live-update streams are open already (api.max_streams)")]
    TooManyStreams { limit: usize },
    /// The event contradicts what is stored and would on every retry.
    #[error(transparent)]
    Conflict(StoreError),
}

impl From<DeliverError> for ApiError {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::Busy { .. } | DeliverError::Overloaded { .. } => Self::Busy(e),
            DeliverError::Unavailable {
                cause: Unavailable::Room(RoomError::Store(err @ StoreError::SidTaken { .. })),
                ..
            } => Self::Conflict(err),
            DeliverError::Unavailable { .. } => Self::Unavailable(Box::new(e)),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) | Self::NeedsToken | Self::BadToken(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::BadBody(_) | Self::BodyRead(_) | Self::BadQuery(_) => "bad_request",
            Self::TooLarge { .. } => "payload_too_large",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::Busy(_)
            | Self::TooManyStreams { .. }
            | Self::TooManyBodies { .. }
            | Self::BodyBeingRead => "busy",
            Self::Unavailable(_) | Self::NoOwner { .. } => "unavailable",
            Self::RoomNotFound(_) | Self::NoRoute => "not_found",
            Self::Conflict(_) => "conflict",
        }
    }

    /// What the client is told. A failure inside roomd (the database's own
    /// words, which can echo input) is logged above with the request id,
    /// never sent.
    fn public_message(&self) -> String {
        match self {
            Self::Unavailable(_) => {
                "roomd cannot commit or read this now; retry later (the log has the cause under this request's id)".into()
            }
            _ => self.to_string(),
        }
    }

    /// Seconds LiveKit (or any client) should wait before retrying.
    fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Busy(_)
            | Self::TooManyStreams { .. }
            | Self::TooManyBodies { .. }
            | Self::BodyBeingRead
            | Self::NoOwner { .. } => Some(1),
            Self::Unavailable(_) => Some(2),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) | Self::NeedsToken | Self::BadToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadBody(_) | Self::BodyRead(_) | Self::BadQuery(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Busy(_)
            | Self::Unavailable(_)
            | Self::TooManyStreams { .. }
            | Self::TooManyBodies { .. }
            | Self::BodyBeingRead
            | Self::NoOwner { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RoomNotFound(_) | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // Once, here, with every cause: the client gets only the first line.
        let error = crate::telemetry::chain(self);
        // A failure is a warning; a refusal for load (503 busy) is routine,
        // and under a flood a warning per request would flood the log.
        if matches!(self, Self::Unavailable(_)) {
            tracing::warn!(status = status.as_u16(), %error, "request refused");
        } else if status.is_server_error() {
            tracing::info!(status = status.as_u16(), %error, "request refused");
        } else if !matches!(self, Self::RoomNotFound(_) | Self::NoRoute) {
            tracing::info!(status = status.as_u16(), %error, "request rejected");
        }
        let mut response = HttpResponse::build(status);
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        if matches!(self, Self::NoOwner { tell_sender: true }) {
            response.insert_header((
                crate::cluster::NO_OWNER_HEADER,
                HeaderValue::from_static("1"),
            ));
        }
        if matches!(
            self,
            Self::Unauthorized(_) | Self::NeedsToken | Self::BadToken(_)
        ) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.public_message(),
        })
    }
}

/// The last guard of "every error is JSON": an error that a layer roomd does
/// not own answered as text (a CORS refusal, an extractor of actix's) is
/// answered again as JSON, with the same status and headers, and logged once.
pub async fn json_errors<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let response = next.call(req).await?;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        // Passed on as it is: no allocation on the path every webhook takes.
        return Ok(response.map_into_left_body());
    }
    let (req, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let text = actix_web::body::to_bytes_limited(body, 4096)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .filter(|text| !text.is_empty() && !status.is_server_error())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    tracing::info!(status = status.as_u16(), error = %text, "request rejected");
    let mut json = HttpResponse::build(status);
    for (name, value) in head.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.append_header((name.clone(), value.clone()));
        }
    }
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let json = json.json(ErrorBody {
        error: &code,
        message: text,
    });
    Ok(ServiceResponse::new(req, json).map_into_right_body())
}
