//! What LiveKit's at-least-once, unordered delivery must not break:
//! duplicates, leaves before joins, reconnects, reused room names, rooms
//! that finish with people inside.

use crate::common;

use common::{TestApp, webhook};
use roomd::store::entity::webhook_events;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

async fn a_redelivered_event_is_acknowledged_and_not_reapplied(app: &TestApp) {
    let join = webhook::joined("dup", "RM_dup", "PA_d1", "dana")
        .id("EV_dup_join_1")
        .body();
    let first = app.ok(&join).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["outcome"], "applied");
    let again = app.ok(&join).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.count("dup").await, 1);

    // The same leave twice, then the join's retry after it: still empty.
    let leave = webhook::left("dup", "RM_dup", "PA_d1", "dana")
        .id("EV_dup_left_1")
        .body();
    app.ok(&leave).await;
    assert_eq!(app.ok(&leave).await["duplicate"], true);
    assert_eq!(app.ok(&join).await["duplicate"], true);
    assert_eq!(app.count("dup").await, 0);

    let row = webhook_events::Entity::find()
        .filter(webhook_events::Column::EventId.eq("EV_dup_join_1"))
        .one(&app.db)
        .await
        .unwrap()
        .expect("audit row");
    assert_eq!(
        row.deliveries, 3,
        "each redelivery is counted on the original row"
    );
    assert_eq!(row.outcome, "applied");
}
#[actix_web::test]
async fn a_redelivered_event_is_acknowledged_and_not_reapplied_on_every_backend() {
    common::on_every_backend(a_redelivered_event_is_acknowledged_and_not_reapplied).await;
}

async fn a_leave_before_its_join_keeps_the_session_closed(app: &TestApp) {
    app.ok(&webhook::room_started("ooo", "RM_ooo").id("EV_ooo_0").body())
        .await;
    let left = app
        .ok(&webhook::left("ooo", "RM_ooo", "PA_o1", "olga")
            .id("EV_ooo_2")
            .at(20)
            .body())
        .await;
    assert_eq!(left["outcome"], "applied", "the tombstone is a change");
    let late_join = app
        .ok(&webhook::joined("ooo", "RM_ooo", "PA_o1", "olga")
            .id("EV_ooo_1")
            .at(10)
            .body())
        .await;
    assert_eq!(late_join["outcome"], "ignored");
    assert_eq!(app.count("ooo").await, 0);

    // connection_aborted usually comes without a join; a join may still follow.
    app.ok(&webhook::aborted("ooo", "RM_ooo", "PA_o2", "oscar")
        .id("EV_ooo_3")
        .body())
        .await;
    app.ok(&webhook::joined("ooo", "RM_ooo", "PA_o2", "oscar")
        .id("EV_ooo_4")
        .body())
        .await;
    assert_eq!(app.count("ooo").await, 0);

    let room = app.active_room_row("ooo").await.unwrap();
    let rows = app.participant_rows(room.id).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|p| p.status == "left" && p.left_at.is_some() && p.joined_at.is_none())
    );
    assert_eq!(room.current_participants, 0);
}
#[actix_web::test]
async fn a_leave_before_its_join_keeps_the_session_closed_on_every_backend() {
    common::on_every_backend(a_leave_before_its_join_keeps_the_session_closed).await;
}

async fn a_reconnect_with_a_new_sid_counts_the_person_once(app: &TestApp) {
    app.ok(&webhook::joined("rc", "RM_rc", "PA_r1", "rita")
        .id("EV_rc_1")
        .body())
        .await;
    app.ok(&webhook::joined("rc", "RM_rc", "PA_s1", "sam")
        .id("EV_rc_2")
        .body())
        .await;
    // Rita's network drops; her client reconnects before the old session times out.
    app.ok(&webhook::joined("rc", "RM_rc", "PA_r2", "rita")
        .id("EV_rc_3")
        .body())
        .await;
    assert_eq!(app.count("rc").await, 2);
    app.ok(&webhook::left("rc", "RM_rc", "PA_r1", "rita")
        .id("EV_rc_4")
        .body())
        .await;
    assert_eq!(
        app.count("rc").await,
        2,
        "rita is still in through her new session"
    );
    app.ok(&webhook::left("rc", "RM_rc", "PA_r2", "rita")
        .id("EV_rc_5")
        .body())
        .await;
    assert_eq!(app.count("rc").await, 1);
    let room = app.active_room_row("rc").await.unwrap();
    assert_eq!(room.current_participants, 1);
}
#[actix_web::test]
async fn a_reconnect_with_a_new_sid_counts_the_person_once_on_every_backend() {
    common::on_every_backend(a_reconnect_with_a_new_sid_counts_the_person_once).await;
}

