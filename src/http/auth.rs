//! Who is reading: LiveKit's own tokens, so nobody learns a new scheme. A
//! token signed with the configured API key/secret (`Authorization: Bearer`)
//! whose video grant has `roomList`, or `roomAdmin` without a room, reads
//! everything; a join token (`roomJoin`) or `roomAdmin` for room X reads room X.

use actix_web::HttpRequest;
use actix_web::http::header;
use livekit_api::access_token::TokenVerifier;

use super::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    Anonymous,
    Admin,
    /// May read this one room.
    Room(String),
}

impl Reader {
    /// Who sent `req`: anonymous without a token, 401 for a token that does
    /// not verify, else what its grants allow.
    pub fn of(req: &HttpRequest, tokens: &TokenVerifier) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(Self::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::BadToken("expected `Authorization: Bearer <token>`".into()))?;
        let claims = tokens
            .verify(token.trim())
            .map_err(|e| ApiError::BadToken(e.to_string()))?;
        let video = claims.video;
        Ok(
            if video.room_list || (video.room_admin && video.room.is_empty()) {
                Self::Admin
            } else if (video.room_join || video.room_admin) && !video.room.is_empty() {
                Self::Room(video.room)
            } else {
                Self::Anonymous
            },
        )
    }

    /// 401 without a token, 403 with one that lacks the grant.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Anonymous => Err(ApiError::NeedsToken),
            Self::Room(_) => Err(ApiError::Forbidden(
                "an admin grant (roomList) is required".into(),
            )),
        }
    }

    pub fn require_room(&self, room: &str) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Room(granted) if granted == room => Ok(()),
            Self::Anonymous => Err(ApiError::NeedsToken),
            Self::Room(granted) => Err(ApiError::Forbidden(format!(
                "the token is for room {granted:?}"
            ))),
        }
    }
}
