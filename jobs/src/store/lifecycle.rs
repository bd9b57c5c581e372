//! A job's way through a worker: claim (conditional update with a lease), lease renewal, the
//! outcome written back (fenced by the lease), and the parent finalised once its children are done.
//! Claims and outcomes are written in batches, one transaction per batch.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{create::insert_jobs, event, insert_events, placeholders, sql, JobStore, StoreError};
use crate::{spec::Family, status::JobStatus, store::NewJob};

/// A job a worker now owns.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job.
    pub id: Uuid,
    /// Its kind (the serde tag of `JobSpec`).
    pub kind: String,
    /// Its arguments.
    pub payload: Json,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// Attempts it gets.
    pub max_attempts: i32,
    /// State saved by the previous run, for a continuation.
    pub checkpoint: Option<Json>,
    /// Its parent, for a child.
    pub parent_id: Option<Uuid>,
    /// Who created it (children inherit it).
    pub created_by: String,
    /// Its queue family.
    pub family: String,
    /// True when this run continues a parked job rather than starting an attempt.
    pub continuation: bool,
}

/// How a run ended, as the worker reports it.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Done.
    Succeeded {
        /// Optional result to keep on the job.
        result: Option<Json>,
    },
    /// Transient failure; run again at `at`.
    Retry {
        /// When the next attempt may start.
        at: DateTime<Utc>,
        /// What went wrong.
        error: String,
    },
    /// Permanent failure.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Transient failure with no attempt left.
    Dead {
        /// The last error.
        error: String,
    },
    /// Not done yet: continue at `at` with this state (no delivery is held while waiting).
    Park {
        /// When to continue.
        at: DateTime<Utc>,
        /// State the continuation receives.
        checkpoint: Json,
        /// What it is waiting for, for the timeline.
        note: Option<String>,
    },
    /// Children were created; the job finishes when they all have.
    WaitChildren,
    /// Stopped on request.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// The worker is shutting down: give the job back without counting the attempt.
    HandBack,
}

/// An outcome for one claimed job.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The job.
    pub job_id: Uuid,
    /// The attempt that ran.
    pub attempt: i32,
    /// How it ended.
    pub outcome: Outcome,
}

const CLAIM_COLUMNS: &str =
    "id, kind, payload, attempts, max_attempts, checkpoint, parent_id, created_by, family";

/// How early a delayed message may arrive and still be honoured (delay rounding, clock skew).
const EARLY_TOLERANCE_MS: i64 = 100;

impl JobStore {
    /// Claims the given jobs for `owner` until `lease_until`: fresh attempts of queued or retrying
    /// jobs that are due, and continuations of parked jobs that are due. Jobs that are not
    /// claimable (done, owned by another worker, not due) are left out of the result.
    pub async fn claim_batch(
        &self,
        owner: &str,
        ids: &[Uuid],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let due = now + chrono::Duration::milliseconds(EARLY_TOLERANCE_MS);
        let backend = self.db.get_database_backend();
        let id_values = || ids.iter().map(|id| Value::from(*id));
        let txn = self.db.begin().await?;

        let mut values: Vec<Value> = vec![owner.into(), lease_until.into(), now.into(), now.into()];
        values.extend(id_values());
        values.extend([false.into(), due.into()]);
        let fresh = txn
            .query_all(sql(
                backend,
                &format!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, \
                     lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?, \
                     next_run_at = NULL \
                     WHERE id IN ({}) AND cancel_requested = ? \
                     AND status IN ('queued', 'retrying') AND (next_run_at IS NULL OR next_run_at <= ?) \
                     RETURNING {CLAIM_COLUMNS}",
                    placeholders(ids.len())
                ),
                values,
            ))
            .await?;

        let mut values: Vec<Value> = vec![owner.into(), lease_until.into(), now.into()];
        values.extend(id_values());
        values.extend([false.into(), due.into()]);
        let continued = txn
            .query_all(sql(
                backend,
                &format!(
                    "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, updated_at = ?, \
                     next_run_at = NULL \
                     WHERE id IN ({}) AND cancel_requested = ? AND status = 'running' \
                     AND lease_owner IS NULL AND next_run_at IS NOT NULL AND next_run_at <= ? \
                     RETURNING {CLAIM_COLUMNS}",
                    placeholders(ids.len())
                ),
                values,
            ))
            .await?;

