//! roomd: a stateful room supervisor for LiveKit.
//!
//! Data flows one way: HTTP -> `livekit` (verify, parse) -> `room` (the
//! supervisor routes to the room's actor, which applies the event through the
//! pure state machine) -> `store` (group commit) -> reply. Reads take the
//! snapshots the actors publish after each commit.
//!
//! Imports run one way too, leaves first:
//! - `seed` (the process's hash seed) and `shard` (which rooms this node
//!   may write) import nothing of roomd's, `event` (what LiveKit told us)
//!   only `seed`, and `record` (the rows kept, the persistence contract)
//!   only `event`;
//! - `livekit` imports `event`; `store` imports `record` and `event`;
//! - `room` imports `event`, `record` and `store`, never `livekit`;
//! - `reconcile` joins `livekit` to `room`; `cluster` (leases, the shard map,
//!   forwarding) joins `room` to the other nodes; `http` and `app` sit on top.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod harness;
pub mod http;
pub mod livekit;
pub mod metrics;
pub mod reconcile;
pub mod record;
pub mod room;
pub mod seed;
pub mod shard;
pub mod store;
pub mod telemetry;