async fn room_finished_closes_every_open_participant(app: &TestApp) {
    for (i, who) in ["ann", "ben", "cat"].iter().enumerate() {
        app.ok(&webhook::joined("fin", "RM_fin", &format!("PA_f{i}"), who)
            .id(&format!("EV_fin_{i}"))
            .at(100)
            .body())
            .await;
    }
    assert_eq!(app.count("fin").await, 3);
    app.ok(&webhook::room_finished("fin", "RM_fin")
        .id("EV_fin_end")
        .at(200)
        .body())
        .await;
    let view = app.room("fin").await;
    assert_eq!(view["status"], "ended");
    assert_eq!(view["participant_count"], 0);

    let room = &app.room_rows("fin").await[0];
    assert_eq!(room.current_participants, 0);
    for p in app.participant_rows(room.id).await {
        assert_eq!(p.status, "left");
        assert_eq!(p.left_at, room.ended_at);
        assert_eq!(p.leave_reason.as_deref(), Some("room_finished"));
    }

    // Anything for the finished instance is stale now.
    let late = app
        .ok(&webhook::joined("fin", "RM_fin", "PA_f9", "dan")
            .id("EV_fin_late")
            .at(150)
            .body())
        .await;
    assert_eq!(late["outcome"], "stale");
    let late_leave = app
        .ok(&webhook::left("fin", "RM_fin", "PA_f0", "ann")
            .id("EV_fin_late2")
            .at(190)
            .body())
        .await;
    assert_eq!(late_leave["outcome"], "stale");
    assert_eq!(app.count("fin").await, 0);
}
#[actix_web::test]
async fn room_finished_closes_every_open_participant_on_every_backend() {
    common::on_every_backend(room_finished_closes_every_open_participant).await;
}

async fn a_reused_room_name_is_a_new_instance(app: &TestApp) {
    app.ok(&webhook::room_started("daily", "RM_day1")
        .id("EV_day1_0")
        .at(100)
        .body())
        .await;
    app.ok(&webhook::joined("daily", "RM_day1", "PA_a", "amy")
        .id("EV_day1_1")
        .at(101)
        .body())
        .await;
    app.ok(&webhook::room_finished("daily", "RM_day1")
        .id("EV_day1_2")
        .at(200)
        .body())
        .await;

    app.ok(&webhook::room_started("daily", "RM_day2")
        .id("EV_day2_0")
        .at(300)
        .body())
        .await;
    app.ok(&webhook::joined("daily", "RM_day2", "PA_b", "bob")
        .id("EV_day2_1")
        .at(301)
        .body())
        .await;
    let view = app.room("daily").await;
    assert_eq!(view["sid"], "RM_day2");
    assert_eq!(view["status"], "active");
    assert_eq!(view["participant_count"], 1);

    // A late event of the first instance does not revive it or touch the second.
    let late = app
        .ok(&webhook::joined("daily", "RM_day1", "PA_c", "cid")
            .id("EV_day1_late")
            .at(150)
            .body())
        .await;
    assert_eq!(late["outcome"], "stale");
    assert_eq!(app.count("daily").await, 1);

    let rows = app.room_rows("daily").await;
    assert_eq!(rows.len(), 2);
    let first = rows
        .iter()
        .find(|r| r.livekit_sid.as_deref() == Some("RM_day1"))
        .unwrap();
    assert_eq!(first.status, "ended");
}
#[actix_web::test]
async fn a_reused_room_name_is_a_new_instance_on_every_backend() {
    common::on_every_backend(a_reused_room_name_is_a_new_instance).await;
}

