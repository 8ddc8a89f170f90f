//! The database ceiling of the naive design: the same events written straight
//! to the same schema, one transaction per event, each room's events in
//! order, many rooms at once. What a webhook handler that commits per request
//! would manage at best (it skips HTTP, verification and the actors).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use roomd::store::entity::{participants, rooms, webhook_events};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait,
    QueryFilter, TransactionTrait,
};
use uuid::Uuid;

use crate::model::Event;

pub async fn run(
    url: &str,
    connections: u32,
    concurrency: usize,
    rooms: Vec<Vec<Event>>,
) -> anyhow::Result<(u64, Vec<Duration>, Duration)> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(connections).sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // SQLite has one writer: several connections' transactions only
        // fail each other with "database is locked". One connection, WAL
        // and a busy timeout, as roomd itself runs it.
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        options.max_connections(1).map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
        });
    }
    let db = Database::connect(options).await?;
    roomd::store::migrate(&db).await?;
    let queue = Mutex::new(VecDeque::from(rooms));
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|_| async {
        let mut latencies = Vec::new();
        loop {
            let Some(events) = queue.lock().unwrap().pop_front() else {
                break;
            };
            let mut room = NaiveRoom::default();
            for event in &events {
                let t = Instant::now();
                room.write(&db, event).await?;
                latencies.push(t.elapsed());
            }
        }
        anyhow::Ok(latencies)
    });
    let mut latencies = Vec::new();
    for part in futures_util::future::join_all(workers).await {
        latencies.extend(part?);
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok((latencies.len() as u64, latencies, elapsed))
}

#[derive(Default)]
struct NaiveRoom {
    id: Option<Uuid>,
    sessions: HashMap<String, Uuid>,
}

impl NaiveRoom {
    async fn write(&mut self, db: &DatabaseConnection, event: &Event) -> anyhow::Result<()> {
        let body: serde_json::Value = serde_json::from_str(&event.body)?;
        let kind = body["event"].as_str().unwrap_or_default();
        let name = body["room"]["name"].as_str().unwrap_or_default();
        let sid = body["participant"]["sid"].as_str().unwrap_or_default();
        let identity = body["participant"]["identity"].as_str().unwrap_or_default();
        let now = Utc::now();
        let room_id = *self.id.get_or_insert_with(Uuid::new_v4);

        let txn = db.begin().await?;
        webhook_events::Entity::insert(webhook_events::ActiveModel {
            id: Set(Uuid::new_v4()),
            event_id: Set(Some(event.id.clone())),
            event: Set(kind.to_owned()),
            room_name: Set(Some(name.to_owned())),
            room_sid: Set(None),
            room_id: Set(Some(room_id)),
            participant_identity: Set(Some(identity.to_owned())),
            participant_sid: Set(Some(sid.to_owned())),
            created_at: Set(Some(now)),
            received_at: Set(now),
            outcome: Set("applied".into()),
            deliveries: Set(1),
        })
        .on_conflict_do_nothing_on([webhook_events::Column::EventId])
        .exec_without_returning(&txn)
        .await?;
        let delta = match kind {
            "room_started" => {
                rooms::Entity::insert(roomd::store::rows::active_room(
                    room_id,
                    name.to_owned(),
                    None,
                    0,
                    now,
                ))
                .exec_without_returning(&txn)
                .await?;
                0
            }
            "participant_joined" => {
                let id = Uuid::new_v4();
                self.sessions.insert(sid.to_owned(), id);
                participants::Entity::insert(roomd::store::rows::open_participant(
                    id,
                    room_id,
                    identity.to_owned(),
                    sid.to_owned(),
                    now,
                ))
                .exec_without_returning(&txn)
                .await?;
                1
            }
            _ => {
                if let Some(id) = self.sessions.remove(sid) {
                    participants::Entity::update_many()
                        .col_expr(participants::Column::Status, Expr::val("left"))
                        .col_expr(participants::Column::LeftAt, Expr::val(now))
                        .filter(participants::Column::Id.eq(id))
                        .exec(&txn)
                        .await?;
                }
                -1
            }
        };
        if delta != 0 {
            rooms::Entity::update_many()
                .col_expr(
                    rooms::Column::CurrentParticipants,
                    Expr::col(rooms::Column::CurrentParticipants).add(delta),
                )
                .filter(rooms::Column::Id.eq(room_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
