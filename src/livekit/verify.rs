//! Checks that a webhook comes from LiveKit, exactly as LiveKit's receivers
//! do: an HS256 JWT signed with the API secret, `iss` = the API key, `exp`
//! required (60 s of leeway), `nbf` honoured, and a `sha256` claim equal to
//! the standard base64 of the SHA-256 of the raw body bytes.
//!
//! The JWT checks are LiveKit's own `TokenVerifier` (livekit-api); the body
//! hash is compared here because `WebhookReceiver` also parses, and roomd
//! parses more tolerantly (see `parse.rs`). Never log the token or the body.

use base64::Engine;
use livekit_api::access_token::TokenVerifier;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing Authorization header")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token has no sha256 claim")]
    MissingBodyHash,
    #[error("the token's sha256 claim does not match the body")]
    BodyHashMismatch,
}

/// Verifies webhook tokens for one API key. Built once at start.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    tokens: TokenVerifier,
}

impl WebhookVerifier {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            tokens: TokenVerifier::with_api_key(api_key, api_secret),
        }
    }

    /// `authorization` is the header's value: LiveKit sends the bare token;
    /// a `Bearer ` prefix is accepted too.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let token = header.ok_or(VerifyError::MissingToken)?;
        let token = strip_bearer(token);
        let claims = self
            .tokens
            .verify(token)
            .map_err(|e| VerifyError::InvalidToken(e.to_string()))?;
        if claims.sha256.is_empty() {
            return Err(VerifyError::MissingBodyHash);
        }
        let claimed = base64::engine::general_purpose::STANDARD
            .decode(claims.sha256.as_bytes())
            .map_err(|_| VerifyError::BodyHashMismatch)?;
        if claimed[..] != Sha256::digest(body)[..] {
            return Err(VerifyError::BodyHashMismatch);
        }
        Ok(())
    }
}

fn strip_bearer(token: &str) -> &str {
    match token.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => token,
    }
}
