//! A job's way through a worker: claim (conditional update with a lease), lease renewal, the
//! outcome written back (fenced by the lease), and the parent finalised once its children are done.
//! Claims and outcomes are written in batches, one transaction per batch.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    create::insert_jobs, event, insert_events, placeholders, query::child_counts_on, sql,
    update_in_id_order, JobStore, StoreError,
};
use crate::{
    spec::{Family, InvalidJob, JobSpec},
    status::JobStatus,
    store::NewJob,
};

/// A job a worker now owns.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job.
    pub id: Uuid,
    /// What to run, decoded from the stored kind and arguments, or why it cannot be.
    pub spec: Result<JobSpec, InvalidJob>,
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
    /// Its queue family (retries and hand-backs are published there).
    pub family: Family,
    /// True when this run continues a parked job rather than starting an attempt.
    pub continuation: bool,
    /// Identifies this claim: only the run holding it may write the outcome.
    pub lease_token: Uuid,
}

impl Claimed {
    /// The kind's name, for logs and metrics (`unknown` for a kind this build does not know).
    pub fn kind_name(&self) -> &'static str {
        match &self.spec {
            Ok(spec) => spec.kind().as_str(),
            Err(InvalidJob::BadArguments { kind, .. }) => kind.as_str(),
            Err(InvalidJob::UnknownKind(_)) => "unknown",
        }
    }
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

/// A claim a worker still holds after renewing its leases.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldLease {
    /// The job.
    pub job_id: Uuid,
    /// The claim.
    pub lease_token: Option<Uuid>,
    /// A user asked the job to stop.
    pub cancel_requested: bool,
}

/// An outcome for one claimed job.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The job.
    pub job_id: Uuid,
    /// The claim the run held.
    pub lease_token: Uuid,
    /// The attempt that ran.
    pub attempt: i32,
    /// How it ended.
    pub outcome: Outcome,
}

const CLAIM_COLUMNS: &str =
    "id, kind, payload, attempts, max_attempts, checkpoint, parent_id, created_by, family";

const CANCELLED_ON_REQUEST: &str = "cancelled on request";

