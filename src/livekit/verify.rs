//! Checks that a webhook comes from LiveKit, exactly as LiveKit's receivers
//! do: an HS256 JWT signed with the API secret, `iss` = the API key, `exp`
//! required (60 s of leeway), `nbf` honoured, and a `sha256` claim equal to
//! the standard base64 of the SHA-256 of the raw body bytes.
//!
//! The JWT checks are LiveKit's own `TokenVerifier` (livekit-api); the body
//! hash is compared here because `WebhookReceiver` also parses, and roomd
//! parses more tolerantly (see `parse.rs`). Never log the token or the body.

use base64::Engine;
use livekit_api::access_token::{AccessTokenError, Claims, TokenVerifier};
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
        let claims = self.verifier.verify(token).map_err(|e| describe(&e))?;
        if claims.iss != self.api_key {
            return Err("the token's issuer (iss) is not the API key".into());
        }
        Ok(claims)
    }
}

/// What is wrong with a token, in words a sender can act on
/// (`AccessTokenError` says "failed to encode jwt" for every decoding failure).
fn describe(error: &AccessTokenError) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let AccessTokenError::Encoding(error) = error else {
        return error.to_string();
    };
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not match the API secret".into(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the API key".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token is not signed with HS256".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "the token is not a well-formed JWT".into(),
        _ => format!("the token does not verify ({error})"),
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

    /// Checks the token in `authorization` (the header's value: LiveKit
    /// sends the bare token; a `Bearer ` prefix is accepted too) before any
    /// of the body is read, and returns the body hash it claims.
    pub fn token(&self, authorization: Option<&str>) -> Result<BodyHash, VerifyError> {
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
        Ok(BodyHash(claimed))
    }

    /// The token, then the body it signs.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        self.token(authorization)?.check(body)
    }
}

/// The SHA-256 a verified token claims for the body it came with.
#[derive(Debug)]
pub struct BodyHash(Vec<u8>);

impl BodyHash {
    pub fn check(&self, body: &[u8]) -> Result<(), VerifyError> {
        if self.0[..] != Sha256::digest(body)[..] {
            return Err(VerifyError::BodyHashMismatch);
        }
        Ok(())
    }
}
