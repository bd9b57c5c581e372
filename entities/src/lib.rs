//! SeaORM entities of labfleet's database. Only the table shapes live here; the queries and the
//! behaviour belong to the crate that owns each concept (jobs: `labfleet-jobs`).

pub mod cluster;
pub mod idempotency_key;
pub mod job;
pub mod job_event;
pub mod noop_effect;
