use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rooms::Table)
                    .if_not_exists()
                    .col(uuid(Rooms::Id).primary_key())
                    .col(string(Rooms::LivekitName))
                    // NULL until LiveKit tells us the sid (the seed's bodies carry none);
                    // unique where known: a reused name gets a new sid and a new row.
                    .col(string_null(Rooms::LivekitSid).unique_key())
                    .col(string(Rooms::Status))
                    .col(integer(Rooms::CurrentParticipants).default(0))
                    .col(timestamp_with_time_zone(Rooms::StartedAt))
                    .col(timestamp_with_time_zone_null(Rooms::EndedAt))
                    .col(string_null(Rooms::EndReason))
                    .col(timestamp_with_time_zone(Rooms::CreatedAt))
                    .col(timestamp_with_time_zone(Rooms::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rooms_livekit_name_started_at")
                    .table(Rooms::Table)
                    .col(Rooms::LivekitName)
                    .col(Rooms::StartedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rooms_status")
                    .table(Rooms::Table)
                    .col(Rooms::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Rooms::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Rooms {
    Table,
    Id,
    LivekitName,
    LivekitSid,
    Status,
    CurrentParticipants,
    StartedAt,
    EndedAt,
    EndReason,
    CreatedAt,
    UpdatedAt,
}
