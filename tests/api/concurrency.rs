//! Many rooms at once, deliveries for one room racing each other, retries:
//! every served count and every stored row equals the ground truth.

use crate::common;

use std::collections::HashMap;

use common::{TestApp, webhook};
use futures::StreamExt;
use reqwest::StatusCode;

const ROOMS: usize = 40;
const PEOPLE: usize = 8;

/// Per room: everyone joins; every third person leaves; every fourth
/// reconnects (a second session, then the first one leaves). The ground
/// truth is who still has an open session.
fn script() -> (Vec<String>, HashMap<String, usize>) {
    let mut bodies = Vec::new();
    let mut truth = HashMap::new();
    for r in 0..ROOMS {
        let room = format!("par-{r}");
        let room_sid = format!("RM_par{r}");
        let mut present = 0;
        for p in 0..PEOPLE {
            let who = format!("user-{r}-{p}");
            let sid = format!("PA_{r}_{p}_a");
            let ev = |kind: &str| format!("EV_{r}_{p}_{kind}");
            bodies.push(
                webhook::joined(&room, &room_sid, &sid, &who)
                    .id(&ev("j"))
                    .body(),
            );
            if p % 4 == 0 {
                let sid2 = format!("PA_{r}_{p}_b");
                bodies.push(
                    webhook::joined(&room, &room_sid, &sid2, &who)
                        .id(&ev("j2"))
                        .body(),
                );
                bodies.push(
                    webhook::left(&room, &room_sid, &sid, &who)
                        .id(&ev("l"))
                        .body(),
                );
                present += 1;
            } else if p % 3 == 0 {
                bodies.push(
                    webhook::left(&room, &room_sid, &sid, &who)
                        .id(&ev("l"))
                        .body(),
                );
            } else {
                present += 1;
            }
        }
        truth.insert(room, present);
    }
    (bodies, truth)
}

/// A deterministic shuffle (no clock, no global RNG): a fixed LCG.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

async fn concurrent_deliveries_across_rooms_match_the_ground_truth(app: &TestApp) {
    let (bodies, truth) = script();
    // Every event once, a fifth of them again (LiveKit's retries), all shuffled.
    let mut deliveries: Vec<String> = bodies
        .iter()
        .cloned()
        .chain(bodies.iter().step_by(5).cloned())
        .collect();
    shuffle(&mut deliveries, 42);

    let statuses: Vec<StatusCode> = futures::stream::iter(deliveries)
        .map(|body| async move {
            loop {
                let reply = app.webhook(&body).await;
                // A busy room answers 503 + Retry-After; LiveKit would retry.
                if reply.status != StatusCode::SERVICE_UNAVAILABLE {
                    return reply.status;
                }
                assert!(reply.retry_after.is_some());
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    for (room, expected) in &truth {
        assert_eq!(
            app.count(room).await,
            *expected as u64,
            "[{}] served count of {room}",
            app.backend
        );
        let row = app.active_room_row(room).await.expect("room row");
        assert_eq!(
            row.current_participants as usize, *expected,
            "[{}] rooms row of {room}",
            app.backend
        );
        let open_people: std::collections::HashSet<String> = app
            .participant_rows(row.id)
            .await
            .into_iter()
            .filter(|p| p.status == "joined")
            .map(|p| p.identity)
            .collect();
        assert_eq!(
            open_people.len(),
            *expected,
            "[{}] participant rows of {room}",
            app.backend
        );
    }
    assert_eq!(
        app.room_rows("par-0").await.len(),
        1,
        "one instance per room, however concurrent"
    );
}
#[actix_web::test]
async fn concurrent_deliveries_across_rooms_match_the_ground_truth_on_every_backend() {
    common::on_every_backend(concurrent_deliveries_across_rooms_match_the_ground_truth).await;
}

/// 100 first events for one new room at once: one actor, one room row.
async fn concurrent_first_events_make_one_room(app: &TestApp) {
    let bodies: Vec<String> = (0..100)
        .map(|i| {
            webhook::joined(
                "stampede",
                "RM_stampede",
                &format!("PA_st{i}"),
                &format!("p{i}"),
            )
            .id(&format!("EV_st{i}"))
            .body()
        })
        .collect();
    let statuses: Vec<StatusCode> = futures::stream::iter(bodies)
        .map(|b| async move { app.webhook(&b).await.status })
        .buffer_unordered(100)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(app.room_rows("stampede").await.len(), 1);
    assert_eq!(app.count("stampede").await, 100);
}
#[actix_web::test]
async fn concurrent_first_events_make_one_room_on_every_backend() {
    common::on_every_backend(concurrent_first_events_make_one_room).await;
}
