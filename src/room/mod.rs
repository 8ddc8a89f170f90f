//! The room domain: events, the pure state machine, the room actor, the
//! supervisor that owns the actors and the reconciler. Nothing here knows
//! about HTTP.

pub mod actor;
pub mod delivery;
pub mod feed;
pub mod messages;
pub mod presence;
pub mod published;
pub mod reads;
pub mod registry;
pub mod snapshot;
pub mod state;
pub mod supervisor;

pub use actor::Lifecycle;
pub use delivery::{DeliverError, Unavailable};
pub use supervisor::{Supervisor, SupervisorSettings, SupervisorStatus};
