//! The persisted shape of a room: what the state machine hands to the store
//! and what the store hands back after a restart. Plain data, no I/O.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Delivery, Identity, Label, ParticipantKind, Sid, label};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    Active,
    Ended,
}

impl RoomStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// One row of `rooms`: one LiveKit room instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: Uuid,
    /// Shared with the room's published view (one copy per room).
    pub name: Arc<str>,
    pub sid: Option<Arc<str>>,
    pub status: RoomStatus,
    pub current_participants: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<Label>,
    /// When roomd last applied a change to this room (roomd's clock, not
    /// LiveKit's): reconciliation must not act on a list fetched before it.
    pub changed_at: Option<DateTime<Utc>>,
}

/// One row of `participants`: one session (or a tombstone for a leave that
/// came before its join). A live room holds one per session it has seen, so
/// it is small: short strings inline, the name shared with the event
/// (`Arc<str>`), and the row itself shared by the room's indexes and the
/// changes handed to the writer. Its room's id is not kept here but beside
/// the row in [`Changes`]: every row of a room would repeat it.
///
/// 104 bytes, so that with its reference counts it takes the allocator's
/// 128-byte class (at 128 bytes it took 160): the join time in 8 bytes,
/// and what only a closed session has in a box of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub identity: Identity,
    pub sid: Option<Sid>,
    pub kind: ParticipantKind,
    pub name: Option<Arc<str>>,
    joined: MaybeTime,
    closed: Option<Box<Closed>>,
}

// Past 104 bytes a row takes the next allocator class (see above).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SessionRecord>() <= 104);

/// When and why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Closed {
    at: DateTime<Utc>,
    /// Absent only in rows roomd did not write (the seed's).
    reason: Option<Label>,
}

impl SessionRecord {
    /// An open session (closed if `left` says when and why it ended).
    pub fn new(
        id: Uuid,
        identity: Identity,
        sid: Option<Sid>,
        kind: ParticipantKind,
        name: Option<Arc<str>>,
        joined_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            id,
            identity,
            sid,
            kind,
            name,
            joined: MaybeTime::from(joined_at),
            closed: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    pub fn joined_at(&self) -> Option<DateTime<Utc>> {
        self.joined.get()
    }

    pub fn set_joined_at(&mut self, at: DateTime<Utc>) {
        self.joined = MaybeTime::from(Some(at));
    }

    pub fn left_at(&self) -> Option<DateTime<Utc>> {
        self.closed.as_ref().map(|closed| closed.at)
    }

    pub fn leave_reason(&self) -> Option<&Label> {
        self.closed
            .as_ref()
            .and_then(|closed| closed.reason.as_ref())
    }

    /// Closes the session at `at`, never before it began: LiveKit's times
    /// have whole seconds in places (`createdAt`) and milliseconds in others
    /// (`joinedAtMs`), so a leave can carry a time just before its join.
    pub fn close(&mut self, at: DateTime<Utc>, reason: Label) {
        let at = self.joined_at().map_or(at, |joined| joined.max(at));
        self.closed = Some(Box::new(Closed {
            at,
            reason: Some(reason),
        }));
    }

    /// The row as stored: closed at `left_at` if that is set. A reason
    /// without a time (no row roomd writes) is not kept.
    pub fn with_stored_leave(
        mut self,
        left_at: Option<DateTime<Utc>>,
        reason: Option<Label>,
    ) -> Self {
        self.closed = left_at.map(|at| Box::new(Closed { at, reason }));
        self
    }

    /// Opens the session again (reconciliation undoing its own close).
    pub fn reopen(&mut self) {
        self.closed = None;
    }

    /// The seed's `participants.user_id`: the identity when it is a user's UUID.
    pub fn user_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.identity).ok()
    }
}

/// A time that may be unknown, to the microsecond (what both databases
/// keep), in 8 bytes where `Option<DateTime<Utc>>` takes 12. Unknown sorts
/// first, as `None` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct MaybeTime(i64);

impl MaybeTime {
    /// No `DateTime<Utc>` is this many microseconds from the epoch (its
    /// range is about ±262,000 years; this is 292,000 before it).
    const UNKNOWN: i64 = i64::MIN;

