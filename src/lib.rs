//! roomd: a stateful room supervisor for LiveKit.
//!
//! Data flows one way: HTTP -> `livekit` (verify, parse) -> `room` (the
//! supervisor routes to the room's actor, which applies the event through the
//! pure state machine) -> `store` (group commit) -> reply. Reads take the
//! snapshots the actors publish after each commit.

pub mod app;
pub mod cli;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod harness;
pub mod http;
pub mod livekit;
pub mod metrics;
pub mod room;
pub mod store;
pub mod telemetry;
