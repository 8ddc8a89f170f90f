//! The room domain: events, the pure state machine, the room actor, the
//! supervisor that owns the actors and the reconciler. Nothing here knows
//! about HTTP.

pub mod actor;
pub mod event;
pub mod feed;
pub mod messages;
pub mod published;
pub mod reconciler;
pub mod record;
pub mod snapshot;
pub mod state;
pub mod supervisor;

pub use actor::{Delivered, Lifecycle};
pub use supervisor::{DeliverError, Rooms, SupervisorSettings, SupervisorStatus};
