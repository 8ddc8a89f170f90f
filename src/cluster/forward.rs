//! One hop to the room's owner. Not a redirect: LiveKit's Go client drops
//! `Authorization` on a redirect to another host. The owner checks the token
//! again; this node checked it before reading the body.

use std::time::Duration;

use actix_web::web::Bytes;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Cluster;

/// Set on a forwarded request to the hops it has made, signed (`HOPS.MAC`,
/// an HMAC-SHA256 with the API secret over the hops and what the request is
/// bound to), so only a node can set it: a client's copy counts as none. A
/// request goes at most `MAX_HOPS` hops: two nodes whose maps disagree for a
/// moment must not bounce it, but one that reaches a node handing its shards
/// over may go on to the new owner.
pub const FORWARDED_HEADER: &str = "x-roomd-forwarded";

/// Set on a node's 503 "no node holds this room's shard": the node asked
/// knows of no owner, so the asker may wait for the map to move itself.
pub const NO_OWNER_HEADER: &str = "x-roomd-no-owner";
pub const MAX_HOPS: u8 = 2;

type HopMac = Hmac<Sha256>;

fn hop_mac(secret: &[u8], hops: u8, bound_to: &str) -> HopMac {
    let mut mac = HopMac::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"roomd-hop\0");
    mac.update(&[hops]);
    mac.update(bound_to.as_bytes());
    mac
}

/// The `FORWARDED_HEADER` value a node sends with a request that has made
/// `hops` hops and is bound to `bound_to` (its token, or its path and query).
pub fn hop_header(secret: &[u8], hops: u8, bound_to: &str) -> String {
    let tag = hop_mac(secret, hops, bound_to).finalize().into_bytes();
    format!("{hops}.{}", URL_SAFE_NO_PAD.encode(tag))
}

impl Cluster {
    fn hop_header(&self, hops: u8, bound_to: &str) -> String {
        hop_header(&self.secret, hops, bound_to)
    }

    /// The hops a request has made: what its `FORWARDED_HEADER` says if a
    /// node signed it for this request (`bound_to`: its token or its path),
    /// else none.
    pub fn hops(&self, header: Option<&str>, bound_to: &str) -> u8 {
        let Some((hops, tag)) = header.and_then(|h| h.split_once('.')) else {
            return 0;
        };
        let (Ok(hops), Ok(tag)) = (hops.parse::<u8>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return 0;
        };
        match hop_mac(&self.secret, hops, bound_to).verify_slice(&tag) {
            Ok(()) => hops,
            Err(_) => 0,
        }
    }
}

/// The owner's answer, to pass back as it is.
pub struct Forwarded {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
    /// The node asked no longer holds the room and knows no owner.
    pub no_owner: bool,
}

impl Cluster {
    /// Sends a webhook on to the owner at `url`, within `within` (what is
    /// left of the request's bound).
    pub async fn forward_webhook(
        &self,
        url: &str,
        authorization: &str,
        body: Bytes,
        hops: u8,
        within: Duration,
    ) -> Result<Forwarded, reqwest::Error> {
        let answer = self
            .client
            .post(format!("{}/v1/webhooks/livekit", url.trim_end_matches('/')))
            .timeout(within)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/webhook+json")
            .header(FORWARDED_HEADER, self.hop_header(hops + 1, authorization))
            .body(body)
            .send()
            .await;
        self.answered("webhook", answer).await
    }

    /// A read (`path_and_query` as the client sent it) answered by the
    /// room's owner at `url`, from memory, within `cluster.forward_timeout_ms`.
    pub async fn forward_read(
        &self,
        url: &str,
        path_and_query: &str,
        authorization: Option<&str>,
    ) -> Result<Forwarded, reqwest::Error> {
        let mut request = self
            .client
            .get(format!("{}{path_and_query}", url.trim_end_matches('/')))
            .header(FORWARDED_HEADER, self.hop_header(MAX_HOPS, path_and_query));
        if let Some(auth) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let answer = request.send().await;
        self.answered("read", answer).await
    }

    /// Opens a room's live-update stream on its owner at `url`
    /// (`path_and_query` as the client sent it).
    pub async fn forward_stream(
        &self,
        url: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        // A stream lasts: only connecting is bounded.
        let mut request = self
            .stream_client
            .get(format!("{}{path_and_query}", url.trim_end_matches('/')))
            .header(FORWARDED_HEADER, self.hop_header(MAX_HOPS, path_and_query));
        if let Some(auth) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let answer = request.send().await;
        self.forwarded(
            "stream",
            outcome(answer.as_ref().map(|r| r.status().as_u16())),
        );
        answer
    }

    /// The owner's whole answer to a forward of `kind`, counted.
    async fn answered(
        &self,
        kind: &str,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<Forwarded, reqwest::Error> {
        let answer = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let no_owner = response.headers().contains_key(NO_OWNER_HEADER);
                response.bytes().await.map(|body| Forwarded {
                    status,
                    retry_after,
                    body,
                    no_owner,
                })
            }
            Err(err) => Err(err),
        };
        self.forwarded(kind, outcome(answer.as_ref().map(|f| f.status)));
        answer
    }

    /// How long a request may wait for a takeover under way to settle.
    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.forward_timeout_ms)
    }

    /// Counts a request that could not go on to an owner (`no_owner`, or
    /// `too_many_hops`) in the metrics; it was not forwarded.
    pub fn no_owner(&self, kind: &str, why: &str) {
        self.metrics.forwards.with_label_values(&[kind, why]).inc();
    }
}

/// A forward's result label: answered (below 400, or not), or no answer.
fn outcome<E>(status: Result<u16, E>) -> &'static str {
    match status {
        Ok(status) if status < 400 => "ok",
        Ok(_) => "refused",
        Err(_) => "failed",
    }
}
