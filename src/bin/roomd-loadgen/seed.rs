//! A database as roomd leaves it after a busy day, written straight to the
//! schema: live rooms with people in them, for timing a start (recovery) and
//! weighing idle rooms, without sending the webhooks that made them.

use std::time::Instant;

use chrono::Utc;
use roomd::store::entity::{participants, rooms};
use roomd::store::rows::{active_room, open_participant};
use sea_orm::{ConnectOptions, Database, EntityTrait, TransactionTrait};
use uuid::Uuid;

/// Rows per multi-row insert (13 columns: well inside both backends' limits).
const CHUNK: usize = 1000;

pub async fn run(url: &str, run: &str, room_count: usize, people: usize) -> anyhow::Result<()> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    roomd::store::migrate(&db).await?;
    let started = Instant::now();
    let now = Utc::now();
    let txn = db.begin().await?;
    let mut room_rows = Vec::with_capacity(CHUNK);
    let mut people_rows = Vec::with_capacity(CHUNK);
    for r in 0..room_count {
        let room_id = Uuid::new_v4();
        room_rows.push(active_room(
            room_id,
            format!("seed-{run}-{r}"),
            Some(format!("RM_seed{run}{r}")),
            people as i32,
            now,
        ));
        for p in 0..people {
            people_rows.push(open_participant(
                Uuid::new_v4(),
                room_id,
                format!("user-{p}"),
                format!("PA_seed{run}{r}x{p}"),
                now,
            ));
            if people_rows.len() == CHUNK {
                // Rooms first: participants reference them.
                flush_rooms(&txn, &mut room_rows).await?;
                participants::Entity::insert_many(std::mem::take(&mut people_rows))
                    .exec_without_returning(&txn)
                    .await?;
            }
        }
        if room_rows.len() == CHUNK {
            flush_rooms(&txn, &mut room_rows).await?;
        }
    }
    flush_rooms(&txn, &mut room_rows).await?;
    if !people_rows.is_empty() {
        participants::Entity::insert_many(people_rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    println!(
        "seeded {room_count} live rooms x {people} participants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    db.close().await?;
    Ok(())
}

async fn flush_rooms(
    txn: &sea_orm::DatabaseTransaction,
    rows: &mut Vec<rooms::ActiveModel>,
) -> anyhow::Result<()> {
    if !rows.is_empty() {
        rooms::Entity::insert_many(std::mem::take(rows))
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}
