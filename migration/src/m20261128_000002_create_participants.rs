use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261128_000001_create_rooms::Rooms;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Participants::Table)
                    .if_not_exists()
                    .col(uuid(Participants::Id).primary_key())
                    .col(uuid(Participants::RoomId))
                    .col(string(Participants::Identity))
                    // The seed keys people by users.id; set when the identity is a UUID.
                    .col(uuid_null(Participants::UserId))
                    .col(string_null(Participants::Sid))
                    .col(string(Participants::Kind))
                    .col(string_null(Participants::Name))
                    .col(string(Participants::Status))
                    // NULL for a tombstone: a leave that arrived before (or without) its join.
                    .col(timestamp_with_time_zone_null(Participants::JoinedAt))
                    .col(timestamp_with_time_zone_null(Participants::LeftAt))
                    .col(string_null(Participants::LeaveReason))
                    .col(timestamp_with_time_zone(Participants::CreatedAt))
                    .col(timestamp_with_time_zone(Participants::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_participants_room_id")
                            .from(Participants::Table, Participants::RoomId)
                            .to(Rooms::Table, Rooms::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_participants_room_id_status")
                    .table(Participants::Table)
                    .col(Participants::RoomId)
                    .col(Participants::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_participants_user_id")
                    .table(Participants::Table)
                    .col(Participants::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Participants::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    Id,
    RoomId,
    Identity,
    UserId,
    Sid,
    Kind,
    Name,
    Status,
    JoinedAt,
    LeftAt,
    LeaveReason,
    CreatedAt,
    UpdatedAt,
}
