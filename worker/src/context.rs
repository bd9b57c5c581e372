//! What a job handler gets (`JobContext`) and what it returns (`JobOutcome` or `JobError`).

use std::time::Duration;

use std::sync::Arc;

use labfleet_clusters::ClusterStore;
use labfleet_config::{DeploySettings, PowerSettings};
use labfleet_fleet::{
    backend::{OpState, Operation, Progress},
    vmids::VmidError,
    Backend, BackendError, BackendFactory, ClassStore, Connected, FactoryError, Slots,
};
use labfleet_jobs::{store::NewJob, JobSpec, JobStore, Publisher, StoreError};
use sea_orm::DbErr;
use serde_json::Value;
use tokio::time::Instant;
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

impl From<BackendError> for JobError {
    /// The one mapping of hypervisor failures: transient ones and conflicts are retried with
    /// the engine's backoff, the rest fail the job; always with the hypervisor's message.
    fn from(e: BackendError) -> Self {
        if e.is_transient() {
            JobError::Transient(e.message().to_string())
        } else {
            JobError::Permanent(e.message().to_string())
        }
    }
}

impl From<FactoryError> for JobError {
    fn from(e: FactoryError) -> Self {
        if e.is_transient() {
            JobError::Transient(e.to_string())
        } else {
            JobError::Permanent(e.to_string())
        }
    }
}

impl From<DbErr> for JobError {
    /// A database failure is always worth another attempt.
    fn from(e: DbErr) -> Self {
        JobError::Transient(format!("database error: {e}"))
    }
}

impl From<VmidError> for JobError {
    /// A VMID reservation that failed: the database's trouble passes (retry), a range without
    /// free ids does not.
    fn from(e: VmidError) -> Self {
        if e.is_transient() {
            JobError::Transient(e.to_string())
        } else {
            JobError::Permanent(e.to_string())
        }
    }
}

impl JobOutcome {
    /// Parks the job for a moment, keeping what it waits for in the checkpoint.
    pub fn park(after: Duration, note: &str) -> JobOutcome {
        JobOutcome::Continue {
            after,
            checkpoint: serde_json::json!({ "waiting": note }),
            note: Some(note.to_string()),
        }
    }
}

/// How a wait for an operation ended within a run.
#[derive(Debug)]
pub enum Waited {
    /// It finished and did what it was asked.
    Done,
    /// Still running at the end of the run's inline budget: park and come back.
    StillRunning,
    /// It ended without doing it.
    Failed(BackendError),
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
    /// Registered clusters (their rows and inventory).
    pub clusters: ClusterStore,
    /// The hypervisor of each registered cluster.
    pub backends: Arc<dyn BackendFactory>,
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
    /// A registered cluster's row and its backend.
    pub async fn connect(&self, cluster_db_id: i64) -> Result<Connected, JobError> {
        Ok(self.backends.connect(cluster_db_id).await?)
    }

    /// The end of this run's inline budget: a run waits on the hypervisor at most this long,
    /// then parks (no delivery is held long; the engine's handler timeout is above it).
    pub fn run_deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.deploy.inline_wait_secs.clamp(1, 45))
    }

    /// Waits for an operation until `deadline` (the run's inline budget), stopping it (and the
    /// job) on cancel. With `step`, every few seconds the job's step shows it with the progress
    /// the backend reports (a disk copy's percent).
    pub async fn wait_for(
        &self,
        backend: &dyn Backend,
        op: &Operation,
        step: Option<&str>,
        deadline: Instant,
    ) -> Result<Waited, JobError> {
        let progress = if step.is_some() {
            Progress::Read
        } else {
            Progress::Skip
        };
        loop {
            let chunk = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), Duration::from_secs(3));
            let state = tokio::select! {
                r = backend.wait(op, chunk, progress) => r?,
                _ = self.cancel.cancelled() => return stop(backend, op).await,
            };
            match state {
                OpState::Done => return Ok(Waited::Done),
                OpState::Failed(e) => return Ok(Waited::Failed(e)),
                OpState::Running { percent } => {
                    if Instant::now() >= deadline {
                        return Ok(Waited::StillRunning);
                    }
                    if let (Some(step), Some(percent)) = (step, percent) {
                        self.set_step(format!("{step} ({percent:.0}%)")).await;
                    }
                }
            }
        }
    }

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

/// Cancel stops the operation too where it can (an interrupted clone leaves nothing behind).
/// An operation that finished before the stop reached it did its work: that is reported as done,
/// so what it made is recorded rather than left unaccounted for.
async fn stop(backend: &dyn Backend, op: &Operation) -> Result<Waited, JobError> {
    if let Err(e) = backend.cancel(op).await {
        tracing::warn!(operation = %op, error = %e, "could not stop the operation on cancel");
    }
    match backend
        .wait(op, Duration::from_secs(10), Progress::Skip)
        .await
    {
        Ok(OpState::Done) => Ok(Waited::Done),
        _ => Err(JobError::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_while_reserving_a_vmid_is_retried_and_an_empty_range_is_not() {
        let db_down = VmidError::Db(DbErr::Conn(sea_orm::RuntimeErr::Internal(
            "connection refused".into(),
        )));
        assert!(matches!(JobError::from(db_down), JobError::Transient(_)));
        let exhausted = VmidError::RangeExhausted {
            start: 100,
            end: 101,
            free: 0,
            wanted: 1,
        };
        assert!(matches!(JobError::from(exhausted), JobError::Permanent(_)));
    }

    #[test]
    fn hypervisor_errors_are_retried_only_when_transient_or_a_conflict() {
        let cases = [
            (BackendError::Transient("lock timeout".into()), true),
            (BackendError::Conflict("changed meanwhile".into()), true),
            (BackendError::NotFound("gone".into()), false),
            (BackendError::AlreadyExists("taken".into()), false),
            (BackendError::AlreadyInState("running".into()), false),
            (BackendError::Permanent("refused".into()), false),
        ];
        for (e, transient) in cases {
            let message = e.message().to_string();
            match JobError::from(e) {
                JobError::Transient(m) => assert!(transient && m == message, "{m}"),
                JobError::Permanent(m) => assert!(!transient && m == message, "{m}"),
                JobError::Cancelled => panic!("a hypervisor error is never a cancel"),
            }
        }
    }
}
