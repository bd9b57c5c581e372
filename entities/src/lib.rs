//! SeaORM entities of labfleet's database. Only the table shapes live here; the queries and the
//! behaviour belong to the crate that owns each concept (jobs: `labfleet-jobs`).

pub mod api_token;
pub mod audit_event;
pub mod class;
pub mod class_vm;
pub mod cluster;
pub mod cluster_node;
pub mod cluster_storage;
pub mod idempotency_key;
pub mod idle;
pub mod iso;
pub mod job;
pub mod job_event;
pub mod noop_effect;
pub mod template;
pub mod user;
