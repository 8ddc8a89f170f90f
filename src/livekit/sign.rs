//! Signs a webhook body the way LiveKit's server does, for the developer
//! CLI and the load generator (roomd itself only verifies).

use std::time::Duration;

use base64::Engine;
use livekit_api::access_token::{AccessToken, AccessTokenError};
use sha2::{Digest, Sha256};

/// An HS256 token with `iss` = `api_key` and `sha256` = base64(SHA-256(body)),
/// valid for `ttl`: what LiveKit puts in a webhook's `Authorization` header.
pub fn sign_webhook(
    api_key: &str,
    api_secret: &str,
    body: &[u8],
    ttl: Duration,
) -> Result<String, AccessTokenError> {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    AccessToken::with_api_key(api_key, api_secret)
        .with_sha256(&hash)
        .with_ttl(ttl)
        .to_jwt()
}
