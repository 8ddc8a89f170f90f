//! `rooms.changed_at`: when roomd received what last changed the room, so
//! reconciliation can tell a list fetched before a change from one fetched
//! after it, across actor restarts. And an index on
//! `webhook_events.received_at` for the audit retention job.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Rooms::Table)
                    .add_column(timestamp_with_time_zone_null(Rooms::ChangedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_events_received_at")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_webhook_events_received_at")
                    .table(WebhookEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Rooms::Table)
                    .drop_column(Rooms::ChangedAt)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    ChangedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    ReceivedAt,
}
