//! The one place that decides an error's status and JSON body, and logs it once.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::livekit::{ParseError, VerifyError};
use crate::room::DeliverError;
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
    #[error("{0}")]
    Busy(DeliverError),
    #[error("{0}")]
    Unavailable(String),
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
}

impl From<DeliverError> for ApiError {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::Busy { .. } | DeliverError::Overloaded { .. } => Self::Busy(e),
            DeliverError::Unavailable { .. } => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
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
            Self::Busy(_) | Self::TooManyStreams { .. } => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::RoomNotFound(_) | Self::NoRoute => "not_found",
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
            Self::Busy(_) | Self::TooManyStreams { .. } => Some(1),
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
            Self::Busy(_) | Self::Unavailable(_) | Self::TooManyStreams { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RoomNotFound(_) | Self::NoRoute => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request refused");
        } else if !matches!(self, Self::RoomNotFound(_) | Self::NoRoute) {
            tracing::info!(status = status.as_u16(), error = %self, "request rejected");
        }
        let mut response = HttpResponse::build(status);
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
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
