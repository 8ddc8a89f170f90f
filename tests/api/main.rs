//! roomd's integration tests, one binary (as zero2prod does): the real HTTP
//! server on a real database, SQLite always and PostgreSQL when
//! `ROOMD_TEST_POSTGRES_URL` is set; roomd as a separate process where a test
//! kills it or measures it; LiveKit played by `common::fake_livekit` (its
//! RoomService) and `common::webhook` (its signed deliveries).

mod common;

mod browser;
mod cli;
mod cluster;
mod concurrency;
mod config;
mod drills;
mod exactness;
mod fuzz_props;
mod golden;
mod hostile;
mod openapi;
mod read_api;
mod rejections;
mod restart;
mod seed;
mod semantics;
mod state_props;
mod stream;
mod supervisor;
