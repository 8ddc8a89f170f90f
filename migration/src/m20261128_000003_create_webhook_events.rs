use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(uuid(WebhookEvents::Id).primary_key())
                    // LiveKit's `EV_...` id. Unique so that a redelivery, also after a
                    // restart, is recognised by the insert itself. NULL for bodies
                    // without an id (the seed's curl test): those cannot be deduplicated.
                    .col(string_null(WebhookEvents::EventId).unique_key())
                    .col(string(WebhookEvents::Event))
                    .col(string_null(WebhookEvents::RoomName))
                    .col(string_null(WebhookEvents::RoomSid))
                    .col(uuid_null(WebhookEvents::RoomId))
                    .col(string_null(WebhookEvents::ParticipantIdentity))
                    .col(string_null(WebhookEvents::ParticipantSid))
                    .col(timestamp_with_time_zone_null(WebhookEvents::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEvents::ReceivedAt))
                    .col(string(WebhookEvents::Outcome))
                    .col(integer(WebhookEvents::Deliveries).default(1))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_events_room_name")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::RoomName)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    EventId,
    Event,
    RoomName,
    RoomSid,
    RoomId,
    ParticipantIdentity,
    ParticipantSid,
    CreatedAt,
    ReceivedAt,
    Outcome,
    Deliveries,
}
