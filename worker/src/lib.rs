//! The worker: consumes each job family's queue, claims jobs in the database with a lease, runs
//! them, writes their outcome, then acknowledges the message. Transient failures are retried with
//! delays, long waits become delayed continuations, and shutdown hands unfinished work back.

mod completion;
mod context;
mod engine;
mod heartbeat;
pub mod jobs;

pub use context::{JobContext, JobError, JobOutcome};
pub use engine::Worker;
