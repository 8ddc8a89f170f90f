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
        // The scheme with nothing after it (trimmed above): no token.
        _ if value.eq_ignore_ascii_case("bearer") => "",
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::livekit::sign_webhook;

    const KEY: &str = "APIunit";
    const SECRET: &str = "unit-secret-0123456789abcdef0123456789";

    fn signed(body: &[u8]) -> String {
        sign_webhook(KEY, SECRET, body, Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn bearer_takes_the_token_with_or_without_its_scheme() {
        assert_eq!(bearer("abc"), Some("abc"));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bEaReR   abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("  "), None);
    }

    // The token is judged from the header alone, before any body is read;
    // the body is then held against the hash the token claims.
    #[test]
    fn the_token_is_checked_before_the_body_and_the_body_after() {
        let verifier = WebhookVerifier::new(KEY, SECRET);
        let token = signed(b"the body");
        let hash = verifier.token(Some(&token)).unwrap();
        assert_eq!(hash.check(b"the body"), Ok(()));
        assert_eq!(hash.check(b"the body "), Err(VerifyError::BodyHashMismatch));
        assert_eq!(verifier.token(None).unwrap_err(), VerifyError::MissingToken);
        let forged =
            sign_webhook(KEY, "another-secret", b"the body", Duration::from_secs(60)).unwrap();
        assert!(matches!(
            verifier.token(Some(&forged)),
            Err(VerifyError::InvalidToken(_))
        ));
    }

    #[test]
    fn each_token_failure_says_what_failed() {
        let tokens = Tokens::new(KEY, SECRET);
        let now = chrono::Utc::now().timestamp();
        let encode = |claims: serde_json::Value, alg, secret: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(alg),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let hs256 = jsonwebtoken::Algorithm::HS256;
        let cases = [
            (
                encode(
                    serde_json::json!({"iss": KEY, "exp": now - 600}),
                    hs256,
                    SECRET,
                ),
                "expired",
            ),
            (
                encode(
                    serde_json::json!({"iss": KEY, "nbf": now + 600, "exp": now + 900}),
                    hs256,
                    SECRET,
                ),
                "not valid yet",
            ),
            (
                encode(
                    serde_json::json!({"iss": KEY, "exp": now + 600}),
                    hs256,
                    "wrong",
                ),
                "signature",
            ),
            (
                encode(
                    serde_json::json!({"iss": "APIother", "exp": now + 600}),
                    hs256,
                    SECRET,
                ),
                "issuer",
            ),
            (
                encode(serde_json::json!({"exp": now + 600}), hs256, SECRET),
                "issuer",
            ),
            (
                encode(
                    serde_json::json!({"iss": KEY, "exp": now + 600}),
                    jsonwebtoken::Algorithm::HS512,
                    SECRET,
                ),
                "HS256",
            ),
            ("a.b.c".to_owned(), "not a well-formed JWT"),
        ];
        for (token, says) in cases {
            let error = tokens.verify(&token).unwrap_err();
            assert!(error.contains(says), "{says:?} not in {error:?}");
        }
    }
}
