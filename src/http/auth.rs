//! Who is reading: LiveKit's own tokens, so nobody learns a new scheme. A
//! token signed with the configured API key/secret (`Authorization: Bearer`)
//! whose video grant has `roomList`, or `roomAdmin` without a room, reads
//! everything; a join token (`roomJoin`) or `roomAdmin` for room X reads room X.
//! Browsers may pass the token as `?access_token=`, as LiveKit's clients do;
//! no log line or span carries the query string.

use std::borrow::Cow;

use actix_web::HttpRequest;
use actix_web::http::header;

use super::error::ApiError;
use crate::livekit::{Tokens, bearer};

/// The `access_token` query parameter, when there is one. An empty one is
/// a token that does not verify, not an anonymous reader.
fn query_token(query: &str) -> Option<Cow<'_, str>> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, token)| token)
}

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
    /// not verify, else what its grants allow. The token comes from
    /// `Authorization: Bearer`, or else from `?access_token=` as LiveKit's
    /// clients send it (a browser's `EventSource` cannot set headers).
    pub fn of(req: &HttpRequest, tokens: &Tokens) -> Result<Self, ApiError> {
        let token = match req.headers().get(header::AUTHORIZATION) {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(bearer)
                .map(Cow::Borrowed)
                .ok_or_else(|| {
                    ApiError::BadToken("expected `Authorization: Bearer <token>`".into())
                })?,
            None => match query_token(req.query_string()) {
                Some(token) => token,
                None => return Ok(Self::Anonymous),
            },
        };
        let claims = tokens.verify(&token).map_err(ApiError::BadToken)?;
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
