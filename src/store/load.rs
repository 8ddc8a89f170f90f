//! Reads that rebuild actors: one room on demand, every active room at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use uuid::Uuid;

use super::StoreError;
use super::entity::{participants, rooms};
use crate::event::{ParticipantKind, label};
use crate::record::{RoomRecord, RoomStatus, SessionRecord, StoredInstance, StoredRoom};

/// `rooms.status` as the writer stores it.
const ACTIVE: &str = RoomStatus::Active.as_str();
const ENDED: &str = RoomStatus::Ended.as_str();

fn room_record(m: rooms::Model) -> Result<RoomRecord, StoreError> {
    let status = RoomStatus::parse(&m.status).ok_or_else(|| {
        StoreError::Corrupt(format!("rooms.status {:?} for room {}", m.status, m.id))
    })?;
    Ok(RoomRecord {
        id: m.id,
        name: m.livekit_name.into(),
        sid: m.livekit_sid.map(Into::into),
        status,
        current_participants: m.current_participants,
        started_at: m.started_at,
        ended_at: m.ended_at,
        end_reason: m.end_reason.as_deref().map(label),
        changed_at: m.changed_at,
    })
}

/// The columns of `participants` an actor needs, in `SessionRow`'s order.
/// Read as a tuple, a row is decoded by position: by name (a whole
/// `Model`) it was a third of the time recovery took.
const SESSION_COLUMNS: [participants::Column; 9] = [
    participants::Column::Id,
    participants::Column::RoomId,
    participants::Column::Identity,
    participants::Column::Sid,
    participants::Column::Kind,
    participants::Column::Name,
    participants::Column::JoinedAt,
    participants::Column::LeftAt,
    participants::Column::LeaveReason,
];

type SessionRow = (
    Uuid,
    Uuid,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// The kept sessions of the rooms `filter` selects, each with its room's id.
async fn load_sessions(
    db: &impl ConnectionTrait,
    filter: Condition,
    horizon: DateTime<Utc>,
) -> Result<Vec<(Uuid, SessionRecord)>, StoreError> {
    let rows: Vec<SessionRow> = participants::Entity::find()
        .select_only()
        .columns(SESSION_COLUMNS)
        .filter(filter)
        .filter(kept_sessions(horizon))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(session_record).collect())
}

/// A session row and the `rooms.id` it belongs to.
fn session_record(
    (id, room_id, identity, sid, kind, name, joined_at, left_at, leave_reason): SessionRow,
) -> (Uuid, SessionRecord) {
    let row = SessionRecord::new(
        id,
        identity.into(),
        sid.map(Into::into),
        ParticipantKind::from_name(&kind),
        name.map(Into::into),
        joined_at,
    )
    .with_stored_leave(left_at, leave_reason.as_deref().map(label));
    (room_id, row)
}

/// The instance now or last live under each of `names`: the active one if
/// any (the actor keeps at most one), else the one roomd wrote last (the
/// last to end: an instance reconciliation brought back after a newer one
/// is newer than its creation says). One query for the whole list,
/// returning one row per name however long its history.
pub async fn find_latest_rooms(
    db: &impl ConnectionTrait,
    names: &[&str],
) -> Result<Vec<RoomRecord>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let names = padded(names);
    let backend = db.get_database_backend();
    let params: Vec<String> = (1..=names.len())
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_owned(),
        })
        .collect();
    let sql = format!(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY livekit_name \
         ORDER BY CASE WHEN status = '{ACTIVE}' THEN 0 ELSE 1 END, updated_at DESC, created_at DESC, started_at DESC) AS latest \
         FROM rooms WHERE livekit_name IN ({})) AS candidates WHERE latest = 1",
        params.join(", ")
    );
    let values = names.iter().map(|name| sea_orm::Value::from(*name));
    rooms::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
        .all(db)
        .await?
        .into_iter()
        .map(room_record)
        .collect()
}

/// Sessions an actor keeps: open ones, and closed ones and tombstones that
/// roomd wrote at or after `horizon` (roomd's clock: LiveKit's may differ,
/// and replayed events carry old times). Older ones only matter to the history.
fn kept_sessions(horizon: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(participants::Column::LeftAt.is_null())
        .add(participants::Column::UpdatedAt.gte(horizon))
}

