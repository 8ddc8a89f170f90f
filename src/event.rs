//! What LiveKit told us, in roomd's own words.
//!
//! The LiveKit edge (`crate::livekit`) turns a verified webhook body into a
//! [`Delivery`]; nothing past that edge sees protobuf types or strings for
//! states and kinds.

use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use serde::Serialize;

use crate::seed;

/// roomd's clock, to the microsecond. A time the rooms keep is compared
/// again after a restart, with what the database gave back: PostgreSQL
/// keeps microseconds and SQLite nanoseconds, so a nanosecond reading made
/// one backend order a restarted room's events unlike the other (found by
/// the adversary: a start stored as `.235000967` came back as `.235000`,
/// and a later event with that millisecond as its creation time turned
/// from stale to applied). LiveKit's own times are whole milliseconds.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// A short text that many session rows share: a leave reason, a kind this
/// build does not know. One pointer wide, where an `Arc<str>` is two: a
/// session's row holds two, and with those 16 bytes it came down an
/// allocator size class (160 to 144 bytes a row). Made by [`label`], so
/// that each text is allocated once.
pub type Label = Arc<String>;

/// Distinct texts [`label`] keeps. LiveKit's leave reasons and kinds are a
/// few dozen; a body may carry any string, so past this many a text is
/// allocated for each use instead of growing the table.
const MAX_LABELS: usize = 256;

/// Longest text [`label`] keeps. LiveKit's are under 32 bytes; a signed body
/// may carry a reason of most of a megabyte, and the table keeps what it
/// holds for the life of the process (the adversary held 460 MB with 256
/// such leaves). A longer text is allocated for each use and goes with its
/// rows.
const MAX_LABEL_LEN: usize = 64;

/// The kept texts, one copy each, found by the text's hash.
static LABELS: LazyLock<Mutex<HashTable<Label>>> = LazyLock::new(Default::default);

/// `text` as a [`Label`], the one allocation of it that rows share.
pub fn label(text: &str) -> Label {
    if text.len() > MAX_LABEL_LEN {
        return Arc::new(text.to_owned());
    }
    let hash = |text: &str| seed::hash(text);
    let mut labels = LABELS.lock().expect("labels lock");
    if let Some(shared) = labels.find(hash(text), |kept| kept.as_str() == text) {
        return shared.clone();
    }
    let made = Arc::new(text.to_owned());
    if labels.len() < MAX_LABELS {
        labels.insert_unique(hash(text), made.clone(), |kept| hash(kept));
    }
    made
}

/// What kind of participant a session belongs to, as LiveKit classifies it,
/// in the lowercase words roomd stores (`standard`, `agent`, ...). A kind
/// this build does not know (a newer LiveKit server) is kept as its text,
/// so such a participant is still counted instead of the event being
/// refused.
///
/// One pointer wide: an enum of the known kinds with the text of an
/// unknown one took 16 bytes (a tag beside the pointer), and with those 8
/// bytes a session's row came down to the allocator's 128-byte class.
/// The known kinds are made once and shared by every row.
#[derive(Clone)]
pub struct ParticipantKind(Label);

/// LiveKit's kinds with their protobuf numbers (`ParticipantInfo.Kind`),
/// in the order roomd lists them: standard first, unknown kinds last.
const KNOWN_KINDS: [(i64, &str); 7] = [
    (0, "standard"),
    (1, "ingress"),
    (2, "egress"),
    (3, "sip"),
    (4, "agent"),
    (7, "connector"),
    (8, "bridge"),
];

/// The known kinds' shared texts: not from [`label`], whose table a
/// hostile sender can fill before a kind is first seen.
static KNOWN_LABELS: LazyLock<[Label; 7]> =
    LazyLock::new(|| KNOWN_KINDS.map(|(_, text)| Arc::new(text.to_owned())));

impl ParticipantKind {
    pub fn standard() -> Self {
        Self(KNOWN_LABELS[0].clone())
    }

    pub fn agent() -> Self {
        Self::known("agent").expect("agent is a known kind")
    }

    fn known(text: &str) -> Option<Self> {
        let i = KNOWN_KINDS.iter().position(|&(_, t)| t == text)?;
        Some(Self(KNOWN_LABELS[i].clone()))
    }

