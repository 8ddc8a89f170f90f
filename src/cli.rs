//! Developer commands in the roomd binary: `roomd webhook send` replaces the
//! seed's hand-written curl with a LiveKit-format body, signed like LiveKit
//! signs it, with the configured key and secret.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use crate::livekit::body::{BodyParticipant, webhook_body};
use crate::livekit::sign_webhook;

#[derive(Args, Debug)]
pub struct SendWebhook {
    /// The event: room_started, participant_joined, participant_left,
    /// participant_connection_aborted, room_finished, track_published, ...
    #[arg(long)]
    pub event: String,
    /// The LiveKit room name.
    #[arg(long)]
    pub room: String,
    /// The room's sid; defaults to one derived from the name.
    #[arg(long)]
    pub room_sid: Option<String>,
    /// The participant's identity (participant events).
    #[arg(long)]
    pub identity: Option<String>,
    /// The participant's session sid; defaults to one derived from the identity.
    #[arg(long)]
    pub sid: Option<String>,
    /// The participant's kind (standard, agent, egress, ingress, sip).
    #[arg(long, default_value = "")]
    pub kind: String,
    /// The event id; a new one by default (reuse one to see a redelivery).
    #[arg(long)]
    pub id: Option<String>,
    /// roomd's base URL; defaults to the configured bind address.
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn send_webhook(settings: &Settings, cmd: SendWebhook) -> anyhow::Result<()> {
    let participant = cmd.identity.as_ref().map(|identity| BodyParticipant {
        sid: cmd.sid.clone().unwrap_or_else(|| format!("PA_{identity}")),
        identity: identity.clone(),
        kind: cmd.kind.clone(),
    });
    let id = cmd
        .id
        .unwrap_or_else(|| format!("EV_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let room_sid = cmd.room_sid.unwrap_or_else(|| format!("RM_{}", cmd.room));
    let body = webhook_body(
        &cmd.event,
        &id,
        chrono::Utc::now().timestamp(),
        &cmd.room,
        &room_sid,
        participant.as_ref(),
    );
    let token = sign_webhook(
        &settings.livekit.api_key,
        &settings.livekit.api_secret,
        body.as_bytes(),
        Duration::from_secs(600),
    )?;
    let base = cmd.url.unwrap_or_else(|| {
        let bind = settings
            .bind_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default()
            .replace("0.0.0.0", "127.0.0.1");
        format!("http://{bind}")
    });
    let url = format!("{}/v1/webhooks/livekit", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/webhook+json")
        .header("Authorization", token)
        .body(body.clone())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let reply = response.text().await.unwrap_or_default();
    println!("POST {url}\n{body}\n-> {status} {reply}");
    anyhow::ensure!(status.is_success(), "roomd answered {status}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct MintToken {
    /// An admin token (`roomList`): reads every room and the debug endpoints.
    #[arg(long, conflicts_with_all = ["room", "identity"])]
    pub admin: bool,
    /// A join token for this room: reads that room (like the token a frontend joined with).
    #[arg(long, requires = "identity")]
    pub room: Option<String>,
    #[arg(long)]
    pub identity: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

/// Prints a LiveKit token signed with the configured key and secret.
pub fn mint_token(settings: &Settings, cmd: MintToken) -> anyhow::Result<()> {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    let grants = match (&cmd.room, cmd.admin) {
        (Some(room), _) => VideoGrants {
            room_join: true,
            room: room.clone(),
            ..Default::default()
        },
        (None, true) => VideoGrants {
            room_list: true,
            ..Default::default()
        },
        (None, false) => anyhow::bail!("say --admin, or --room NAME --identity ID"),
    };
    let mut token =
        AccessToken::with_api_key(&settings.livekit.api_key, &settings.livekit.api_secret)
            .with_grants(grants)
            .with_ttl(Duration::from_secs(cmd.ttl));
    if let Some(identity) = &cmd.identity {
        token = token.with_identity(identity);
    }
    println!("{}", token.to_jwt()?);
    Ok(())
}
