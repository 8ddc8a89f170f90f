//! roomd's schema, versioned. Migrations never import the live entity types:
//! each file must keep compiling (and mean the same thing) after the entities change.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_rooms;
mod m20261128_000002_create_participants;
mod m20261128_000003_create_webhook_events;
mod m20261129_000004_add_rooms_changed_at;
mod m20261129_000005_create_cluster;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_rooms::Migration),
            Box::new(m20261128_000002_create_participants::Migration),
            Box::new(m20261128_000003_create_webhook_events::Migration),
            Box::new(m20261129_000004_add_rooms_changed_at::Migration),
            Box::new(m20261129_000005_create_cluster::Migration),
        ]
    }
}
