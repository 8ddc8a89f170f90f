//! Rows as roomd writes them, for filling a database straight through the
//! schema (the load generator's seed, tests of recovery): live rooms and
//! open sessions, without the webhooks that would make them.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use uuid::Uuid;

use super::entity::{participants, rooms};

/// A live room's row, as roomd writes one.
pub fn active_room(
    id: Uuid,
    name: String,
    sid: Option<String>,
    participants: i32,
    now: DateTime<Utc>,
) -> rooms::ActiveModel {
    rooms::ActiveModel {
        id: Set(id),
        livekit_name: Set(name),
        livekit_sid: Set(sid),
        status: Set("active".into()),
        current_participants: Set(participants),
        started_at: Set(now),
        ended_at: Set(None),
        end_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        changed_at: Set(Some(now)),
    }
}

/// A standard participant's open session row, as roomd writes one.
pub fn open_participant(
    id: Uuid,
    room_id: Uuid,
    identity: String,
    sid: String,
    now: DateTime<Utc>,
) -> participants::ActiveModel {
    participants::ActiveModel {
        id: Set(id),
        room_id: Set(room_id),
        identity: Set(identity),
        user_id: Set(None),
        sid: Set(Some(sid)),
        kind: Set("standard".into()),
        name: Set(None),
        status: Set("joined".into()),
        joined_at: Set(Some(now)),
        left_at: Set(None),
        leave_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}