/// Ended instances whose late events an actor still recognises: those roomd
/// ended (or last wrote) at or after `horizon`.
fn kept_ended(horizon: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(rooms::Column::Status.eq(ENDED))
        .add(rooms::Column::LivekitSid.is_not_null())
        .add(rooms::Column::UpdatedAt.gte(horizon))
}

/// `(name, sid, ended_at, started_at)` of an ended instance.
type EndedRow = (String, Option<String>, Option<DateTime<Utc>>, DateTime<Utc>);

fn ended_pair(
    (name, sid, ended_at, started_at): EndedRow,
) -> Option<(String, (String, DateTime<Utc>))> {
    Some((name, (sid?, ended_at.unwrap_or(started_at))))
}

/// `(name, (sid, ended_at))` of the ended instances of `names` kept by `horizon`.
async fn ended_sids(
    db: &impl ConnectionTrait,
    names: Vec<String>,
    horizon: DateTime<Utc>,
) -> Result<Vec<(String, (String, DateTime<Utc>))>, StoreError> {
    let rows: Vec<EndedRow> = rooms::Entity::find()
        .select_only()
        .column(rooms::Column::LivekitName)
        .column(rooms::Column::LivekitSid)
        .column(rooms::Column::EndedAt)
        .column(rooms::Column::StartedAt)
        .filter(kept_ended(horizon))
        .filter(rooms::Column::LivekitName.is_in(names))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(ended_pair).collect())
}

/// Everything an actor for `name` needs to rebuild itself; closed sessions
/// and ended instances from before `horizon` are left out.
pub async fn load_room(
    db: &impl ConnectionTrait,
    name: &str,
    horizon: DateTime<Utc>,
) -> Result<StoredRoom, StoreError> {
    match find_latest_rooms(db, &[name]).await?.pop() {
        Some(room) => load_rest(db, room, horizon).await,
        None => Ok(StoredRoom::default()),
    }
}

/// [`load_room`] after its first query found `room`, the latest instance
/// under its name: the sessions and the ended sids to go with it.
pub async fn load_rest(
    db: &impl ConnectionTrait,
    room: RoomRecord,
    horizon: DateTime<Utc>,
) -> Result<StoredRoom, StoreError> {
    let ended_sids = ended_sids(db, vec![room.name.to_string()], horizon)
        .await?
        .into_iter()
        .map(|(_, ended)| ended)
        .collect();
    Ok(StoredRoom {
        latest: Some(with_sessions(db, room, horizon).await?),
        ended_sids,
    })
}

/// `items` repeated at the end up to a power of two: a list bound as
/// `IN ($1, ...)` is a new statement to prepare for every length, and a
/// repeated value selects nothing more.
fn padded<T: Clone>(items: &[T]) -> Vec<T> {
    let mut padded = items.to_vec();
    if let Some(last) = items.last() {
        padded.resize(items.len().next_power_of_two(), last.clone());
    }
    padded
}

/// The instance LiveKit names `sid`, with the sessions an actor keeps
/// (see [`load_room`]): what reconciliation needs to bring an ended
/// instance back.
pub async fn load_instance(
    db: &impl ConnectionTrait,
    sid: &str,
    horizon: DateTime<Utc>,
) -> Result<Option<StoredInstance>, StoreError> {
    let Some(room) = rooms::Entity::find()
        .filter(rooms::Column::LivekitSid.eq(sid))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(with_sessions(db, room_record(room)?, horizon).await?))
}

/// `room` with the sessions an actor keeps of it.
async fn with_sessions(
    db: &impl ConnectionTrait,
    room: RoomRecord,
    horizon: DateTime<Utc>,
) -> Result<StoredInstance, StoreError> {
    let sessions = load_sessions(
        db,
        Condition::all().add(participants::Column::RoomId.eq(room.id)),
        horizon,
    )
    .await?
    .into_iter()
    .map(|(_, session)| session)
    .collect();
    Ok((room, sessions))
}

/// A page of the active rooms, and where the next one starts (`None` after
/// the last).
pub struct ActivePage {
    pub rooms: Vec<(Arc<str>, StoredRoom)>,
    pub next: Option<Uuid>,
}

