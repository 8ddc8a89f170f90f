//! LiveKit's RoomService (Twirp), through `livekit-api`'s `RoomClient`: the
//! truth reconciliation compares roomd's rooms with. It signs a short-lived
//! token per call (`roomList` for ListRooms, `roomAdmin` for that very room
//! for ListParticipants).

use std::time::Duration;

use chrono::{DateTime, Utc};

use livekit_api::services::room::RoomClient;
use livekit_protocol as proto;

use super::parse::{millis_or_seconds, participant_kind};
use crate::event::{ParticipantRef, RoomRef, RoomTruth};

#[derive(Debug, thiserror::Error)]
#[error("LiveKit's RoomService failed")]
pub struct ServiceError(#[from] livekit_api::services::ServiceError);

pub struct RoomService {
    client: RoomClient,
}

impl RoomService {
    pub fn new(url: &str, api_key: &str, api_secret: &str, timeout: Duration) -> Self {
        Self {
            client: RoomClient::with_api_key(url, api_key, api_secret)
                .with_request_timeout(timeout)
                .with_failover(false),
        }
    }

    /// Every room LiveKit has now.
    pub async fn rooms(&self) -> Result<Vec<RoomRef>, ServiceError> {
        let rooms = self
            .client
            .list_rooms(Vec::new())
            .await
            .map_err(ServiceError)?;
        Ok(rooms
            .into_iter()
            .filter(|r| !r.name.is_empty())
            .map(|r| RoomRef {
                created_at: millis_or_seconds(r.creation_time_ms, r.creation_time),
                sid: (!r.sid.is_empty()).then_some(r.sid),
                name: r.name,
            })
            .collect())
    }

    /// Who is in `room` now. ListParticipants also lists participants still
    /// connecting; only ACTIVE ones count, as webhooks only report those.
    pub async fn truth(
        &self,
        room: RoomRef,
        listed_at: DateTime<Utc>,
    ) -> Result<RoomTruth, ServiceError> {
        let participants = self
            .client
            .list_participants(&room.name)
            .await
            .map_err(ServiceError)?;
        let active = i32::from(proto::participant_info::State::Active);
        Ok(RoomTruth {
            room,
            listed_at,
            participants: participants
                .into_iter()
                .filter(|p| p.state == active && !p.identity.is_empty())
                .map(|p| ParticipantRef {
                    sid: (!p.sid.is_empty()).then(|| p.sid.into()),
                    kind: participant_kind(p.kind),
                    name: (!p.name.is_empty()).then(|| p.name.into()),
                    joined_at: millis_or_seconds(p.joined_at_ms, p.joined_at),
                    identity: p.identity.into(),
                })
                .collect(),
        })
    }
}
