#![allow(clippy::unwrap_used, clippy::expect_used)]
//! labfleet's integration tests: one binary, one module per feature. Each test gets its own
//! database (a copy of a migrated PostgreSQL template, or a SQLite file), its own queue prefix on
//! the real RabbitMQ, and its own API on port 0.

mod access;
mod cli;
mod clusters;
mod conformance;
mod deploy;
mod harness;
mod inventory;
mod job_store;
mod jobs_api;
mod jobs_engine;
mod layout;
mod outages;
mod power;
mod restarts;
mod scheduler;