/// One page of the rooms that are active in the database, in id order after
/// `after`, with what their actors need: three queries per page. Recovery
/// reads page by page so that its transient memory stays bounded by the page,
/// not by the number of rooms. Only the rooms `keep` picks are loaded past
/// their names: a node taking a few shards over reads the sessions of those
/// shards' rooms, not of every room.
pub async fn load_active_rooms(
    db: &impl ConnectionTrait,
    after: Option<Uuid>,
    page: u64,
    horizon: DateTime<Utc>,
    keep: impl Fn(&str) -> bool,
) -> Result<ActivePage, StoreError> {
    let mut query = rooms::Entity::find()
        .filter(rooms::Column::Status.eq(ACTIVE))
        .order_by_asc(rooms::Column::Id)
        .limit(page);
    if let Some(after) = after {
        query = query.filter(rooms::Column::Id.gt(after));
    }
    let mut active = query.all(db).await?;
    let next = match active.last() {
        Some(last) if active.len() as u64 == page => Some(last.id),
        _ => None,
    };
    active.retain(|r| keep(&r.livekit_name));
    if active.is_empty() {
        return Ok(ActivePage {
            rooms: Vec::new(),
            next,
        });
    }
    let ids: Vec<Uuid> = active.iter().map(|r| r.id).collect();
    let names: Vec<String> = active.iter().map(|r| r.livekit_name.clone()).collect();

    let mut sessions: HashMap<Uuid, Vec<SessionRecord>> = HashMap::with_capacity(active.len());
    let filter = Condition::all().add(participants::Column::RoomId.is_in(ids));
    for (room_id, session) in load_sessions(db, filter, horizon).await? {
        sessions.entry(room_id).or_default().push(session);
    }
    let mut ended: HashMap<String, Vec<(String, DateTime<Utc>)>> = HashMap::new();
    for (name, sid) in ended_sids(db, names, horizon).await? {
        ended.entry(name).or_default().push(sid);
    }

    let rooms = active
        .into_iter()
        .map(|m| {
            let room = room_record(m)?;
            let name = room.name.clone();
            let stored = StoredRoom {
                ended_sids: ended.remove(&*name).unwrap_or_default(),
                latest: Some((room.clone(), sessions.remove(&room.id).unwrap_or_default())),
            };
            Ok((name, stored))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ActivePage { rooms, next })
}

/// Distinct identities with an open session, per kind, in each of `rooms`
/// (the counts an actor keeps, for a room read from the database).
pub async fn open_counts_by_kind(
    db: &impl ConnectionTrait,
    rooms: Vec<Uuid>,
) -> Result<HashMap<Uuid, BTreeMap<ParticipantKind, usize>>, StoreError> {
    let mut counts: HashMap<Uuid, BTreeMap<ParticipantKind, usize>> = HashMap::new();
    if rooms.is_empty() {
        return Ok(counts);
    }
    let rows: Vec<(Uuid, String, i64)> = participants::Entity::find()
        .select_only()
        .column(participants::Column::RoomId)
        .column(participants::Column::Kind)
        .column_as(
            sea_orm::sea_query::ExprTrait::count_distinct(sea_orm::sea_query::Expr::col(
                participants::Column::Identity,
            )),
            "people",
        )
        .filter(participants::Column::RoomId.is_in(rooms))
        .filter(participants::Column::LeftAt.is_null())
        .group_by(participants::Column::RoomId)
        .group_by(participants::Column::Kind)
        .into_tuple()
        .all(db)
        .await?;
    for (room, kind, people) in rows {
        *counts
            .entry(room)
            .or_default()
            .entry(ParticipantKind::from_name(&kind))
            .or_default() += usize::try_from(people).unwrap_or(0);
    }
    Ok(counts)
}

/// Names of every room the database holds as active.
pub async fn active_room_names(db: &impl ConnectionTrait) -> Result<Vec<String>, StoreError> {
    Ok(rooms::Entity::find()
        .select_only()
        .column(rooms::Column::LivekitName)
        .filter(rooms::Column::Status.eq(ACTIVE))
        .into_tuple()
        .all(db)
        .await?)
}

/// Up to `limit` active rooms in name order after `after`: the room list on
/// a cluster, where no node holds every room's snapshot.
pub async fn active_rooms_page(
    db: &impl ConnectionTrait,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<RoomRecord>, StoreError> {
    let mut query = rooms::Entity::find()
        .filter(rooms::Column::Status.eq(ACTIVE))
        .order_by_asc(rooms::Column::LivekitName)
        .limit(limit);
    if let Some(after) = after.filter(|a| !a.contains('\0')) {
        query = query.filter(rooms::Column::LivekitName.gt(after));
    }
    query.all(db).await?.into_iter().map(room_record).collect()
}
