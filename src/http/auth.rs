//! Who is reading: LiveKit's own tokens, so nobody learns a new scheme. A
//! token signed with the configured API key/secret (`Authorization: Bearer`)
//! whose video grant has `roomList`, or `roomAdmin` without a room, reads
//! everything; a join token (`roomJoin`) or `roomAdmin` for room X reads room X.

use actix_web::HttpRequest;
use actix_web::http::header;

use super::error::ApiError;
use crate::livekit::{Tokens, bearer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    Anonymous,
    Admin,
    /// May read this one room.
    Room(String),
    /// A verified token that grants no reading (403, not 401).
    NoGrant,
}

impl Reader {
    /// Who sent `req`: anonymous without a token, 401 for a token that does
    /// not verify, else what its grants allow.
    pub fn of(req: &HttpRequest, tokens: &Tokens) -> Result<Self, ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(Self::Anonymous);
        };
        let token =
            value.to_str().ok().and_then(bearer).ok_or_else(|| {
                ApiError::BadToken("expected `Authorization: Bearer <token>`".into())
            })?;
        let claims = tokens.verify(token).map_err(ApiError::BadToken)?;
        let video = claims.video;
        Ok(
            if video.room_list || (video.room_admin && video.room.is_empty()) {
                Self::Admin
            } else if (video.room_join || video.room_admin) && !video.room.is_empty() {
                Self::Room(video.room)
            } else {
                Self::NoGrant
            },
        )
    }

    /// 401 without a token, 403 with one that lacks the grant.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Anonymous => Err(ApiError::NeedsToken),
            Self::Room(_) | Self::NoGrant => Err(ApiError::Forbidden(
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
            Self::NoGrant => Err(ApiError::Forbidden(
                "the token grants no room (roomJoin, roomAdmin or roomList)".into(),
            )),
        }
    }
}
