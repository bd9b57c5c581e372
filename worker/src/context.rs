//! What a job handler gets (`JobContext`) and what it returns (`JobOutcome` or `JobError`).

use std::time::Duration;

use std::sync::Arc;

use labfleet_clusters::ClusterStore;
use labfleet_config::{DeploySettings, PowerSettings};
use labfleet_deploy::{ClassStore, Slots};
use labfleet_jobs::{store::NewJob, JobSpec, JobStore, Publisher, StoreError};
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
    /// The claim this run holds (fences its writes).
    pub lease_token: Uuid,
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
    /// Classes and their VMs.
    pub classes: ClassStore,
    /// Cross-worker concurrency caps on Proxmox storages and nodes.
    pub slots: Slots,
    /// Deployment limits and pacing.
    pub deploy: Arc<DeploySettings>,
    /// Power jobs' defaults.
    pub power: PowerSettings,
    /// Attempts children get.
    pub max_attempts: u32,
}

impl JobContext {
    /// Shows what the job is doing now in its progress (`cloning on pve2`). A failure to write it
    /// is logged and otherwise ignored: the step is information, not state.
    pub async fn set_step(&self, step: impl AsRef<str>) {
        if let Err(e) = self
            .store
            .set_step(self.job_id, self.lease_token, step.as_ref())
            .await
        {
            tracing::debug!(error = %e, "could not record the job's step");
        }
    }

    /// Creates this job's children (once, even if the job runs again) and publishes those not yet
    /// published. Returns `WaitChildren`, the outcome the handler should end with.
    pub async fn spawn_children(&self, children: Vec<JobSpec>) -> Result<JobOutcome, JobError> {
        self.spawn_children_with(children, self.max_attempts).await
    }

    /// [`JobContext::spawn_children`] with the attempts each child gets.
    pub async fn spawn_children_with(
        &self,
        children: Vec<JobSpec>,
        max_attempts: u32,
    ) -> Result<JobOutcome, JobError> {
        let new: Vec<NewJob> = children
            .into_iter()
            .map(|spec| NewJob {
                spec,
                parent_id: Some(self.job_id),
                created_by: self.created_by.clone(),
                max_attempts,
                class_id: None,
            })
            .collect();
        let Some(pending) = self.store.create_children(self.job_id, &new).await? else {
            return Err(JobError::Cancelled);
        };
        self.publisher.publish_stored(&pending).await;
        Ok(JobOutcome::WaitChildren)
    }
}
