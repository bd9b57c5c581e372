//! Recovery sweeps over the job table, run by the scheduler: jobs whose worker vanished (expired
//! lease), jobs committed but never confirmed published, messages that should have arrived long
//! ago, parents whose last child finished while nobody was looking, and expired idempotency keys.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use uuid::Uuid;

use super::{event, insert_events, sql, update_in_id_order, JobStore, StoreError};
use crate::{spec::Family, status::JobStatus, store::create::IDEMPOTENCY_WINDOW_HOURS};

/// A job whose message must be published (again), and when it is due.
#[derive(Clone, Debug, PartialEq)]
pub struct Republish {
    /// The job.
    pub id: Uuid,
    /// Its queue family.
    pub family: Family,
    /// When it may run (`None`: now).
    pub due: Option<DateTime<Utc>>,
}

/// Jobs that wait for a message: queued or retrying, or parked until a continuation.
const WAITING_FOR_A_MESSAGE: &str = "(status IN ('queued', 'retrying') \
     OR (status = 'running' AND lease_owner IS NULL AND next_run_at IS NOT NULL))";

/// Most jobs one sweep step handles; the next sweep takes the rest.
const SWEEP_LIMIT: u64 = 2_000;

impl JobStore {
    /// Takes back jobs whose worker stopped renewing its lease: they become `retrying`, due now,
    /// and unpublished (the republish step sends them). The attempt they were in counts; a job
    /// out of attempts is `dead`.
    pub async fn recover_expired_leases(&self) -> Result<Vec<Uuid>, StoreError> {
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all(sql(
                backend,
                &update_in_id_order(
                    backend,
                    "status = 'running' AND lease_owner IS NOT NULL AND lease_expires_at < ?",
                    "status = CASE WHEN cancel_requested THEN 'cancelled' \
                     WHEN attempts >= max_attempts THEN 'dead' ELSE 'retrying' END, \
                     error = CASE WHEN cancel_requested THEN 'cancelled on request' \
                     ELSE 'worker lost while running the job (lease expired)' END, \
                     finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN ? ELSE NULL END, \
                     step = CASE WHEN cancel_requested OR attempts >= max_attempts THEN NULL ELSE step END, \
                     lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL, next_run_at = ?, \
                     published = ?, updated_at = ?",
                    "id, status, attempts, error",
                ),
                vec![now.into(), now.into(), now.into(), false.into(), now.into()],
            ))
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = r.try_get("", "id")?;
            let status: String = r.try_get("", "status")?;
            let attempts: i32 = r.try_get("", "attempts")?;
            let error: Option<String> = r.try_get("", "error")?;
            events.push(event(id, now, &status, attempts, error));
            ids.push(id);
        }
        insert_events(&txn, events).await?;
        txn.commit().await?;
        Ok(ids)
    }

    /// Jobs to publish again: committed but not confirmed published for `unpublished_grace`, and
    /// published jobs still waiting `stale_after` past their due time (their message was lost).
    /// Stale ones are touched so the next sweep does not pick them again at once.
    pub async fn due_for_republish(
        &self,
        unpublished_grace: std::time::Duration,
        stale_after: std::time::Duration,
    ) -> Result<Vec<Republish>, StoreError> {
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let grace_cutoff = now - chrono_duration(unpublished_grace);
        let stale_cutoff = now - chrono_duration(stale_after);
        let waiting = WAITING_FOR_A_MESSAGE;
        // Oldest first, and touched: a job that cannot be published now waits one grace period
        // before it is tried again, and does not hold back the others.
        let unpublished = self
            .db
            .query_all(sql(
                backend,
                &update_in_id_order(
                    backend,
                    &format!(
                        "id IN (SELECT id FROM jobs WHERE published = ? AND {waiting} \
                         AND updated_at < ? ORDER BY updated_at LIMIT {SWEEP_LIMIT})"
                    ),
                    "updated_at = ?",
                    "id, family, next_run_at",
                ),
                vec![false.into(), grace_cutoff.into(), now.into()],
            ))
            .await?;
        let stale = self
            .db
            .query_all(sql(
                backend,
                &update_in_id_order(
                    backend,
                    &format!(
                        "id IN (SELECT id FROM jobs WHERE published = ? AND {waiting} \
                         AND updated_at < ? AND (next_run_at IS NULL OR next_run_at < ?) \
                         ORDER BY id LIMIT {SWEEP_LIMIT})"
                    ),
                    "updated_at = ?",
                    "id, family, next_run_at",
                ),
                vec![
                    true.into(),
                    stale_cutoff.into(),
                    stale_cutoff.into(),
                    now.into(),
                ],
            ))
            .await?;
        unpublished
            .iter()
            .chain(stale.iter())
            .map(republish_from_row)
            .filter_map(Result::transpose)
            .collect()
    }

    /// Every job that is waiting for a message, whatever its published flag. The in-process
    /// queue loses its messages with the process, so start-up sends them all again.
    pub async fn all_waiting(&self) -> Result<Vec<Republish>, StoreError> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all(sql(
                backend,
                &format!(
                    "SELECT id, family, next_run_at FROM jobs WHERE {WAITING_FOR_A_MESSAGE} ORDER BY id"
                ),
                vec![],
            ))
            .await?;
        rows.iter()
            .map(republish_from_row)
            .filter_map(Result::transpose)
            .collect()
    }

    /// Parents waiting for children that have all finished (their last child's own check was
    /// missed, e.g. the worker died right after writing it).
    pub async fn parents_ready_to_finish(&self) -> Result<Vec<Uuid>, StoreError> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all(sql(
                backend,
                &format!(
                    "SELECT p.id FROM jobs p WHERE p.status = 'running' AND p.lease_owner IS NULL \
                     AND p.next_run_at IS NULL \
                     AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = p.id) \
                     AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = p.id \
                     AND c.status IN {unfinished}) LIMIT {SWEEP_LIMIT}",
                    unfinished = JobStatus::UNFINISHED_SQL
                ),
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<Uuid>("", "id").map_err(StoreError::from))
            .collect()
    }

    /// Marks jobs as published once the broker confirmed their messages.
    pub async fn mark_published(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let backend = self.db.get_database_backend();
        let mut values: Vec<sea_orm::Value> = ids.iter().map(|id| (*id).into()).collect();
        values.push(true.into());
        self.db
            .execute(sql(
                backend,
                &update_in_id_order(
                    backend,
                    &format!("id IN ({})", super::placeholders(ids.len())),
                    "published = ?",
                    "",
                ),
                values,
            ))
            .await?;
        Ok(())
    }

    /// Forgets idempotency keys older than their 24 h window.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        let backend = self.db.get_database_backend();
        let cutoff = Utc::now() - ChronoDuration::hours(IDEMPOTENCY_WINDOW_HOURS);
        let res = self
            .db
            .execute(sql(
                backend,
                "DELETE FROM idempotency_keys WHERE created_at < ?",
                vec![cutoff.into()],
            ))
            .await?;
        Ok(res.rows_affected())
    }
}

fn chrono_duration(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

fn republish_from_row(r: &QueryResult) -> Result<Option<Republish>, StoreError> {
    let id: Uuid = r.try_get("", "id")?;
    let family: String = r.try_get("", "family")?;
    let due: Option<DateTime<Utc>> = r.try_get("", "next_run_at")?;
    Ok(Family::parse(&family).map(|family| Republish { id, family, due }))
}
