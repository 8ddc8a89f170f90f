//! sea-orm entities: the tables as the migrations in `migration/` create them.

pub mod participants;
pub mod rooms;
pub mod webhook_events;
