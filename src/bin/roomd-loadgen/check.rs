//! The end of a run: compare what roomd serves, and what it stored, with the
//! ground truth.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;
use roomd::store::entity::{participants, rooms, webhook_events};
use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter, QuerySelect};

use crate::model::RoomModel;

/// Rooms whose served count differs from the truth.
pub async fn served(base: &str, rooms: &[RoomModel]) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let counts = futures_util::stream::iter(rooms)
        .map(|room| {
            let client = &client;
            async move {
                let url = format!("{base}/v1/rooms/{}", room.name);
                let view: serde_json::Value = client.get(&url).send().await?.json().await?;
                anyhow::Ok((room, view["participant_count"].as_u64()))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut mismatches = 0;
    for result in counts {
        let (room, served) = result?;
        // A room the run never reached (its time ran out first) is unknown.
        let expected = room.is_started().then_some(room.expected_count() as u64);
        if served != expected {
            mismatches += 1;
            if mismatches <= 10 {
                eprintln!(
                    "mismatch: {} serves {served:?}, expected {expected:?}",
                    room.name
                );
            }
        }
    }
    Ok(mismatches)
}

/// What the database holds, against the truth.
pub struct Stored {
    /// Rooms whose active row, count or open participant rows are wrong.
    pub room_mismatches: usize,
    /// Events answered 200 with no row in `webhook_events`.
    pub acked_missing: usize,
}

pub async fn stored(
    url: &str,
    run: &str,
    rooms: &[RoomModel],
    acked: &[String],
) -> anyhow::Result<Stored> {
    let db = Database::connect(url).await?;
    let prefix = format!("lg-{run}-");
    let rows = rooms::Entity::find()
        .filter(rooms::Column::LivekitName.starts_with(&prefix))
        .filter(rooms::Column::Status.eq("active"))
        .all(&db)
        .await?;
    let mut active: HashMap<&str, Vec<&rooms::Model>> = HashMap::new();
    for row in &rows {
        active.entry(&row.livekit_name).or_default().push(row);
    }
    let mut open: HashMap<uuid::Uuid, HashSet<String>> = HashMap::new();
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
    for chunk in ids.chunks(500) {
        let sessions = participants::Entity::find()
            .filter(participants::Column::RoomId.is_in(chunk.to_vec()))
            .filter(participants::Column::Status.eq("joined"))
            .all(&db)
            .await?;
        for s in sessions {
            open.entry(s.room_id).or_default().extend(s.sid);
        }
    }
    let mut room_mismatches = 0;
    for room in rooms {
        let expected: HashSet<String> = room.open_sids().map(str::to_owned).collect();
        let ok = match active.get(room.name.as_str()).map(Vec::as_slice) {
            Some([row]) => {
                row.current_participants as usize == room.expected_count()
                    && open.get(&row.id).cloned().unwrap_or_default() == expected
            }
            None => !room.is_started(),
            _ => false,
        };
        if !ok {
            room_mismatches += 1;
            if room_mismatches <= 10 {
                eprintln!("mismatch: {} stored rows differ from the truth", room.name);
            }
        }
    }
    let committed: HashSet<String> = webhook_events::Entity::find()
        .select_only()
        .column(webhook_events::Column::EventId)
        .filter(webhook_events::Column::EventId.starts_with(format!("EV_{run}_")))
        .into_tuple::<Option<String>>()
        .all(&db)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let acked_missing = acked.iter().filter(|id| !committed.contains(*id)).count();
    db.close().await?;
    Ok(Stored {
        room_mismatches,
        acked_missing,
    })
}