/// The event of a cancelled parent whose children all succeeded all the same.
const CANCEL_TOO_LATE: &str = "every child finished before the cancel could stop it";

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
        let in_ids = placeholders(ids.len());
        let id_values = || ids.iter().map(|id| Value::from(*id));
        // One token for this claim: a later claim of the same job (even by this process) gets
        // another, so only the current run can write the outcome.
        let token = Uuid::new_v4();
        let txn = self.db.begin().await?;
        // The statements below change different subsets of these rows; taking every row's lock
        // up front, in id order, keeps the whole transaction in the one lock order every
        // multi-row write follows (see `update_in_id_order`).
        if backend == sea_orm::DatabaseBackend::Postgres && ids.len() > 1 {
            txn.execute(sql(
                backend,
                &format!(
                    "SELECT id FROM jobs WHERE id IN ({in_ids}) ORDER BY id FOR NO KEY UPDATE"
                ),
                id_values().collect(),
            ))
            .await?;
        }

        // Jobs whose cancellation was requested while nobody held them end here, instead of
        // being refused by every claim.
        let mut values: Vec<Value> = vec![CANCELLED_ON_REQUEST.into(), now.into(), now.into()];
        values.extend(id_values());
        values.push(true.into());
        let cancelled = txn
            .query_all(sql(
                backend,
                &format!(
                    "UPDATE jobs SET status = 'cancelled', step = NULL, error = ?, finished_at = ?, updated_at = ?, \
                     next_run_at = NULL WHERE id IN ({in_ids}) AND cancel_requested = ? \
                     AND (status IN ('queued', 'retrying') OR (status = 'running' AND lease_owner IS NULL)) \
                     RETURNING id, attempts"
                ),
                values,
            ))
            .await?;
        let mut events = Vec::new();
        for r in &cancelled {
            let id: Uuid = r.try_get("", "id")?;
            let attempt: i32 = r.try_get("", "attempts")?;
            let msg = Some(CANCELLED_ON_REQUEST.to_string());
            events.push(event(id, now, JobStatus::Cancelled.as_str(), attempt, msg));
        }

        let mut values: Vec<Value> = vec![
            owner.into(),
            lease_until.into(),
            token.into(),
            now.into(),
            now.into(),
        ];
        values.extend(id_values());
        values.extend([false.into(), due.into()]);
        let fresh = txn
            .query_all(sql(
                backend,
                &format!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, \
                     lease_expires_at = ?, lease_token = ?, started_at = COALESCE(started_at, ?), \
                     updated_at = ?, next_run_at = NULL \
                     WHERE id IN ({in_ids}) AND cancel_requested = ? \
                     AND status IN ('queued', 'retrying') AND (next_run_at IS NULL OR next_run_at <= ?) \
                     RETURNING {CLAIM_COLUMNS}"
                ),
                values,
            ))
            .await?;

        let mut values: Vec<Value> =
            vec![owner.into(), lease_until.into(), token.into(), now.into()];
        values.extend(id_values());
        values.extend([false.into(), due.into()]);
        let continued = txn
            .query_all(sql(
                backend,
                &format!(
                    "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, lease_token = ?, \
                     updated_at = ?, next_run_at = NULL \
                     WHERE id IN ({in_ids}) AND cancel_requested = ? AND status = 'running' \
                     AND lease_owner IS NULL AND next_run_at IS NOT NULL AND next_run_at <= ? \
                     RETURNING {CLAIM_COLUMNS}"
                ),
                values,
            ))
            .await?;

        let mut claimed = Vec::with_capacity(fresh.len() + continued.len());
        for row in &fresh {
            claimed.push(claimed_from_row(row, false, token)?);
        }
        for row in &continued {
            claimed.push(claimed_from_row(row, true, token)?);
        }
        events.extend(
            claimed
                .iter()
                .filter(|c| !c.continuation)
                .map(|c| event(c.id, now, JobStatus::Running.as_str(), c.attempt, None)),
        );
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
        // Rows are locked in id order in every batch, so concurrent batches cannot deadlock.
        let mut order: Vec<usize> = (0..completions.len()).collect();
        order.sort_by_key(|i| completions[*i].job_id);
        let txn = self.db.begin().await?;
        let mut applied = vec![false; completions.len()];
        let mut events = Vec::new();
        for i in order {
            let c = &completions[i];
            let (set, mut values, status, message): (&str, Vec<Value>, JobStatus, Option<String>) =
                match &c.outcome {
                    Outcome::Succeeded { result } => (
                        "status = 'succeeded', step = NULL, result = ?, error = NULL, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![result.clone().into(), now.into()],
                        JobStatus::Succeeded,
                        None,
                    ),
                    Outcome::Retry { at, error } => (
                        "status = 'retrying', error = ?, next_run_at = ?, published = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![error.clone().into(), (*at).into(), false.into()],
                        JobStatus::Retrying,
                        Some(format!("{error}; next attempt at {}", at.to_rfc3339())),
                    ),
                    Outcome::Failed { error } => (
                        "status = 'failed', step = NULL, error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![error.clone().into(), now.into()],
                        JobStatus::Failed,
                        Some(error.clone()),
                    ),
                    Outcome::Dead { error } => (
                        "status = 'dead', step = NULL, error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![error.clone().into(), now.into()],
                        JobStatus::Dead,
                        Some(error.clone()),
                    ),
                    Outcome::Park { at, checkpoint, .. } => (
                        "checkpoint = ?, next_run_at = ?, published = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![checkpoint.clone().into(), (*at).into(), false.into()],
                        JobStatus::Running,
                        None,
                    ),
                    Outcome::WaitChildren => (
                        "next_run_at = NULL, lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![],
                        JobStatus::Running,
                        None,
                    ),
                    Outcome::Cancelled { reason } => (
                        "status = 'cancelled', step = NULL, error = ?, finished_at = ?, \
                         lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![reason.clone().into(), now.into()],
                        JobStatus::Cancelled,
                        Some(reason.clone()),
                    ),
                    Outcome::HandBack => (
                        "status = 'retrying', attempts = attempts - 1, next_run_at = ?, \
                         published = ?, lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL",
                        vec![now.into(), false.into()],
                        JobStatus::Retrying,
                        Some("handed back by a worker shutting down".into()),
                    ),
                };
            values.extend([
                now.into(),
                c.job_id.into(),
                owner.into(),
                c.lease_token.into(),
            ]);
            let res = txn
                .execute(sql(
                    backend,
                    &format!(
                        "UPDATE jobs SET {set}, updated_at = ? WHERE id = ? AND lease_owner = ? \
                         AND lease_token = ? AND status = 'running'"
                    ),
                    values,
                ))
                .await?;
            let ok = res.rows_affected() == 1;
            applied[i] = ok;
            let parked = matches!(c.outcome, Outcome::Park { .. } | Outcome::WaitChildren);
            if ok && !parked {
                events.push(event(c.job_id, now, status.as_str(), c.attempt, message));
            }
            let still_waiting =
                parked || matches!(c.outcome, Outcome::Retry { .. } | Outcome::HandBack);
            if ok && still_waiting {
                // A cancel that arrived while the job was held could only ask it to stop; now
                // that nobody holds it, it is cancelled for real.
                let reason = CANCELLED_ON_REQUEST;
                let res = txn
                    .execute(sql(
                        backend,
                        "UPDATE jobs SET status = 'cancelled', step = NULL, error = ?, finished_at = ?, \
                         next_run_at = NULL, updated_at = ? WHERE id = ? \
                         AND status IN ('running', 'retrying') \
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

    /// Extends the leases of every job `owner` holds and reports, per held claim, whether its
    /// cancellation was requested. A claim missing from the report was lost (the job was taken
    /// back), and its run should stop.
    pub async fn renew_leases(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<HeldLease>, StoreError> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all(sql(
                backend,
                &update_in_id_order(
                    backend,
                    "lease_owner = ? AND status = 'running'",
                    "lease_expires_at = ?",
                    "id, lease_token, cancel_requested",
                ),
                vec![owner.into(), lease_until.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldLease {
                    job_id: r.try_get("", "id")?,
                    lease_token: r.try_get("", "lease_token")?,
                    cancel_requested: r.try_get("", "cancel_requested")?,
                })
            })
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
                if backend == sea_orm::DatabaseBackend::Postgres {
                    // Holds off a concurrent cancel until the children exist (it then sees them).
                    "SELECT cancel_requested FROM jobs WHERE id = ? FOR UPDATE"
                } else {
                    // SQLite has one writer at a time; a cancel committed after this read makes
                    // the insert fail with a busy snapshot, and the job is retried.
                    "SELECT cancel_requested FROM jobs WHERE id = ?"
                },
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

    /// Records what a running job is doing now. Fenced by the claim, so a run whose claim was
    /// taken over cannot overwrite its successor's step; returns whether the step was written.
    pub async fn set_step(
        &self,
        id: Uuid,
        lease_token: Uuid,
        step: &str,
    ) -> Result<bool, StoreError> {
        let step: String = step.chars().take(255).collect();
        let done = self
            .db
            .execute(sql(
                self.db.get_database_backend(),
                "UPDATE jobs SET step = ? WHERE id = ? AND lease_token = ?",
                vec![step.into(), id.into(), lease_token.into()],
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Finishes parents whose children have all finished: `succeeded` when every child
    /// succeeded, else `failed` naming how many failed. A parent cancelled while its children
    /// ran becomes `succeeded` when every child succeeded after all. A parent still held by a worker, or with
    /// an unfinished child, is left alone; the update re-checks that condition itself, so two
    /// children finishing at once finish their parent exactly once.
    pub async fn finalize_parents(&self, parents: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let backend = self.db.get_database_backend();
        let mut finished = Vec::new();
        for parent in parents {
            let now = Utc::now();
            let txn = self.db.begin().await?;
            // The outcome is decided inside the update, from the children as they are then.
            let row = txn
                .query_one(sql(
                    backend,
                    &format!(
                        "UPDATE jobs SET status = CASE WHEN EXISTS (SELECT 1 FROM jobs c \
                         WHERE c.parent_id = ? AND c.status IN ('failed', 'dead', 'cancelled')) \
                         THEN 'failed' ELSE 'succeeded' END, step = NULL, finished_at = ?, \
                         updated_at = ? WHERE id = ? AND status = 'running' \
                         AND lease_owner IS NULL AND next_run_at IS NULL \
                         AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = ?) \
                         AND NOT EXISTS (SELECT 1 FROM jobs c \
                         WHERE c.parent_id = ? AND c.status IN {}) \
                         RETURNING status, attempts",
                        JobStatus::UNFINISHED_SQL
                    ),
                    vec![
                        (*parent).into(),
                        now.into(),
                        now.into(),
                        (*parent).into(),
                        (*parent).into(),
                        (*parent).into(),
                    ],
                ))
                .await?;
            if let Some(row) = row {
                let status: String = row.try_get("", "status")?;
                let attempts: i32 = row.try_get("", "attempts")?;
                let error = if status == JobStatus::Failed.as_str() {
                    let counts = child_counts_on(&txn, *parent).await?;
                    let n = |f: fn(&JobStatus) -> bool| -> i64 {
                        counts.iter().filter(|(s, _)| f(s)).map(|(_, n)| n).sum()
                    };
                    let total = n(|_| true);
                    let failed = n(|s| matches!(s, JobStatus::Failed | JobStatus::Dead));
                    let cancelled = n(|s| *s == JobStatus::Cancelled);
                    let mut msg = format!("{failed} of {total} children failed");
                    if cancelled > 0 {
                        msg.push_str(&format!(", {cancelled} cancelled"));
                    }
                    txn.execute(sql(
                        backend,
                        "UPDATE jobs SET error = ? WHERE id = ?",
                        vec![msg.clone().into(), (*parent).into()],
                    ))
                    .await?;
                    Some(msg)
                } else {
                    None
                };
                insert_events(&txn, vec![event(*parent, now, &status, attempts, error)]).await?;
                finished.push(*parent);
            } else if let Some(row) = txn
                .query_one(sql(
                    backend,
                    // Cancelled while its children ran, and every one of them finished its work
                    // anyway (a clone done before the cancel could stop it): nothing was
                    // cancelled, so the parent says what happened.
                    "UPDATE jobs SET status = 'succeeded', error = NULL, step = NULL, \
                     finished_at = ?, updated_at = ? WHERE id = ? AND status = 'cancelled' \
                     AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = ?) \
                     AND NOT EXISTS (SELECT 1 FROM jobs c \
                     WHERE c.parent_id = ? AND c.status <> 'succeeded') \
                     RETURNING attempts",
                    vec![
                        now.into(),
                        now.into(),
                        (*parent).into(),
                        (*parent).into(),
                        (*parent).into(),
                    ],
                ))
                .await?
            {
                let attempts: i32 = row.try_get("", "attempts")?;
                let note = Some(CANCEL_TOO_LATE.to_string());
                let done = JobStatus::Succeeded.as_str();
                insert_events(&txn, vec![event(*parent, now, done, attempts, note)]).await?;
                finished.push(*parent);
            }
            txn.commit().await?;
        }
        Ok(finished)
    }
}

fn claimed_from_row(
    row: &QueryResult,
    continuation: bool,
    lease_token: Uuid,
) -> Result<Claimed, StoreError> {
    let kind: String = row.try_get("", "kind")?;
    let payload: Json = row.try_get("", "payload")?;
    let spec = JobSpec::from_stored(&kind, payload);
    let stored_family: String = row.try_get("", "family")?;
    // The family was written from the spec; a row whose kind cannot be decoded only ever fails
    // (nothing is published for it), so a family it does not name is never used to route it.
    let family = match &spec {
        Ok(spec) => spec.family(),
        Err(_) => Family::parse(&stored_family).unwrap_or(Family::Diag),
    };
    Ok(Claimed {
        id: row.try_get("", "id")?,
        spec,
        attempt: row.try_get("", "attempts")?,
        max_attempts: row.try_get("", "max_attempts")?,
        checkpoint: row.try_get("", "checkpoint")?,
        parent_id: row.try_get("", "parent_id")?,
        created_by: row.try_get("", "created_by")?,
        family,
        continuation,
        lease_token,
    })
}
