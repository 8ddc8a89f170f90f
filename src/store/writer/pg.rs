//! A batch on PostgreSQL in one round trip: a single statement of
//! data-modifying CTEs over typed arrays, run in autocommit.
//!
//! LiveKit sends a room's events one at a time, each waiting for the last
//! answer, so a busy room's rate is one over its commit's latency, and a
//! batch of one costs what a batch of many does. As a transaction, a commit
//! was five round trips (BEGIN, the audit insert, two upserts, COMMIT), plus
//! the fence's SELECT on a cluster; here it is one, and the statement's
//! text never changes with the batch size, so each connection parses and
//! plans it once (sqlx prepares and caches it).
//!
//! One statement sees one snapshot, so rows that the same statement writes
//! twice are not visible to each other: `fits` sends a batch that has two
//! events with one `event_id`, or two changes of one row, down the
//! transactional path instead. The actors never produce one (a room hands
//! over its next event after the last committed).
//!
//! A redelivery is counted by the audit insert's `ON CONFLICT DO UPDATE`,
//! which locks and updates the row's latest version even when another
//! connection committed it after this statement's snapshot was taken. A
//! separate `UPDATE` did not see such a copy (found by the adversary: 38 of
//! 40 copies counted), so it ran as a second statement: a second round trip
//! and WAL flush for every redelivery. A storm of LiveKit's retries ran at a
//! fifth of today's rate (3,623 against 17,403 events/s).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, PgConnection, Row};
use uuid::Uuid;

use super::Job;
use crate::record::{SessionChange, SessionRecord};
use crate::shard::Fence;

/// Whether the batch can go as one statement (see the module comment).
pub(super) fn fits(jobs: &[Job]) -> bool {
    let mut event_ids = HashSet::new();
    let mut rows = HashSet::new();
    jobs.iter().all(|job| {
        job.event
            .event_id
            .as_deref()
            .is_none_or(|id| event_ids.insert(id))
            && job.changes.rooms.iter().all(|r| rows.insert(r.id))
            && job.changes.sessions.iter().all(|s| rows.insert(s.row.id))
    })
}

/// What the statement did: the audit rows it inserted (an event whose row
/// id is missing here was a redelivery, or fenced; a redelivery's original
/// row id, which it counted, is here too) and the fences it found held.
pub(super) struct Outcome {
    pub stored: HashSet<Uuid>,
    pub held: HashSet<Fence>,
}

// What `SQL` and `SQL_ONE` share, so the two cannot drift apart: where
// each row goes, what a conflict does and what the statement answers.
macro_rules! shared {
    (rooms_into) => {
        r#"  INSERT INTO rooms (id, livekit_name, livekit_sid, status, current_participants, started_at,
    ended_at, end_reason, created_at, updated_at, changed_at)
"#
    };
    (rooms_on_conflict) => {
        r#"  ON CONFLICT (id) DO UPDATE SET livekit_sid = EXCLUDED.livekit_sid, status = EXCLUDED.status,
    current_participants = EXCLUDED.current_participants, started_at = EXCLUDED.started_at,
    ended_at = EXCLUDED.ended_at, end_reason = EXCLUDED.end_reason,
    updated_at = EXCLUDED.updated_at, changed_at = EXCLUDED.changed_at
"#
    };
    (sessions_into) => {
        r#"  INSERT INTO participants (id, room_id, identity, user_id, sid, kind, name, status, joined_at,
    left_at, leave_reason, created_at, updated_at)
"#
    };
    (sessions_on_conflict) => {
        r#"  ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, joined_at = EXCLUDED.joined_at,
    left_at = EXCLUDED.left_at, leave_reason = EXCLUDED.leave_reason,
    updated_at = EXCLUDED.updated_at
"#
    };
    (events_into) => {
        r#"  INSERT INTO webhook_events (id, event_id, event, room_name, room_sid, room_id,
    participant_identity, participant_sid, created_at, received_at, outcome, deliveries)
"#
    };
    (events_on_conflict) => {
        r#"  ON CONFLICT (event_id) DO UPDATE SET deliveries = webhook_events.deliveries + 1
  RETURNING id
"#
    };
    (answer) => {
        r#"SELECT (SELECT coalesce(array_agg(id), '{}') FROM ins) AS stored,
       (SELECT coalesce(array_agg(shard), '{}') FROM held) AS held_shards,
       (SELECT coalesce(array_agg(epoch), '{}') FROM held) AS held_epochs
"#
    };
}

