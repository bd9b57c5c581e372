//! Creating jobs: rows and their first event in one transaction, optionally bound to a caller's
//! `Idempotency-Key` (the same key returns the same job for 24 h; another body with it conflicts).

use chrono::{Duration as ChronoDuration, Utc};
use std::{future::Future, pin::Pin};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};
use uuid::Uuid;

use labfleet_entities::{idempotency_key, job};

use super::{event, insert_events, JobStore, StoreError};
use crate::{
    spec::{Family, JobSpec},
    status::JobStatus,
};

/// The future a [`JobStore::create_with`] builder returns: work on the open transaction.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 't>>;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_HOURS: i64 = 24;

/// A job to create.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// What to do.
    pub spec: JobSpec,
    /// The parent job, for a child.
    pub parent_id: Option<Uuid>,
    /// Who asked (a user name; used for idempotency and ownership).
    pub created_by: String,
    /// Attempts it gets.
    pub max_attempts: u32,
    /// The class it works for (a class deployment's parent job), for `GET /api/jobs?class=`.
    pub class_id: Option<i64>,
}

/// An `Idempotency-Key` sent with a request: the caller, the key, and a hash of the request body.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    /// Who sent it (keys are per caller).
    pub caller: String,
    /// The header's value.
    pub key: String,
    /// Hash of the request, to tell a replay from a different request with the same key.
    pub request_hash: String,
}

/// What `create_idempotent` did.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    /// A new job was created.
    Created(Uuid),
    /// The same request was sent with this key before: here is its job.
    Replayed(Uuid),
    /// The key was used before with a different request.
    KeyConflict,
}

impl JobStore {
    /// Creates jobs (rows and `queued` events) in one transaction and returns their ids in order.
    /// The caller publishes them after the commit.
    pub async fn create(&self, jobs: &[NewJob]) -> Result<Vec<Uuid>, StoreError> {
        let txn = self.db.begin().await?;
        let ids = insert_jobs(&txn, jobs).await?;
        txn.commit().await?;
        Ok(ids)
    }

    /// Creates one job unless the caller's idempotency key already names one.
    pub async fn create_idempotent(
        &self,
        new: &NewJob,
        claim: &IdempotencyClaim,
    ) -> Result<CreateOutcome, StoreError> {
        let new = new.clone();
        self.create_with(Some(claim), move |_| Box::pin(async move { Ok(new) }))
            .await
    }

    /// Creates one job together with rows of the caller's own: `build` runs first inside the
    /// job's transaction (inserting, say, a class) and returns the job to create, so the rows and
    /// the job commit or vanish together. With an idempotency key already used by the caller,
    /// `build` does not run and the earlier job is returned.
    pub async fn create_with<F>(
        &self,
        claim: Option<&IdempotencyClaim>,
        build: F,
    ) -> Result<CreateOutcome, StoreError>
    where
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> TxnFuture<'t, NewJob>,
    {
        Ok(self.create_with_family(claim, build).await?.0)
    }

    /// [`JobStore::create_with`], also saying the family a created job travels on.
    pub(crate) async fn create_with_family<F>(
        &self,
        claim: Option<&IdempotencyClaim>,
        build: F,
    ) -> Result<(CreateOutcome, Option<Family>), StoreError>
    where
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> TxnFuture<'t, NewJob>,
    {
        if let Some(claim) = claim {
            if let Some(found) = self.find_idempotent(claim).await? {
                return Ok((found, None));
            }
        }
        let txn = self.db.begin().await?;
        let new = build(&txn).await?;
        let family = new.spec.family();
        let ids = insert_jobs(&txn, std::slice::from_ref(&new)).await?;
        let job_id = ids[0];
        let Some(claim) = claim else {
            txn.commit().await?;
            return Ok((CreateOutcome::Created(job_id), Some(family)));
        };
        let now = Utc::now();
        // An expired key of the same caller is replaced.
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Caller.eq(&claim.caller))
            .filter(idempotency_key::Column::Key.eq(&claim.key))
            .filter(
                idempotency_key::Column::CreatedAt
                    .lt(now - ChronoDuration::hours(IDEMPOTENCY_WINDOW_HOURS)),
            )
            .exec(&txn)
            .await?;
        let inserted = idempotency_key::Entity::insert(idempotency_key::ActiveModel {
            caller: Set(claim.caller.clone()),
            key: Set(claim.key.clone()),
            request_hash: Set(claim.request_hash.clone()),
            job_id: Set(job_id),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await;
        match inserted {
            Ok(_) => {
                txn.commit().await?;
                Ok((CreateOutcome::Created(job_id), Some(family)))
            }
            Err(_) => {
                // A concurrent request with the same key won the race: use its job.
                txn.rollback().await?;
                let found = self
                    .find_idempotent(claim)
                    .await?
                    .ok_or_else(|| StoreError::Conflict("idempotency key race".into()))?;
                Ok((found, None))
            }
        }
    }

    /// What the caller's key already names within the window: the job of the same request, a
    /// conflict for another request, or nothing.
    pub async fn find_idempotent(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<Option<CreateOutcome>, StoreError> {
        let cutoff = Utc::now() - ChronoDuration::hours(IDEMPOTENCY_WINDOW_HOURS);
        let found = idempotency_key::Entity::find()
            .filter(idempotency_key::Column::Caller.eq(&claim.caller))
            .filter(idempotency_key::Column::Key.eq(&claim.key))
            .filter(idempotency_key::Column::CreatedAt.gte(cutoff))
            .one(&self.db)
            .await?;
        Ok(found.map(|row| {
            if row.request_hash == claim.request_hash {
                CreateOutcome::Replayed(row.job_id)
            } else {
                CreateOutcome::KeyConflict
            }
        }))
    }
}

/// Inserts jobs and their `queued` events on an open connection or transaction.
pub(crate) async fn insert_jobs<C: ConnectionTrait>(
    conn: &C,
    jobs: &[NewJob],
) -> Result<Vec<Uuid>, StoreError> {
    let now = Utc::now();
    let mut ids = Vec::with_capacity(jobs.len());
    let mut rows = Vec::with_capacity(jobs.len());
    let mut events = Vec::with_capacity(jobs.len());
    for new in jobs {
        let id = Uuid::now_v7();
        ids.push(id);
        rows.push(job::ActiveModel {
            id: Set(id),
            kind: Set(new.spec.kind().as_str().to_string()),
            family: Set(new.spec.family().as_str().to_string()),
            payload: Set(new.spec.args_json()),
            status: Set(JobStatus::Queued.as_str().to_string()),
            parent_id: Set(new.parent_id),
            created_by: Set(new.created_by.clone()),
            attempts: Set(0),
            max_attempts: Set(new.max_attempts.max(1) as i32),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            lease_token: Set(None),
            next_run_at: Set(None),
            published: Set(false),
            cancel_requested: Set(false),
            error: Set(None),
            checkpoint: Set(None),
            result: Set(None),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
            class_id: Set(new.class_id),
            step: Set(None),
        });
        events.push(event(id, now, JobStatus::Queued.as_str(), 0, None));
    }
    // 23 columns a row: 400 rows stay far below SQLite's bound-parameter limit.
    for chunk in rows.chunks(400) {
        job::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await?;
    }
    insert_events(conn, events).await?;
    Ok(ids)
}
