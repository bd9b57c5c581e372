//! What a job handler gets (`JobContext`) and what it returns (`JobOutcome` or `JobError`).

use std::{collections::HashMap, time::Duration};

use labfleet_clusters::ClusterStore;
use labfleet_jobs::{store::NewJob, Family, JobSpec, JobStore, Publisher, StoreError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How a handler's run ended, when it did not fail.
#[derive(Clone, Debug)]
pub enum JobOutcome {
    /// Done, with an optional result kept on the job.
    Done(Option<Value>),
    /// Not done yet: run again after `after` with `checkpoint` (the delivery is acked meanwhile).
    Continue {
        /// When to continue.
        after: Duration,
        /// State handed to the continuation.
        checkpoint: Value,
        /// What it waits for.
        note: Option<String>,
    },
    /// Children were created; the job finishes when they all have.
    WaitChildren,
}

/// Why a handler's run failed: retry or abort.
#[derive(Clone, Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt after a delay (timeouts, locks, unreachable services).
    #[error("{0}")]
    Transient(String),
    /// Another attempt would fail the same way (bad input, missing object, no permission).
    #[error("{0}")]
    Permanent(String),
    /// Stopped because cancellation was requested (or the worker is shutting down).
    #[error("cancelled")]
    Cancelled,
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        // The database is infrastructure: its failures are worth retrying.
        JobError::Transient(e.to_string())
    }
}

/// Everything a handler may use.
#[derive(Clone)]
pub struct JobContext {
    /// The job.
    pub job_id: Uuid,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// State saved by the previous run, for a continuation.
    pub checkpoint: Option<Value>,
    /// Who created the job.
    pub created_by: String,
    /// Fires when the job must stop (cancel requested, or shutdown).
    pub cancel: CancellationToken,
    /// Access to jobs.
    pub store: JobStore,
    /// Publishes jobs.
    pub publisher: Publisher,
    /// Registered clusters (and their decrypted credentials, for talking to them).
    pub clusters: ClusterStore,
    /// Attempts children get.
    pub max_attempts: u32,
}

impl JobContext {
    /// Creates this job's children (once, even if the job runs again) and publishes those not yet
    /// published. Returns `WaitChildren`, the outcome the handler should end with.
    pub async fn spawn_children(&self, children: Vec<JobSpec>) -> Result<JobOutcome, JobError> {
        let new: Vec<NewJob> = children
            .into_iter()
            .map(|spec| NewJob {
                spec,
                parent_id: Some(self.job_id),
                created_by: self.created_by.clone(),
                max_attempts: self.max_attempts,
            })
            .collect();
        let Some(pending) = self.store.create_children(self.job_id, &new).await? else {
            return Err(JobError::Cancelled);
        };
        let mut by_family: HashMap<Family, Vec<Uuid>> = HashMap::new();
        for (family, id) in pending {
            by_family.entry(family).or_default().push(id);
        }
        for (family, ids) in by_family {
            for chunk in ids.chunks(500) {
                if let Err(e) = self.publisher.publish(family, chunk).await {
                    // The children are stored; the recovery sweep publishes them later.
                    tracing::warn!(error = %e, "could not publish children now");
                }
            }
        }
        Ok(JobOutcome::WaitChildren)
    }
}
