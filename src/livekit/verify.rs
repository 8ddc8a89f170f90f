//! Checks that a webhook comes from LiveKit, exactly as LiveKit's receivers
//! do: an HS256 JWT signed with the API secret, `iss` = the API key, `exp`
//! required (60 s of leeway), `nbf` honoured, and a `sha256` claim equal to
//! the standard base64 of the SHA-256 of the raw body bytes.
//!
//! The JWT checks are LiveKit's own `TokenVerifier` (livekit-api); the body
//! hash is compared here because `WebhookReceiver` also parses, and roomd
//! parses more tolerantly (see `parse.rs`). Never log the token or the body.

use base64::Engine;
use livekit_api::access_token::{Claims, TokenVerifier};
use sha2::{Digest, Sha256};

/// LiveKit tokens signed with one API key and secret: webhooks' and
/// readers' alike. `TokenVerifier` checks HS256, the signature, `exp`, `nbf`,
/// and `iss` when it is there; a token must also name the key as its `iss`,
/// as README promises and LiveKit's tokens always do.
#[derive(Debug, Clone)]
pub struct Tokens {
    verifier: TokenVerifier,
    api_key: String,
}

impl Tokens {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            verifier: TokenVerifier::with_api_key(api_key, api_secret),
            api_key: api_key.to_owned(),
        }
    }

    /// The claims of a token that verifies, or what is wrong with it.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let claims = self
            .verifier
            .verify(token)
            .map_err(|e| format!("the token does not verify ({e})"))?;
        if claims.iss != self.api_key {
            return Err("the token's issuer (iss) is not the API key".into());
        }
        Ok(claims)
    }
}

/// The token in an `Authorization` value, with or without a `Bearer `
/// prefix (any case); `None` when empty.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

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
    tokens: Tokens,
}

impl WebhookVerifier {
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            tokens: Tokens::new(api_key, api_secret),
        }
    }

    /// `authorization` is the header's value: LiveKit sends the bare token;
    /// a `Bearer ` prefix is accepted too.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        let token = authorization
            .and_then(bearer)
            .ok_or(VerifyError::MissingToken)?;
        let claims = self
            .tokens
            .verify(token)
            .map_err(VerifyError::InvalidToken)?;
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