        let mut claimed = Vec::with_capacity(fresh.len() + continued.len());
        for row in &fresh {
            claimed.push(claimed_from_row(row, false)?);
        }
        for row in &continued {
            claimed.push(claimed_from_row(row, true)?);
        }
        let events = claimed
            .iter()
            .filter(|c| !c.continuation)
            .map(|c| event(c.id, now, JobStatus::Running.as_str(), c.attempt, None))
            .collect();
        insert_events(&txn, events).await?;
        txn.commit().await?;
        Ok(claimed)
    }

    /// Writes outcomes of jobs `owner` ran, in one transaction. Each write is fenced by the lease:
    /// a worker that lost its lease (another worker took the job over) changes nothing. Returns,
    /// in order, whether each outcome was applied.
    pub async fn complete_batch(
        &self,
        owner: &str,
        completions: &[Completion],
    ) -> Result<Vec<bool>, StoreError> {
        let now = Utc::now();
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let mut applied = Vec::with_capacity(completions.len());
        let mut events = Vec::new();
        for c in completions {
            let (set, mut values, status, message): (&str, Vec<Value>, JobStatus, Option<String>) =
                match &c.outcome {
                    Outcome::Succeeded { result } => (
                        "status = 'succeeded', result = ?, error = NULL, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![result.clone().into(), now.into()],
                        JobStatus::Succeeded,
                        None,
                    ),
                    Outcome::Retry { at, error } => (
                        "status = 'retrying', error = ?, next_run_at = ?, published = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![error.clone().into(), (*at).into(), false.into()],
                        JobStatus::Retrying,
                        Some(format!("{error}; next attempt at {}", at.to_rfc3339())),
                    ),
                    Outcome::Failed { error } => (
                        "status = 'failed', error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![error.clone().into(), now.into()],
                        JobStatus::Failed,
                        Some(error.clone()),
                    ),
                    Outcome::Dead { error } => (
                        "status = 'dead', error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![error.clone().into(), now.into()],
                        JobStatus::Dead,
                        Some(error.clone()),
                    ),
                    Outcome::Park { at, checkpoint, .. } => (
                        "checkpoint = ?, next_run_at = ?, published = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![checkpoint.clone().into(), (*at).into(), false.into()],
                        JobStatus::Running,
                        None,
                    ),
                    Outcome::WaitChildren => (
                        "next_run_at = NULL, lease_owner = NULL, lease_expires_at = NULL",
                        vec![],
                        JobStatus::Running,
                        None,
                    ),
                    Outcome::Cancelled { reason } => (
                        "status = 'cancelled', error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL",
                        vec![reason.clone().into(), now.into()],
                        JobStatus::Cancelled,
                        Some(reason.clone()),
                    ),
                    Outcome::HandBack => (
                        "status = 'retrying', attempts = attempts - 1, next_run_at = ?, \
                         published = ?, lease_owner = NULL, lease_expires_at = NULL",
                        vec![now.into(), false.into()],
                        JobStatus::Retrying,
                        Some("handed back by a worker shutting down".into()),
                    ),
                };
            values.extend([now.into(), c.job_id.into(), owner.into()]);
            let res = txn
                .execute(sql(
                    backend,
                    &format!(
                        "UPDATE jobs SET {set}, updated_at = ? \
                         WHERE id = ? AND lease_owner = ? AND status = 'running'"
                    ),
                    values,
                ))
                .await?;
            let ok = res.rows_affected() == 1;
            applied.push(ok);
            let parked = matches!(c.outcome, Outcome::Park { .. } | Outcome::WaitChildren);
            if ok && !parked {
                events.push(event(c.job_id, now, status.as_str(), c.attempt, message));
            }
            if ok && parked {
                // A cancel that arrived while the job was held could only ask it to stop; now
                // that nobody holds it, it is cancelled for real.
                let reason = "cancelled on request";
                let res = txn
                    .execute(sql(
                        backend,
                        "UPDATE jobs SET status = 'cancelled', error = ?, finished_at = ?, \
                         next_run_at = NULL, updated_at = ? WHERE id = ? AND status = 'running' \
                         AND lease_owner IS NULL AND cancel_requested = ?",
                        vec![
                            reason.into(),
                            now.into(),
                            now.into(),
                            c.job_id.into(),
                            true.into(),
                        ],
                    ))
                    .await?;
                if res.rows_affected() == 1 {
                    events.push(event(
                        c.job_id,
                        now,
                        JobStatus::Cancelled.as_str(),
                        c.attempt,
                        Some(reason.into()),
                    ));
                }
            }
        }
        insert_events(&txn, events).await?;
        txn.commit().await?;
        Ok(applied)
    }

    /// Extends the leases of every job `owner` holds. Returns the ids of those jobs whose
    /// cancellation was requested meanwhile.
    pub async fn renew_leases(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute(sql(
                backend,
                "UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND status = 'running'",
                vec![lease_until.into(), owner.into()],
            ))
            .await?;
        let rows = self
            .db
            .query_all(sql(
                backend,
                "SELECT id FROM jobs WHERE lease_owner = ? AND status = 'running' \
                 AND cancel_requested = ?",
                vec![owner.into(), true.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<Uuid>("", "id").map_err(StoreError::from))
            .collect()
    }

    /// Creates the children of a running parent, unless it already has children (a redelivered
    /// parent must not fan out twice). Returns every child of the parent that is waiting and not
    /// yet published, with its family, for the caller to publish; `None` when the parent's
    /// cancellation was requested (no child is created then).
    pub async fn create_children(
        &self,
        parent_id: Uuid,
        children: &[NewJob],
    ) -> Result<Option<Vec<(Family, Uuid)>>, StoreError> {
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let cancel_requested = txn
            .query_one(sql(
                backend,
                "SELECT cancel_requested FROM jobs WHERE id = ?",
                vec![parent_id.into()],
            ))
            .await?
            .map(|r| r.try_get::<bool>("", "cancel_requested"))
            .transpose()?
            .unwrap_or(true);
        if cancel_requested {
            return Ok(None);
        }
        let existing = txn
            .query_one(sql(
                backend,
                "SELECT COUNT(*) AS n FROM jobs WHERE parent_id = ?",
                vec![parent_id.into()],
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if existing == 0 {
            insert_jobs(&txn, children).await?;
        }
        let pending = txn
            .query_all(sql(
                backend,
                "SELECT id, family FROM jobs WHERE parent_id = ? AND published = ? \
                 AND status IN ('queued', 'retrying') ORDER BY id",
                vec![parent_id.into(), false.into()],
            ))
            .await?;
        txn.commit().await?;
        let mut out = Vec::with_capacity(pending.len());
        for r in &pending {
            let id: Uuid = r.try_get("", "id")?;
            let family: String = r.try_get("", "family")?;
            if let Some(f) = Family::parse(&family) {
                out.push((f, id));
            }
        }
        Ok(Some(out))
    }

    /// Finishes parents whose children have all finished: `succeeded` when every child
    /// succeeded, else `failed` naming how many failed. A parent still held by a worker, or with
    /// an unfinished child, is left alone; the update re-checks that condition itself, so two
    /// children finishing at once finish their parent exactly once.
    pub async fn finalize_parents(&self, parents: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let backend = self.db.get_database_backend();
        let mut finished = Vec::new();
        for parent in parents {
            let counts = self.child_counts(*parent).await?;
            let total: i64 = counts.iter().map(|(_, n)| n).sum();
            let unfinished: i64 = counts
                .iter()
                .filter(|(s, _)| !s.is_terminal())
                .map(|(_, n)| n)
                .sum();
            if total == 0 || unfinished > 0 {
                continue;
            }
            let failed: i64 = counts
                .iter()
                .filter(|(s, _)| matches!(s, JobStatus::Failed | JobStatus::Dead))
                .map(|(_, n)| n)
                .sum();
            let cancelled: i64 = counts
                .iter()
                .filter(|(s, _)| *s == JobStatus::Cancelled)
                .map(|(_, n)| n)
                .sum();
            let (status, error) = if failed + cancelled == 0 {
                (JobStatus::Succeeded, None)
            } else {
                (
                    JobStatus::Failed,
                    Some(format!(
                        "{failed} of {total} children failed{}",
                        if cancelled > 0 {
                            format!(", {cancelled} cancelled")
                        } else {
                            String::new()
                        }
                    )),
                )
            };
            let now = Utc::now();
            let txn = self.db.begin().await?;
            let res = txn
                .execute(sql(
                    backend,
                    "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ? \
                     WHERE id = ? AND status = 'running' AND lease_owner IS NULL \
                     AND next_run_at IS NULL AND NOT EXISTS (SELECT 1 FROM jobs c \
                     WHERE c.parent_id = ? AND c.status IN ('queued', 'running', 'retrying'))",
                    vec![
                        status.as_str().into(),
                        error.clone().into(),
                        now.into(),
                        now.into(),
                        (*parent).into(),
                        (*parent).into(),
                    ],
                ))
                .await?;
            if res.rows_affected() == 1 {
                let attempts = txn
                    .query_one(sql(
                        backend,
                        "SELECT attempts FROM jobs WHERE id = ?",
                        vec![(*parent).into()],
                    ))
                    .await?
                    .map(|r| r.try_get::<i32>("", "attempts"))
                    .transpose()?
                    .unwrap_or(0);
                insert_events(
                    &txn,
                    vec![event(*parent, now, status.as_str(), attempts, error)],
                )
                .await?;
                finished.push(*parent);
            }
            txn.commit().await?;
        }
        Ok(finished)
    }
}

fn claimed_from_row(row: &QueryResult, continuation: bool) -> Result<Claimed, StoreError> {
    Ok(Claimed {
        id: row.try_get("", "id")?,
        kind: row.try_get("", "kind")?,
        payload: row.try_get("", "payload")?,
        attempt: row.try_get("", "attempts")?,
        max_attempts: row.try_get("", "max_attempts")?,
        checkpoint: row.try_get("", "checkpoint")?,
        parent_id: row.try_get("", "parent_id")?,
        created_by: row.try_get("", "created_by")?,
        family: row.try_get("", "family")?,
        continuation,
    })
}