    /// Parses LiveKit's enum name (`"AGENT"`) or the lowercase form roomd stores.
    pub fn from_name(name: &str) -> Self {
        let text = name.to_ascii_lowercase();
        if text.is_empty() {
            return Self::standard();
        }
        Self::known(&text).unwrap_or_else(|| Self(label(&text)))
    }

    /// LiveKit's protobuf number for the kind (`ParticipantInfo.Kind`).
    pub fn from_number(n: i64) -> Self {
        match KNOWN_KINDS.iter().position(|&(number, _)| number == n) {
            Some(i) => Self(KNOWN_LABELS[i].clone()),
            None => Self(label(&format!("kind_{n}"))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_standard(&self) -> bool {
        self.rank() == 0
    }

    /// Where the kind sorts: the known ones in LiveKit's order, then the rest.
    fn rank(&self) -> usize {
        KNOWN_LABELS
            .iter()
            .position(|known| Arc::ptr_eq(known, &self.0) || **known == *self.0)
            .unwrap_or(KNOWN_KINDS.len())
    }
}

impl PartialEq for ParticipantKind {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for ParticipantKind {}

impl std::hash::Hash for ParticipantKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for ParticipantKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParticipantKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.rank(), self.as_str()).cmp(&(other.rank(), other.as_str()))
    }
}

impl std::fmt::Debug for ParticipantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ParticipantKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which LiveKit room an event is about. `sid` is absent in hand-written
/// bodies such as the seed's curl test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRef {
    pub name: String,
    pub sid: Option<String>,
    /// When LiveKit created the room (`room.creationTime`), if it said.
    pub created_at: Option<DateTime<Utc>>,
}

/// A participant session's id, kept inline up to 24 bytes. LiveKit's are
/// 15 (`PA_` and 12 more): a heap string each cost a live session 48 bytes
/// of memory more than its row's 8 extra bytes (heaptrack).
pub type Sid = compact_str::CompactString;

/// A participant's identity, kept inline up to 24 bytes, as a sid is. A
/// shared `Arc<str>` cost each open participant a heap block of its own
/// (48 bytes for `user-123`, 64 for a UUID) and the row's 16 bytes for the
/// pointer; this costs the row 24 and, past 24 bytes, a block of the
/// text's own length.
pub type Identity = compact_str::CompactString;

/// A participant as an event describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRef {
    /// One session's id (`PA_...`); a reconnect gets a new one.
    pub sid: Option<Sid>,
    /// The person; the seed's users put their UUID here.
    pub identity: Identity,
    pub kind: ParticipantKind,
    pub name: Option<Arc<str>>,
    pub joined_at: Option<DateTime<Utc>>,
}

/// Why a room instance ended, as `rooms.end_reason` spells it; the sessions
/// it closed say the same in `participants.leave_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// LiveKit's `room_finished`.
    RoomFinished,
    /// A new room instance took the name while this one was still open (its
    /// `room_finished` was lost: LiveKit never has two live rooms of one name).
    Replaced,
    /// LiveKit's RoomService no longer lists the room.
    Reconciled,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomFinished => "room_finished",
            Self::Replaced => "replaced",
            Self::Reconciled => "reconciled",
        }
    }

    /// Whether `text` names an end roomd decides itself (an instance
    /// replaced, or ended by reconciliation), as against LiveKit's
    /// `room_finished`: what roomd closed, LiveKit listing it again undoes.
    pub fn is_roomds(text: &str) -> bool {
        [Self::Replaced, Self::Reconciled]
            .iter()
            .any(|why| text.eq_ignore_ascii_case(why.as_str()))
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// `participant_left`, with LiveKit's `disconnectReason` when it gave one.
    Left(Option<String>),
    /// `participant_connection_aborted`: the session never fully connected.
    ConnectionAborted,
    /// Its room instance ended with the session still open.
    RoomEnded(EndReason),
    /// LiveKit's RoomService no longer lists the session (its leave was lost).
    Reconciled,
}

