//! Webhook bodies in LiveKit's own format: `livekit-protocol`'s
//! `WebhookEvent` serialized as protobuf JSON, as LiveKit's server does.
//! For the developer CLI and the load generator.

use livekit_protocol as proto;

/// A participant as the body describes it.
#[derive(Debug, Clone, Default)]
pub struct BodyParticipant {
    pub sid: String,
    pub identity: String,
    /// LiveKit's kind name (`"AGENT"`); empty for a standard participant.
    pub kind: String,
}

/// One webhook body. Empty strings are left out, as LiveKit leaves them out.
pub fn webhook_body(
    event: &str,
    id: &str,
    created_at: i64,
    room_name: &str,
    room_sid: &str,
    participant: Option<&BodyParticipant>,
) -> String {
    let kind = |name: &str| {
        proto::participant_info::Kind::from_str_name(&name.to_ascii_uppercase())
            .unwrap_or(proto::participant_info::Kind::Standard)
    };
    let event = proto::WebhookEvent {
        event: event.to_owned(),
        id: id.to_owned(),
        created_at,
        room: Some(proto::Room {
            name: room_name.to_owned(),
            sid: room_sid.to_owned(),
            ..Default::default()
        }),
        participant: participant.map(|p| proto::ParticipantInfo {
            sid: p.sid.clone(),
            identity: p.identity.clone(),
            kind: kind(&p.kind).into(),
            state: if event.starts_with("participant_joined") {
                proto::participant_info::State::Active
            } else {
                proto::participant_info::State::Disconnected
            }
            .into(),
            joined_at: created_at,
            ..Default::default()
        }),
        ..Default::default()
    };
    serde_json::to_string(&event).expect("a WebhookEvent always serializes")
}