async fn a_new_sid_ends_an_instance_whose_finish_was_lost(app: &TestApp) {
    app.ok(&webhook::joined("lost", "RM_lost1", "PA_x", "xia")
        .id("EV_lost_1")
        .at(100)
        .body())
        .await;
    // room_finished for RM_lost1 was dropped by LiveKit; the name comes back.
    app.ok(&webhook::joined("lost", "RM_lost2", "PA_y", "yan")
        .id("EV_lost_2")
        .at(500)
        .body())
        .await;
    let view = app.room("lost").await;
    assert_eq!(view["sid"], "RM_lost2");
    assert_eq!(view["participant_count"], 1);
    let old = app
        .room_rows("lost")
        .await
        .into_iter()
        .find(|r| r.livekit_sid.as_deref() == Some("RM_lost1"))
        .unwrap();
    assert_eq!(old.status, "ended");
    assert_eq!(old.end_reason.as_deref(), Some("replaced"));
    assert_eq!(old.current_participants, 0);
    let xia = &app.participant_rows(old.id).await[0];
    assert_eq!(xia.leave_reason.as_deref(), Some("replaced"));
}
#[actix_web::test]
async fn a_new_sid_ends_an_instance_whose_finish_was_lost_on_every_backend() {
    common::on_every_backend(a_new_sid_ends_an_instance_whose_finish_was_lost).await;
}

async fn counts_include_every_kind_and_break_them_down(app: &TestApp) {
    app.ok(&webhook::joined("kinds", "RM_k", "PA_1", "u1").body())
        .await;
    app.ok(&webhook::joined("kinds", "RM_k", "PA_2", "u2")
        .kind("STANDARD")
        .body())
        .await;
    app.ok(&webhook::joined("kinds", "RM_k", "PA_3", "agent-1")
        .kind("AGENT")
        .body())
        .await;
    app.ok(&webhook::joined("kinds", "RM_k", "PA_4", "EG_rec")
        .kind("EGRESS")
        .body())
        .await;
    app.ok(&webhook::joined("kinds", "RM_k", "PA_5", "sip-caller")
        .kind("SIP")
        .body())
        .await;
    let view = app.room("kinds").await;
    assert_eq!(view["participant_count"], 5);
    assert_eq!(view["counts_by_kind"]["standard"], 2);
    assert_eq!(view["counts_by_kind"]["agent"], 1);
    assert_eq!(view["counts_by_kind"]["egress"], 1);
    assert_eq!(view["counts_by_kind"]["sip"], 1);
    let room = app.active_room_row("kinds").await.unwrap();
    assert_eq!(room.current_participants, 5);
}
#[actix_web::test]
async fn counts_include_every_kind_and_break_them_down_on_every_backend() {
    common::on_every_backend(counts_include_every_kind_and_break_them_down).await;
}

async fn events_roomd_does_not_act_on_are_acknowledged_and_audited(app: &TestApp) {
    let track = webhook::event("track_published")
        .room("audit", "RM_audit")
        .participant("PA_t", "tom")
        .id("EV_track_1")
        .body();
    let reply = app.ok(&track).await;
    assert_eq!(reply["event"], "track_published");
    assert_eq!(reply["outcome"], "ignored");
    let egress = r#"{"event":"egress_started","egressInfo":{"egressId":"EG_1","roomId":"RM_audit","roomName":"audit"},"id":"EV_egress_1","createdAt":"5"}"#;
    app.ok(egress).await;
    let unknown = webhook::event("something_new").id("EV_new_1").body();
    app.ok(&unknown).await;
    let rows = webhook_events::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 3);
    let egress_row = rows.iter().find(|r| r.event == "egress_started").unwrap();
    assert_eq!(egress_row.room_name.as_deref(), Some("audit"));
    // None of them made a room.
    assert!(app.room_rows("audit").await.is_empty());
}
#[actix_web::test]
async fn events_roomd_does_not_act_on_are_acknowledged_and_audited_on_every_backend() {
    common::on_every_backend(events_roomd_does_not_act_on_are_acknowledged_and_audited).await;
}
