//! The tables several nodes share on one PostgreSQL (`cluster.mode =
//! "postgres"`): the nodes and their leases, the shards and who owns each
//! under which epoch, and the shard count all nodes must agree on. Created
//! on every backend so the schema is one; only PostgreSQL uses them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterNodes::Table)
                    .if_not_exists()
                    .col(string(ClusterNodes::NodeId).primary_key())
                    .col(uuid(ClusterNodes::Incarnation))
                    .col(string(ClusterNodes::AdvertiseUrl))
                    .col(timestamp_with_time_zone(ClusterNodes::LeaseUntil))
                    .col(timestamp_with_time_zone(ClusterNodes::StartedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterShards::Table)
                    .if_not_exists()
                    .col(integer(ClusterShards::Shard).primary_key())
                    .col(string_null(ClusterShards::Owner))
                    .col(big_integer(ClusterShards::Epoch).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterMeta::Table)
                    .if_not_exists()
                    .col(string(ClusterMeta::Key).primary_key())
                    .col(string(ClusterMeta::Value))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ClusterMeta::Table.into_iden(),
            ClusterShards::Table.into_iden(),
            ClusterNodes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ClusterNodes {
    Table,
    NodeId,
    Incarnation,
    AdvertiseUrl,
    LeaseUntil,
    StartedAt,
}

#[derive(DeriveIden)]
enum ClusterShards {
    Table,
    Shard,
    Owner,
    Epoch,
}

#[derive(DeriveIden)]
enum ClusterMeta {
    Table,
    Key,
    Value,
}