    fn get(self) -> Option<DateTime<Utc>> {
        (self.0 != Self::UNKNOWN)
            .then(|| DateTime::from_timestamp_micros(self.0))
            .flatten()
    }
}

/// `at` as a session's row keeps a join time: to the microsecond. A join
/// is compared with the row it may update in these terms, or a time with
/// nanoseconds would always look later than itself.
pub fn joined_time(at: DateTime<Utc>) -> DateTime<Utc> {
    MaybeTime::from(Some(at)).get().unwrap_or(at)
}

impl From<Option<DateTime<Utc>>> for MaybeTime {
    fn from(at: Option<DateTime<Utc>>) -> Self {
        Self(at.map_or(Self::UNKNOWN, |at| at.timestamp_micros()))
    }
}

/// The rows one applied event changes; upserted by primary key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub rooms: Vec<RoomRecord>,
    pub sessions: Vec<SessionChange>,
}

/// A session row to upsert and the `rooms.id` it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChange {
    pub room_id: Uuid,
    /// Shared with the room's state: handing a row to the writer copies no strings.
    pub row: Arc<SessionRecord>,
}

impl Changes {
    /// Puts `earlier`'s rows before these, in the order they were made.
    pub fn prepend(&mut self, mut earlier: Changes) {
        earlier.rooms.append(&mut self.rooms);
        earlier.sessions.append(&mut self.sessions);
        *self = earlier;
    }

    /// `row`, of the room instance `room_id`, is to be written.
    pub fn session(&mut self, room_id: Uuid, row: &Arc<SessionRecord>) {
        self.sessions.push(SessionChange {
            room_id,
            row: row.clone(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.sessions.is_empty()
    }
}

/// A room instance as stored, with the sessions an actor keeps of it.
pub type StoredInstance = (RoomRecord, Vec<SessionRecord>);

/// Everything the store keeps about one room name that its actor needs
/// to rebuild itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRoom {
    /// The newest instance under the name, with all of its sessions.
    pub latest: Option<StoredInstance>,
    /// Sids of the ended instances under the name, with when they ended:
    /// their late events are stale.
    pub ended_sids: Vec<(String, DateTime<Utc>)>,
}

/// The audit row of one delivery.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub event_id: Option<String>,
    pub event: Label,
    pub room_name: Option<String>,
    pub room_sid: Option<String>,
    pub room_id: Option<Uuid>,
    pub participant_identity: Option<String>,
    pub participant_sid: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub outcome: &'static str,
}

impl EventRecord {
    /// The event name reconciliation's rows carry (they have no LiveKit id).
    pub const RECONCILE: &'static str = "reconcile";

    /// The audit row of a webhook, with what became of it.
    pub fn of_delivery(delivery: &Delivery, room_id: Option<Uuid>, outcome: &'static str) -> Self {
        let participant = delivery.participant();
        Self {
            event_id: delivery.id.clone(),
            event: delivery.event.clone(),
            room_name: delivery.room().map(|r| r.name.clone()),
            room_sid: delivery.room().and_then(|r| r.sid.clone()),
            room_id,
            participant_identity: participant.map(|p| p.identity.to_string()),
            participant_sid: participant.and_then(|p| p.sid.as_deref().map(str::to_owned)),
            created_at: delivery.created_at,
            received_at: delivery.received_at,
            outcome,
        }
    }

    /// The audit row of a reconciliation that corrected room `name` at `at`.
    pub fn of_reconcile(
        name: &str,
        sid: Option<String>,
        room_id: Option<Uuid>,
        at: DateTime<Utc>,
        outcome: &'static str,
    ) -> Self {
        Self {
            event_id: None,
            event: label(Self::RECONCILE),
            room_name: Some(name.to_owned()),
            room_sid: sid,
            room_id,
            participant_identity: None,
            participant_sid: None,
            created_at: Some(at),
            received_at: at,
            outcome,
        }
    }
}

/// What the commit did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The event's row and its changes are committed.
    Stored,
    /// An event with this id was committed before; nothing was changed.
    Duplicate,
}
