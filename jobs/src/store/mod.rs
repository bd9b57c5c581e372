//! The job store: every read and write of `jobs` and `job_events`. The database row is the truth
//! about a job; every status change is a conditional update (so a stale worker or a duplicate
//! message cannot undo another's work) and is recorded as an event in the same transaction.

mod control;
mod create;
mod lifecycle;
mod query;
mod recovery;

use chrono::{DateTime, Utc};
pub(crate) use labfleet_db::{placeholders, sql};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait};
use uuid::Uuid;

use labfleet_entities::job_event;

pub use control::{CancelOutcome, RetryOutcome};
pub use create::{CreateOutcome, IdempotencyClaim, NewJob, TxnFuture};
pub use lifecycle::{Claimed, Completion, HeldLease, Outcome};
pub use query::{JobDetail, JobEventView, JobFilter, JobSummary, Progress};
pub use recovery::Republish;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the query failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// No job has that id.
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// The job's state does not allow the operation.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// True when the database itself is unreachable (the API answers 503, workers wait).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => labfleet_db::is_connection_error(e),
            _ => false,
        }
    }
}

/// Access to jobs. Cheap to clone (it shares the pool).
#[derive(Clone)]
pub struct JobStore {
    db: DatabaseConnection,
}

impl JobStore {
    /// A store on an open, migrated database.
    pub fn new(db: DatabaseConnection) -> Self {
        JobStore { db }
    }

    /// The underlying connection pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs a trivial query (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::from)
    }
}

/// A write to many rows of `jobs` that locks them in id order before it changes any: the rows
/// `filter` selects are locked in id order (on PostgreSQL `FOR NO KEY UPDATE`, the lock an UPDATE
/// itself takes), then each gets `set`.
/// Every multi-row write locks that way, so two of them (a lease renewal and a batch of
/// completions, say) that share rows wait for each other instead of deadlocking; a wait ends
/// with the row re-read, and rows that no longer match `filter` are left out. The values of
/// `filter` come first, then those of `set`. `returning` lists columns, or is empty.
pub(crate) fn update_in_id_order(
    backend: DatabaseBackend,
    filter: &str,
    set: &str,
    returning: &str,
) -> String {
    // SQLite has one writer at a time: it needs no row locks, and has none.
    let lock = if backend == DatabaseBackend::Postgres {
        " FOR NO KEY UPDATE"
    } else {
        ""
    };
    let returning = if returning.is_empty() {
        String::new()
    } else {
        format!(" RETURNING {returning}")
    };
    format!(
        "WITH target AS (SELECT id FROM jobs WHERE {filter} ORDER BY id{lock}) \
         UPDATE jobs SET {set} WHERE id IN (SELECT id FROM target){returning}"
    )
}

/// A timeline entry to write.
pub(crate) fn event(
    job_id: Uuid,
    at: DateTime<Utc>,
    status: &str,
    attempt: i32,
    message: Option<String>,
) -> job_event::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    job_event::ActiveModel {
        id: NotSet,
        job_id: Set(job_id),
        at: Set(at),
        status: Set(status.to_string()),
        attempt: Set(attempt),
        message: Set(message),
    }
}

/// Writes timeline entries in one statement.
pub(crate) async fn insert_events<C: ConnectionTrait>(
    conn: &C,
    events: Vec<job_event::ActiveModel>,
) -> Result<(), DbErr> {
    for chunk in events.chunks(1_000) {
        job_event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}
