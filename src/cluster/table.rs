//! The cluster's SQL (PostgreSQL only). Every time is PostgreSQL's `now()`:
//! the nodes' clocks never decide whether a lease holds.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub advertise_url: String,
    pub lease_until: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// Its lease had not run out when the map was read.
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardRow {
    pub shard: u32,
    pub owner: Option<String>,
    pub epoch: i64,
}

fn stmt(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The shard count the database was set up with (this one if it is the
/// first node), and one row per shard.
pub async fn ensure_shards(db: &DatabaseConnection, shards: u32) -> Result<u32, DbErr> {
    db.execute_raw(stmt(
        "INSERT INTO cluster_meta (key, value) VALUES ('shards', $1) ON CONFLICT (key) DO NOTHING",
        [shards.to_string().into()],
    ))
    .await?;
    let row = db
        .query_one_raw(stmt(
            "SELECT value FROM cluster_meta WHERE key = 'shards'",
            [],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("cluster_meta.shards".into()))?;
    let stored: String = row.try_get("", "value")?;
    let stored: u32 = stored
        .parse()
        .map_err(|_| DbErr::Custom(format!("cluster_meta.shards is {stored:?}")))?;
    if stored == shards {
        db.execute_raw(stmt(
            "INSERT INTO cluster_shards (shard, owner, epoch) \
             SELECT g, NULL, 0 FROM generate_series(0, $1 - 1) AS g ON CONFLICT (shard) DO NOTHING",
            [(shards as i32).into()],
        ))
        .await?;
    }
    Ok(stored)
}

/// Registers this process under `node` unless another live process holds
/// that id (its lease has not run out); `false` then.
pub async fn register(
    db: &DatabaseConnection,
    node: &str,
    incarnation: Uuid,
    url: &str,
    ttl_ms: u64,
) -> Result<bool, DbErr> {
    let done = db
        .execute_raw(stmt(
            "INSERT INTO cluster_nodes (node_id, incarnation, advertise_url, lease_until, started_at) \
             VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond', now()) \
             ON CONFLICT (node_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, \
             advertise_url = EXCLUDED.advertise_url, lease_until = EXCLUDED.lease_until, \
             started_at = EXCLUDED.started_at \
             WHERE cluster_nodes.lease_until <= now() OR cluster_nodes.incarnation = EXCLUDED.incarnation",
            [
                node.into(),
                incarnation.into(),
                url.into(),
                (ttl_ms as i64).into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a lease renewal found this process still the holder of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    Yes,
    /// Another process registered under this id after this one's lease ran
    /// out (this one was paused or cut off that long).
    Superseded,
}

/// Extends the lease; re-registers if the row went (an operator cleaned up).
pub async fn renew(
    db: &DatabaseConnection,
    node: &str,
    incarnation: Uuid,
    url: &str,
    ttl_ms: u64,
) -> Result<Renewed, DbErr> {
    let renewed = db
        .execute_raw(stmt(
            "UPDATE cluster_nodes SET lease_until = now() + $3 * interval '1 millisecond' \
             WHERE node_id = $1 AND incarnation = $2",
            [node.into(), incarnation.into(), (ttl_ms as i64).into()],
        ))
        .await?;
    if renewed.rows_affected() == 1 {
        return Ok(Renewed::Yes);
    }
    let exists = db
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM cluster_nodes WHERE node_id = $1",
            [node.into()],
        ))
        .await?
        .is_some();
    if !exists && register(db, node, incarnation, url, ttl_ms).await? {
        return Ok(Renewed::Yes);
    }
    Ok(Renewed::Superseded)
}

/// Extends the lease only while it still holds (`false` when it ran out):
/// a node busy past a heartbeat keeps its shards this way, where one whose
/// lease lapsed must read the map before it serves again (`renew`), as the
/// others may have taken them meanwhile.
pub async fn extend(
    db: &DatabaseConnection,
    node: &str,
    incarnation: Uuid,
    ttl_ms: u64,
) -> Result<bool, DbErr> {
    let extended = db
        .execute_raw(stmt(
            "UPDATE cluster_nodes SET lease_until = now() + $3 * interval '1 millisecond' \
             WHERE node_id = $1 AND incarnation = $2 AND lease_until > now()",
            [node.into(), incarnation.into(), (ttl_ms as i64).into()],
        ))
        .await?;
    Ok(extended.rows_affected() == 1)
}

pub async fn end_lease(
    db: &DatabaseConnection,
    node: &str,
    incarnation: Uuid,
) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "UPDATE cluster_nodes SET lease_until = now() WHERE node_id = $1 AND incarnation = $2",
        [node.into(), incarnation.into()],
    ))
    .await?;
    Ok(())
}

/// The nodes (live or not, newest first; long-dead ones left out) and every
/// shard's owner and epoch, in shard order.
pub async fn read_map(db: &DatabaseConnection) -> Result<(Vec<NodeRow>, Vec<ShardRow>), DbErr> {
    let nodes = db
        .query_all_raw(stmt(
            "SELECT node_id, advertise_url, lease_until, started_at, lease_until > now() AS live \
             FROM cluster_nodes WHERE lease_until > now() - interval '1 hour' \
             ORDER BY started_at DESC",
            [],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok(NodeRow {
                node_id: r.try_get("", "node_id")?,
                advertise_url: r.try_get("", "advertise_url")?,
                lease_until: r.try_get("", "lease_until")?,
                started_at: r.try_get("", "started_at")?,
                live: r.try_get("", "live")?,
            })
        })
        .collect::<Result<_, DbErr>>()?;
    let shards = db
        .query_all_raw(stmt(
            "SELECT shard, owner, epoch FROM cluster_shards ORDER BY shard",
            [],
        ))
        .await?
        .iter()
        .map(|r| {
            Ok(ShardRow {
                shard: r.try_get::<i32>("", "shard")? as u32,
                owner: r.try_get("", "owner")?,
                epoch: r.try_get("", "epoch")?,
            })
        })
        .collect::<Result<_, DbErr>>()?;
    Ok((nodes, shards))
}

/// Takes up to `limit` shards that no live node owns, raising each one's
/// epoch. A shard whose row an in-flight commit holds `FOR SHARE` is
/// skipped, not waited for: the next heartbeat takes it, after that commit.
pub async fn claim(
    db: &DatabaseConnection,
    node: &str,
    limit: usize,
) -> Result<Vec<(u32, i64)>, DbErr> {
    let rows = db
        .query_all_raw(stmt(
            "UPDATE cluster_shards SET owner = $1, epoch = epoch + 1 WHERE shard IN ( \
               SELECT s.shard FROM cluster_shards s \
               WHERE s.owner IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM cluster_nodes n WHERE n.node_id = s.owner AND n.lease_until > now()) \
               ORDER BY s.shard LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING shard, epoch",
            [node.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<i32>("", "shard")? as u32,
                r.try_get("", "epoch")?,
            ))
        })
        .collect()
}

/// Gives `shards` up (no epoch change: the next claim raises it). Waits for
/// this node's own in-flight commits on them, which hold their rows.
pub async fn release(db: &DatabaseConnection, node: &str, shards: &[u32]) -> Result<u64, DbErr> {
    if shards.is_empty() {
        return Ok(0);
    }
    let list = shards
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let done = db
        .execute_raw(stmt(
            &format!(
                "UPDATE cluster_shards SET owner = NULL WHERE owner = $1 AND shard IN ({list})"
            ),
            [node.into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

pub async fn release_all(db: &DatabaseConnection, node: &str) -> Result<u64, DbErr> {
    let done = db
        .execute_raw(stmt(
            "UPDATE cluster_shards SET owner = NULL WHERE owner = $1",
            [node.into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

pub async fn notify(db: &DatabaseConnection, channel: &str, node: &str) -> Result<(), DbErr> {
    db.execute_raw(stmt(
        "SELECT pg_notify($1, $2)",
        [channel.into(), node.into()],
    ))
    .await?;
    Ok(())
}
