//! What users do to jobs: cancel and retry. Cancel stops what has not started at once and asks
//! running work to stop; retry re-runs a finished job, or only the failed children of a parent.

use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionTrait};
use uuid::Uuid;

use super::{event, insert_events, sql, update_in_id_order, JobStore, StoreError};
use crate::{spec::Family, status::JobStatus};

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq)]
pub struct CancelOutcome {
    /// The job's status afterwards.
    pub status: JobStatus,
    /// Jobs (the job or its children) that are still running and were asked to stop.
    pub stop_requested: u64,
}

/// What `retry` did: the jobs to publish again, by family.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOutcome {
    /// Jobs put back in the queue.
    pub requeued: Vec<(Family, Uuid)>,
}

impl JobStore {
    /// Cancels a job. Queued, retrying and parked work is cancelled at once; work a worker is
    /// running gets `cancel_requested` and stops at its next check. Cancelling a parent does this
    /// for every unfinished child and marks the parent cancelled.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<CancelOutcome, StoreError> {
        let row = self.get_row(id).await?;
        let status = JobStatus::parse(&row.status).unwrap_or(JobStatus::Queued);
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "job {id} is already {status} and cannot be cancelled"
            )));
        }
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let mut events = Vec::new();
        let mut stop_requested = 0;
        // The job itself first: on PostgreSQL this waits for a fan-out in progress (it holds the
        // parent row), so the children statement below then sees every child it created.
        for target in [Target::Itself, Target::Children] {
            let scope = match target {
                Target::Children => "parent_id = ?",
                Target::Itself => "id = ?",
            };
            // First mark every unfinished job: a worker that lets go of one later (park,
            // retry, hand-back) then cancels it itself, whatever the interleaving.
            txn.execute(sql(
                backend,
                &update_in_id_order(
                    backend,
                    &format!("{scope} AND status IN {}", JobStatus::UNFINISHED_SQL),
                    "cancel_requested = ?, updated_at = ?",
                    "",
                ),
                vec![id.into(), true.into(), now.into()],
            ))
            .await?;
            // Nobody holds these: cancel them now.
            let cancelled = txn
                .query_all(sql(
                    backend,
                    &update_in_id_order(
                        backend,
                        &format!(
                            "{scope} AND (status IN ('queued', 'retrying') \
                             OR (status = 'running' AND lease_owner IS NULL))"
                        ),
                        "status = 'cancelled', step = NULL, error = ?, finished_at = ?, updated_at = ?",
                        "id, attempts",
                    ),
                    vec![id.into(), reason.into(), now.into(), now.into()],
                ))
                .await?;
            for r in &cancelled {
                let job: Uuid = r.try_get("", "id")?;
                let attempt: i32 = r.try_get("", "attempts")?;
                events.push(event(
                    job,
                    now,
                    JobStatus::Cancelled.as_str(),
                    attempt,
                    Some(reason.to_string()),
                ));
            }
            // A worker holds the rest: it stops at its next lease renewal.
            let held = txn
                .query_one(sql(
                    backend,
                    &format!(
                        "SELECT COUNT(*) AS n FROM jobs WHERE {scope} \
                         AND status = 'running' AND lease_owner IS NOT NULL"
                    ),
                    vec![id.into()],
                ))
                .await?
                .map(|r| r.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0);
            stop_requested += held as u64;
        }
        insert_events(&txn, events).await?;
        txn.commit().await?;
        let status = JobStatus::parse(&self.get_row(id).await?.status).unwrap_or(status);
        Ok(CancelOutcome {
            status,
            stop_requested,
        })
    }

    /// Retries a finished job. A job with children re-runs only its failed, dead and cancelled
    /// children and waits for them again; a job without children runs again from attempt 1.
    /// Finished ancestors of the job wait for their children again.
    pub async fn retry(&self, id: Uuid) -> Result<RetryOutcome, StoreError> {
        let row = self.get_row(id).await?;
        let status = JobStatus::parse(&row.status).unwrap_or(JobStatus::Queued);
        if !matches!(
            status,
            JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        ) {
            return Err(StoreError::Conflict(format!(
                "job {id} is {status}; only failed, dead or cancelled jobs can be retried"
            )));
        }
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let reset = "status = 'queued', attempts = 0, error = NULL, finished_at = NULL, \
                     next_run_at = NULL, published = ?, cancel_requested = ?, checkpoint = NULL, \
                     lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL, updated_at = ?";
        let children = txn
            .query_all(sql(
                backend,
                &update_in_id_order(
                    backend,
                    "parent_id = ? AND status IN ('failed', 'dead', 'cancelled')",
                    reset,
                    "id, family",
                ),
                vec![id.into(), false.into(), false.into(), now.into()],
            ))
            .await?;
        let mut requeued = Vec::new();
        let mut events = Vec::new();
        let retried = Some("retried on request".to_string());
        for r in &children {
            let child: Uuid = r.try_get("", "id")?;
            let family: String = r.try_get("", "family")?;
            events.push(event(child, now, "queued", 0, retried.clone()));
            if let Some(f) = Family::parse(&family) {
                requeued.push((f, child));
            }
        }
        let has_children = txn
            .query_one(sql(
                backend,
                "SELECT COUNT(*) AS n FROM jobs WHERE parent_id = ?",
                vec![id.into()],
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0)
            > 0;
        if has_children {
            // The parent waits for its children again (parked, no worker holds it).
            let res = txn
                .execute(sql(
                    backend,
                    "UPDATE jobs SET status = 'running', error = NULL, finished_at = NULL, \
                     cancel_requested = ?, next_run_at = NULL, lease_owner = NULL, \
                     lease_expires_at = NULL, lease_token = NULL, updated_at = ? \
                     WHERE id = ? AND status IN ('failed', 'dead', 'cancelled')",
                    vec![false.into(), now.into(), id.into()],
                ))
                .await?;
            if res.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "job {id} is being retried already"
                )));
            }
            events.push(event(id, now, "running", row.attempts, retried));
        } else {
            let res = txn.execute(sql(
                backend,
                &format!(
                    "UPDATE jobs SET {reset} WHERE id = ? AND status IN ('failed', 'dead', 'cancelled')"
                ),
                vec![false.into(), false.into(), now.into(), id.into()],
            ))
            .await?;
            if res.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "job {id} is being retried already"
                )));
            }
            events.push(event(id, now, "queued", 0, retried));
            if let Some(f) = Family::parse(&row.family) {
                requeued.push((f, id));
            }
        }
        // A finished parent of a retried child waits for its children again, so the child's new
        // outcome counts (otherwise the parent would stay failed while its child succeeds).
        let mut parent = row.parent_id;
        while let Some(pid) = parent {
            let reopened = txn
                .query_one(sql(
                    backend,
                    "UPDATE jobs SET status = 'running', error = NULL, finished_at = NULL, \
                     cancel_requested = ?, next_run_at = NULL, lease_owner = NULL, \
                     lease_expires_at = NULL, lease_token = NULL, updated_at = ? \
                     WHERE id = ? AND status IN ('failed', 'dead', 'cancelled') \
                     RETURNING parent_id, attempts",
                    vec![false.into(), now.into(), pid.into()],
                ))
                .await?;
            let Some(r) = reopened else { break };
            let attempts: i32 = r.try_get("", "attempts")?;
            events.push(event(
                pid,
                now,
                "running",
                attempts,
                Some(format!("reopened: child {id} retried on request")),
            ));
            parent = r.try_get("", "parent_id")?;
        }
        insert_events(&txn, events).await?;
        txn.commit().await?;
        Ok(RetryOutcome { requeued })
    }
}

#[derive(Clone, Copy)]
enum Target {
    Children,
    Itself,
}