impl LeaveReason {
    pub fn as_string(&self) -> Label {
        match self {
            // Reconciliation finds the sessions roomd closed by these
            // texts, and reopens them while LiveKit lists them: a leave
            // LiveKit sent must never read as one (LiveKit has no such
            // reasons; a hand-made body can spell them).
            Self::Left(Some(reason)) if EndReason::is_roomds(reason) => {
                label(&format!("left_{}", reason.to_ascii_lowercase()))
            }
            Self::Left(Some(reason)) => label(&reason.to_ascii_lowercase()),
            Self::Left(None) => label("participant_left"),
            Self::ConnectionAborted => label("connection_aborted"),
            Self::RoomEnded(why) => label(why.as_str()),
            Self::Reconciled => label(EndReason::Reconciled.as_str()),
        }
    }
}

/// An event that changes a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    RoomStarted,
    RoomFinished,
    ParticipantJoined(ParticipantRef),
    ParticipantLeft(ParticipantRef, LeaveReason),
}

impl RoomEvent {
    pub fn participant(&self) -> Option<&ParticipantRef> {
        match self {
            Self::ParticipantJoined(p) | Self::ParticipantLeft(p, _) => Some(p),
            Self::RoomStarted | Self::RoomFinished => None,
        }
    }
}

/// One webhook as roomd received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// LiveKit's event id (`EV_...`): the same on every retry.
    pub id: Option<String>,
    /// The event's name as sent (`participant_joined`, `track_published`, ...).
    /// A label: one copy per process, where each delivery allocated its own,
    /// kept by each of a room's recent events (48 bytes each).
    pub event: Label,
    /// LiveKit's `createdAt`, when it gave one.
    pub created_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub action: Action,
}

/// What roomd does with a delivery. An event roomd applies always names its
/// room (parsing refuses one that does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Routed to the room's actor and applied to its state.
    Apply { room: RoomRef, event: RoomEvent },
    /// Recorded in the audit log and acknowledged (tracks, egress, ingress, ...).
    Record {
        room: Option<RoomRef>,
        participant: Option<ParticipantRef>,
    },
}

impl Delivery {
    /// The time the event happened on LiveKit's clock, else when it reached us.
    pub fn at(&self) -> DateTime<Utc> {
        self.created_at.unwrap_or(self.received_at)
    }

    pub fn room(&self) -> Option<&RoomRef> {
        match &self.action {
            Action::Apply { room, .. } => Some(room),
            Action::Record { room, .. } => room.as_ref(),
        }
    }

    pub fn participant(&self) -> Option<&ParticipantRef> {
        match &self.action {
            Action::Apply { event, .. } => event.participant(),
            Action::Record { participant, .. } => participant.as_ref(),
        }
    }
}

/// LiveKit's own view of one room, from its RoomService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTruth {
    pub room: RoomRef,
    /// When (roomd's clock, taken before ListRooms) LiveKit listed `room`:
    /// its sid is LiveKit's as of then, the participants as of later.
    pub listed_at: DateTime<Utc>,
    /// The participants LiveKit lists as ACTIVE.
    pub participants: Vec<ParticipantRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_allocated_once_and_the_table_stays_small() {
        let left = LeaveReason::Left(Some("CLIENT_INITIATED".into()));
        assert!(Arc::ptr_eq(&left.as_string(), &left.as_string()));
        assert_eq!(*left.as_string(), "client_initiated");
        // A long text is right but not kept: the table would hold it for good.
        let long = "r".repeat(MAX_LABEL_LEN + 1);
        assert_eq!(*label(&long), long);
        assert!(!Arc::ptr_eq(&label(&long), &label(&long)));
        // Texts past the bound are still right, only no longer shared.
        for n in 0..MAX_LABELS {
            label(&format!("made-up reason {n}"));
        }
        let late = label("one text too many");
        assert_eq!(*late, "one text too many");
        assert!(!Arc::ptr_eq(&late, &label("one text too many")));
        let kept = LABELS.lock().unwrap();
        assert!(kept.len() <= MAX_LABELS);
        assert!(kept.iter().all(|text| text.len() <= MAX_LABEL_LEN));
        drop(kept);
        assert!(Arc::ptr_eq(&left.as_string(), &left.as_string()));
    }
}