// The fence: `held` locks this node's rows of the batch's shards FOR SHARE
// until the statement's transaction ends, exactly as the transactional path
// does (see `held_shards`): a takeover's `epoch + 1` waits for the lock, or
// this statement, finding the row changed, re-reads it and admits nothing
// of that shard.
const SQL: &str = concat!(
    r#"
WITH ev AS (
  SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                       $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[],
                       $12::int4[], $13::int8[])
    AS t(id, event_id, event, room_name, room_sid, room_id, participant_identity,
         participant_sid, created_at, received_at, outcome, shard, epoch)
),
held AS (
  SELECT shard, epoch FROM cluster_shards
  WHERE $14::text IS NOT NULL AND owner = $14 AND shard = ANY($15::int4[])
  ORDER BY shard FOR SHARE
),
admitted AS (
  SELECT * FROM ev
  WHERE ev.shard IS NULL OR EXISTS (SELECT 1 FROM held WHERE held.shard = ev.shard AND held.epoch = ev.epoch)
),
ins AS (
"#,
    shared!(events_into),
    r#"  SELECT id, event_id, event, room_name, room_sid, room_id, participant_identity,
    participant_sid, created_at, received_at, outcome, 1
  FROM admitted
"#,
    shared!(events_on_conflict),
    r#"),
room_rows AS (
"#,
    shared!(rooms_into),
    r#"  SELECT id, name, sid, status, current, started_at, ended_at, end_reason, $35, $35, changed_at
  FROM UNNEST($16::uuid[], $17::uuid[], $18::text[], $19::text[], $20::text[], $21::int4[],
              $22::timestamptz[], $23::timestamptz[], $24::text[], $25::timestamptz[])
    AS r(job, id, name, sid, status, current, started_at, ended_at, end_reason, changed_at)
  WHERE r.job IN (SELECT id FROM ins)
"#,
    shared!(rooms_on_conflict),
    r#"),
session_rows AS (
"#,
    shared!(sessions_into),
    r#"  SELECT id, room_id, identity, user_id, sid, kind, name, status, joined_at, left_at,
    leave_reason, $35, $35
  FROM UNNEST($26::uuid[], $27::uuid[], $28::uuid[], $29::text[], $30::uuid[], $31::text[],
              $32::text[], $33::text[], $34::text[], $36::timestamptz[], $37::timestamptz[],
              $38::text[])
    AS s(job, id, room_id, identity, user_id, sid, kind, name, status, joined_at, left_at,
         leave_reason)
  WHERE s.job IN (SELECT id FROM ins)
"#,
    shared!(sessions_on_conflict),
    r#")
"#,
    shared!(answer)
);

/// Writes `jobs` (whose audit rows get `row_ids`) in one statement.
pub(super) async fn write(
    conn: &mut PgConnection,
    jobs: &[Job],
    row_ids: &[Uuid],
    fence_owner: Option<&str>,
) -> Result<Outcome, sqlx::Error> {
    if let (Some(job), [row]) = (single(jobs), row_ids) {
        return write_one(conn, job, *row, fence_owner).await;
    }
    let n = jobs.len();
    let mut ev = Events::with_capacity(n);
    let mut rooms = Rooms::default();
    let mut sessions = Sessions::default();
    let mut shards: Vec<i32> = Vec::new();
    for (job, &row) in jobs.iter().zip(row_ids) {
        let e = &job.event;
        ev.id.push(row);
        ev.event_id.push(e.event_id.as_deref());
        ev.event.push(e.event.as_str());
        ev.room_name.push(e.room_name.as_deref());
        ev.room_sid.push(e.room_sid.as_deref());
        ev.room_id.push(e.room_id);
        ev.identity.push(e.participant_identity.as_deref());
        ev.sid.push(e.participant_sid.as_deref());
        ev.created_at.push(e.created_at);
        ev.received_at.push(e.received_at);
        ev.outcome.push(e.outcome);
        ev.shard.push(job.fence.map(|f| f.shard as i32));
        ev.epoch.push(job.fence.map(|f| f.epoch));
        shards.extend(job.fence.map(|f| f.shard as i32));
        for r in &job.changes.rooms {
            rooms.job.push(row);
            rooms.id.push(r.id);
            rooms.name.push(&r.name);
            rooms.sid.push(r.sid.as_deref());
            rooms.status.push(r.status.as_str());
            rooms.current.push(r.current_participants);
            rooms.started_at.push(r.started_at);
            rooms.ended_at.push(r.ended_at);
            rooms
                .end_reason
                .push(r.end_reason.as_deref().map(String::as_str));
            rooms.changed_at.push(r.changed_at);
        }
        for SessionChange { room_id, row: s } in &job.changes.sessions {
            sessions.job.push(row);
            sessions.id.push(s.id);
            sessions.room_id.push(*room_id);
            sessions.identity.push(&*s.identity);
            sessions.user_id.push(s.user_id());
            sessions.sid.push(s.sid.as_deref());
            sessions.kind.push(s.kind.as_str());
            sessions.name.push(s.name.as_deref());
            sessions.status.push(status(s));
            sessions.joined_at.push(s.joined_at());
            sessions.left_at.push(s.left_at());
            sessions
                .leave_reason
                .push(s.leave_reason().map(|reason| reason.as_str()));
        }
    }
    // Sorted, so that two batches lock their shards in one order.
    shards.sort_unstable();
    shards.dedup();
    let row = sqlx::query(SQL)
        .bind(ev.id)
        .bind(ev.event_id)
        .bind(ev.event)
        .bind(ev.room_name)
        .bind(ev.room_sid)
        .bind(ev.room_id)
        .bind(ev.identity)
        .bind(ev.sid)
        .bind(ev.created_at)
        .bind(ev.received_at)
        .bind(ev.outcome)
        .bind(ev.shard)
        .bind(ev.epoch)
        .bind(fence_owner)
        .bind(shards)
        .bind(rooms.job)
        .bind(rooms.id)
        .bind(rooms.name)
        .bind(rooms.sid)
        .bind(rooms.status)
        .bind(rooms.current)
        .bind(rooms.started_at)
        .bind(rooms.ended_at)
        .bind(rooms.end_reason)
        .bind(rooms.changed_at)
        .bind(sessions.job)
        .bind(sessions.id)
        .bind(sessions.room_id)
        .bind(sessions.identity)
        .bind(sessions.user_id)
        .bind(sessions.sid)
        .bind(sessions.kind)
        .bind(sessions.name)
        .bind(sessions.status)
        .bind(Utc::now())
        .bind(sessions.joined_at)
        .bind(sessions.left_at)
        .bind(sessions.leave_reason)
        .fetch_one(conn)
        .await?;
    outcome(row)
}

/// What `SQL` or `SQL_ONE` answered.
fn outcome(row: PgRow) -> Result<Outcome, sqlx::Error> {
    let stored: Vec<Uuid> = row.try_get("stored")?;
    let held_shards: Vec<i32> = row.try_get("held_shards")?;
    let held_epochs: Vec<i64> = row.try_get("held_epochs")?;
    Ok(Outcome {
        stored: stored.into_iter().collect(),
        held: held_shards
            .into_iter()
            .zip(held_epochs)
            .map(|(shard, epoch)| Fence {
                shard: shard as u32,
                epoch,
            })
            .collect(),
    })
}

/// Whether `job` can go as `SQL_ONE`: serial delivery's batch, one event
/// changing at most one room and one session.
fn single(jobs: &[Job]) -> Option<&Job> {
    match jobs {
        [job] if job.changes.rooms.len() <= 1 && job.changes.sessions.len() <= 1 => Some(job),
        _ => None,
    }
}

// `SQL` for one event with at most one room and one session, with scalar
// arguments: a room under LiveKit's serial delivery always sends one, and
// PostgreSQL then decodes no arrays and plans no `UNNEST`. One room's serial
// rate went from 493.5 to 692.5 events/s with it (docs/PERFORMANCE.md,
// eleventh pass). Same fence, same conflict handling, same output.
const SQL_ONE: &str = concat!(
    r#"
WITH held AS (
  SELECT shard, epoch FROM cluster_shards
  WHERE $14::text IS NOT NULL AND owner = $14 AND shard = $12::int4
  FOR SHARE
),
ins AS (
"#,
    shared!(events_into),
    r#"  SELECT $1::uuid, $2::text, $3::text, $4::text, $5::text, $6::uuid, $7::text, $8::text,
    $9::timestamptz, $10::timestamptz, $11::text, 1
  WHERE $12::int4 IS NULL OR EXISTS (SELECT 1 FROM held WHERE held.epoch = $13::int8)
"#,
    shared!(events_on_conflict),
    r#"),
room_rows AS (
"#,
    shared!(rooms_into),
    r#"  SELECT $15::uuid, $16::text, $17::text, $18::text, $19::int4, $20::timestamptz,
    $21::timestamptz, $22::text, $24::timestamptz, $24::timestamptz, $23::timestamptz
  WHERE $15::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM ins WHERE ins.id = $1::uuid)
"#,
    shared!(rooms_on_conflict),
    r#"),
session_rows AS (
"#,
    shared!(sessions_into),
    r#"  SELECT $25::uuid, $26::uuid, $27::text, $28::uuid, $29::text, $30::text, $31::text,
    $32::text, $33::timestamptz, $34::timestamptz, $35::text, $24::timestamptz,
    $24::timestamptz
  WHERE $25::uuid IS NOT NULL AND EXISTS (SELECT 1 FROM ins WHERE ins.id = $1::uuid)
"#,
    shared!(sessions_on_conflict),
    r#")
"#,
    shared!(answer)
);

/// Writes `job` (whose audit row gets `row`) as `SQL_ONE`.
async fn write_one(
    conn: &mut PgConnection,
    job: &Job,
    row: Uuid,
    fence_owner: Option<&str>,
) -> Result<Outcome, sqlx::Error> {
    let e = &job.event;
    let room = job.changes.rooms.first();
    let session = job.changes.sessions.first();
    let s = session.map(|s| &s.row);
    let query = sqlx::query(SQL_ONE)
        .bind(row)
        .bind(e.event_id.as_deref())
        .bind(e.event.as_str())
        .bind(e.room_name.as_deref())
        .bind(e.room_sid.as_deref())
        .bind(e.room_id)
        .bind(e.participant_identity.as_deref())
        .bind(e.participant_sid.as_deref())
        .bind(e.created_at)
        .bind(e.received_at)
        .bind(e.outcome)
        .bind(job.fence.map(|f| f.shard as i32))
        .bind(job.fence.map(|f| f.epoch))
        .bind(fence_owner)
        .bind(room.map(|r| r.id))
        .bind(room.map(|r| &*r.name))
        .bind(room.and_then(|r| r.sid.as_deref()))
        .bind(room.map(|r| r.status.as_str()))
        .bind(room.map(|r| r.current_participants))
        .bind(room.map(|r| r.started_at))
        .bind(room.and_then(|r| r.ended_at))
        .bind(room.and_then(|r| r.end_reason.as_deref().map(String::as_str)))
        .bind(room.and_then(|r| r.changed_at))
        .bind(Utc::now())
        .bind(s.map(|s| s.id))
        .bind(session.map(|s| s.room_id))
        .bind(s.map(|s| &*s.identity))
        .bind(s.and_then(|s| s.user_id()))
        .bind(s.and_then(|s| s.sid.as_deref()))
        .bind(s.map(|s| s.kind.as_str()))
        .bind(s.and_then(|s| s.name.as_deref()))
        .bind(s.map(|s| status(s)))
        .bind(s.and_then(|s| s.joined_at()))
        .bind(s.and_then(|s| s.left_at()))
        .bind(s.and_then(|s| s.leave_reason().map(|reason| reason.as_str())));
    outcome(query.fetch_one(conn).await?)
}

/// A session's `participants.status`.
fn status(session: &SessionRecord) -> &'static str {
    if session.is_open() { "joined" } else { "left" }
}

/// The batch's audit rows, column by column.
struct Events<'a> {
    id: Vec<Uuid>,
    event_id: Vec<Option<&'a str>>,
    event: Vec<&'a str>,
    room_name: Vec<Option<&'a str>>,
    room_sid: Vec<Option<&'a str>>,
    room_id: Vec<Option<Uuid>>,
    identity: Vec<Option<&'a str>>,
    sid: Vec<Option<&'a str>>,
    created_at: Vec<Option<DateTime<Utc>>>,
    received_at: Vec<DateTime<Utc>>,
    outcome: Vec<&'a str>,
    shard: Vec<Option<i32>>,
    epoch: Vec<Option<i64>>,
}

impl Events<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            event_id: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            room_name: Vec::with_capacity(n),
            room_sid: Vec::with_capacity(n),
            room_id: Vec::with_capacity(n),
            identity: Vec::with_capacity(n),
            sid: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            shard: Vec::with_capacity(n),
            epoch: Vec::with_capacity(n),
        }
    }
}

/// The rooms the batch changed; `job` is the audit row that admits each.
#[derive(Default)]
struct Rooms<'a> {
    job: Vec<Uuid>,
    id: Vec<Uuid>,
    name: Vec<&'a str>,
    sid: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    current: Vec<i32>,
    started_at: Vec<DateTime<Utc>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    end_reason: Vec<Option<&'a str>>,
    changed_at: Vec<Option<DateTime<Utc>>>,
}

/// The sessions the batch changed; `job` as in `Rooms`.
#[derive(Default)]
struct Sessions<'a> {
    job: Vec<Uuid>,
    id: Vec<Uuid>,
    room_id: Vec<Uuid>,
    identity: Vec<&'a str>,
    user_id: Vec<Option<Uuid>>,
    sid: Vec<Option<&'a str>>,
    kind: Vec<&'a str>,
    name: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    joined_at: Vec<Option<DateTime<Utc>>>,
    left_at: Vec<Option<DateTime<Utc>>>,
    leave_reason: Vec<Option<&'a str>>,
}
