//! Audit retention: `webhook_events` would otherwise grow for as long as
//! roomd runs. Old rows go in small batches, each its own short
//! transaction, so the writer (SQLite's only one) never waits long behind it.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::StoreError;
use super::entity::webhook_events;

/// Rows deleted per statement.
const BATCH: u64 = 1000;

/// Deletes audit rows received before `cutoff`, one batch at a time, until
/// none is left; returns how many went. `on_batch` hears each batch's count.
pub async fn delete_audit_before(
    db: &impl ConnectionTrait,
    cutoff: DateTime<Utc>,
    mut on_batch: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let oldest = Query::select()
            .column(webhook_events::Column::Id)
            .from(webhook_events::Entity)
            .and_where(webhook_events::Column::ReceivedAt.lt(cutoff))
            .limit(BATCH)
            .to_owned();
        let deleted = webhook_events::Entity::delete_many()
            .filter(webhook_events::Column::Id.in_subquery(oldest))
            .exec(db)
            .await?
            .rows_affected;
        on_batch(deleted);
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
        // Let the writer in between batches.
        tokio::task::yield_now().await;
    }
}
