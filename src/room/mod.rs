//! The room domain: events, the pure state machine, the room actor and the
//! supervisor that owns the actors. Nothing here knows about HTTP.

pub mod actor;
pub mod event;
pub mod record;
pub mod snapshot;
pub mod state;
pub mod supervisor;

pub use actor::Delivered;
pub use supervisor::{DeliverError, Rooms, SupervisorSettings};
