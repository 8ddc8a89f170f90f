//! Immutable pictures of a room, published by its actor after each commit.
//! Reads take the latest one without going through the actor's mailbox.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use uuid::Uuid;

use super::presence::ParticipantList;
use super::state::{Instance, RoomState};
use crate::event::{Label, ParticipantKind};
use crate::record::{RoomRecord, RoomStatus, SessionRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One room instance as the read API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    pub name: Arc<str>,
    pub sid: Option<Arc<str>>,
    pub status: RoomStatus,
    pub participant_count: usize,
    pub counts_by_kind: BTreeMap<ParticipantKind, usize>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<Label>,
}

impl RoomView {
    /// The room's count is the record's `current_participants`, which the
    /// state machine keeps equal to the distinct identities present.
    pub fn of_instance(instance: &Instance) -> Self {
        Self {
            counts_by_kind: instance.counts_by_kind(),
            ..Self::of_record(instance.record())
        }
    }

    pub fn is_active(&self) -> bool {
        self.status == RoomStatus::Active
    }

    /// `self` with the counts by kind read for `room`, if any were.
    pub fn with_counts(
        mut self,
        counts: &mut HashMap<Uuid, BTreeMap<ParticipantKind, usize>>,
        room: &RoomRecord,
    ) -> Self {
        if let Some(by_kind) = counts.remove(&room.id) {
            self.counts_by_kind = by_kind;
        }
        self
    }

    /// A view of a room that has no live actor (read back from the database).
    pub fn of_record(room: &RoomRecord) -> Self {
        Self {
            name: room.name.clone(),
            sid: room.sid.clone(),
            status: room.status,
            participant_count: usize::try_from(room.current_participants).unwrap_or(0),
            counts_by_kind: BTreeMap::new(),
            started_at: room.started_at,
            ended_at: room.ended_at,
            end_reason: room.end_reason.clone(),
        }
    }
}

/// The last event an actor applied, for admins.
#[derive(Debug, Clone, Serialize)]
pub struct LastEvent {
    /// LiveKit's are 15 bytes (`EV_` and 12 more): kept inline, where a
    /// heap string cost each of a room's recent events 32 bytes more.
    pub id: Option<compact_str::CompactString>,
    pub event: Label,
    pub outcome: &'static str,
    pub at: DateTime<Utc>,
}

/// What an actor has done since it started.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    pub applied: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub stale: u64,
}

/// One open session, as the participant list shows it: a view of the
/// session's row, made as the list is read.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView<'a> {
    pub identity: &'a str,
    pub sid: Option<&'a str>,
    pub kind: &'a ParticipantKind,
    pub joined_at: Option<DateTime<Utc>>,
    /// Set when the identity is a user's UUID (the seed's convention).
    pub user_id: Option<Uuid>,
}

impl<'a> From<&'a SessionRecord> for ParticipantView<'a> {
    fn from(s: &'a SessionRecord) -> Self {
        Self {
            identity: &s.identity,
            sid: s.sid.as_deref(),
            kind: &s.kind,
            joined_at: s.joined_at(),
            user_id: s.user_id(),
        }
    }
}

/// Everything published about one room name.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSnapshot {
    pub room: Option<RoomView>,
    /// Open sessions of the current instance, oldest first.
    pub participants: ParticipantList,
    /// Closed sessions and tombstones the actor still holds.
    pub closed_sessions: usize,
    pub last_event: Option<Arc<LastEvent>>,
    /// The last events the actor handled, oldest first, with their outcomes.
    pub recent_events: Vec<Arc<LastEvent>>,
    pub counters: Counters,
    pub actor_started_at: DateTime<Utc>,
}

impl RoomSnapshot {
    /// A room as the database had it, before any actor handled an event:
    /// what recovery publishes, and what another node's room reads as.
    pub fn of_restored(state: &RoomState) -> Self {
        Self::of(state, &VecDeque::new(), Counters::default(), Utc::now())
    }

    pub fn of(
        state: &RoomState,
        recent: &VecDeque<Arc<LastEvent>>,
        counters: Counters,
        actor_started_at: DateTime<Utc>,
    ) -> Self {
        let current = state.current();
        let list = current.map(|c| c.present().list());
        Self {
            room: current.map(RoomView::of_instance),
            participants: list.cloned().unwrap_or_default(),
            // The list holds exactly the open ones: no walk over every session.
            closed_sessions: current
                .zip(list)
                .map_or(0, |(c, list)| c.session_count() - list.len()),
            last_event: recent.back().cloned(),
            recent_events: recent.iter().cloned().collect(),
            counters,
            actor_started_at,
        }
    }
}
