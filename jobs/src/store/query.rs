//! Reading jobs for the API: one job with its progress, timeline and a page of children, and
//! filtered lists. Progress of a parent is derived from its children on every read (one grouped
//! count over an index), so it is exact at every poll.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use serde::Serialize;
use uuid::Uuid;

use labfleet_entities::{job, job_event};

use super::{sql, JobStore, StoreError};
use crate::status::JobStatus;

/// Counts of a job's work by state. For a job without children it describes the job itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// All units of work.
    pub total: i64,
    /// Finished successfully.
    pub succeeded: i64,
    /// Finished failed or dead.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Running now.
    pub running: i64,
    /// Waiting: queued or retrying.
    pub queued: i64,
    /// Finished share, 0–100.
    pub percent: f64,
}

impl Progress {
    fn from_counts(counts: &[(JobStatus, i64)]) -> Progress {
        let mut p = Progress::default();
        for (status, n) in counts {
            p.total += n;
            match status {
                JobStatus::Succeeded => p.succeeded += n,
                JobStatus::Failed | JobStatus::Dead => p.failed += n,
                JobStatus::Cancelled => p.cancelled += n,
                JobStatus::Running => p.running += n,
                JobStatus::Queued | JobStatus::Retrying => p.queued += n,
            }
        }
        if p.total > 0 {
            let done = (p.succeeded + p.failed + p.cancelled) as f64;
            p.percent = (done * 1000.0 / p.total as f64).round() / 10.0;
        }
        p
    }
}

/// A job as listed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobSummary {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its status.
    pub status: JobStatus,
    /// Its parent, for a child.
    pub parent_id: Option<Uuid>,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts it gets.
    pub max_attempts: i32,
    /// The last error, if any.
    pub error: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it is doing now (set by its handler).
    pub step: Option<String>,
}

/// One timeline entry.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobEventView {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The status entered.
    pub status: String,
    /// The attempt it belongs to.
    pub attempt: i32,
    /// Details (an error, the next attempt's time).
    pub message: Option<String>,
}

/// A job with everything `GET /api/jobs/{id}` shows.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    /// The job itself.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Its arguments.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// Its result, when it produced one.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Work counts (of its children, or of itself).
    pub progress: Progress,
    /// The timeline, oldest first.
    pub events: Vec<JobEventView>,
    /// One page of children.
    pub children: Vec<JobSummary>,
}

/// Filters of `GET /api/jobs`.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only children of this job.
    pub parent: Option<Uuid>,
    /// Only jobs created by this caller.
    pub created_by: Option<String>,
    /// Only a class's jobs: its deployments and their children.
    pub class_id: Option<i64>,
    /// Page size.
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

impl JobStore {
    /// Counts a parent's children by status.
    pub async fn child_counts(&self, parent: Uuid) -> Result<Vec<(JobStatus, i64)>, StoreError> {
        child_counts_on(&self.db, parent).await
    }

    /// One job's row.
    pub async fn get_row(&self, id: Uuid) -> Result<job::Model, StoreError> {
        job::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound(id))
    }

    /// One job with progress, timeline and a page of children.
    pub async fn get(
        &self,
        id: Uuid,
        children_limit: u64,
        children_offset: u64,
    ) -> Result<JobDetail, StoreError> {
        let row = self.get_row(id).await?;
        // The three reads are independent: run them at once on separate pooled connections.
        let events = async {
            job_event::Entity::find()
                .filter(job_event::Column::JobId.eq(id))
                .order_by_asc(job_event::Column::Id)
                .limit(1_000)
                .all(&self.db)
                .await
                .map_err(StoreError::from)
        };
        let children_filter = JobFilter {
            parent: Some(id),
            limit: children_limit,
            offset: children_offset,
            ..Default::default()
        };
        let children = self.list(&children_filter);
        let (counts, events, children) =
            futures::try_join!(self.child_counts(id), events, children)?;
        let progress = if counts.is_empty() {
            let status = JobStatus::parse(&row.status).unwrap_or(JobStatus::Queued);
            Progress::from_counts(&[(status, 1)])
        } else {
            Progress::from_counts(&counts)
        };
        let events = events
            .into_iter()
            .map(|e| JobEventView {
                at: e.at,
                status: e.status,
                attempt: e.attempt,
                message: e.message,
            })
            .collect();
        Ok(JobDetail {
            args: row.payload.clone(),
            result: row.result.clone(),
            summary: summary(row),
            progress,
            events,
            children,
        })
    }

    /// Jobs matching a filter; newest first, except children, which are listed in creation order.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        let mut q = job::Entity::find();
        if let Some(st) = filter.status {
            q = q.filter(job::Column::Status.eq(st.as_str()));
        }
        if let Some(kind) = &filter.kind {
            q = q.filter(job::Column::Kind.eq(kind.as_str()));
        }
        if let Some(owner) = &filter.created_by {
            q = q.filter(job::Column::CreatedBy.eq(owner.as_str()));
        }
        if let Some(class_id) = filter.class_id {
            // Only the parent carries the class; its children are found through it.
            let parents = job::Entity::find()
                .select_only()
                .column(job::Column::Id)
                .filter(job::Column::ClassId.eq(class_id))
                .into_query();
            q = q.filter(
                sea_orm::Condition::any()
                    .add(job::Column::ClassId.eq(class_id))
                    .add(job::Column::ParentId.in_subquery(parents)),
            );
        }
        q = match filter.parent {
            Some(parent) => q
                .filter(job::Column::ParentId.eq(parent))
                .order_by_asc(job::Column::Id),
            None => q.order_by_desc(job::Column::Id),
        };
        // Only the listed columns: arguments and results can be large and are not shown here.
        let rows = q
            .select_only()
            .columns([
                job::Column::Id,
                job::Column::Kind,
                job::Column::Status,
                job::Column::ParentId,
                job::Column::Attempts,
                job::Column::MaxAttempts,
                job::Column::Error,
                job::Column::CreatedBy,
                job::Column::CreatedAt,
                job::Column::StartedAt,
                job::Column::FinishedAt,
                job::Column::Step,
            ])
            .limit(filter.limit)
            .offset(filter.offset)
            .into_model::<SummaryRow>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(SummaryRow::into_summary).collect())
    }
}

/// The columns of a listed job.
#[derive(sea_orm::FromQueryResult)]
struct SummaryRow {
    id: Uuid,
    kind: String,
    status: String,
    parent_id: Option<Uuid>,
    attempts: i32,
    max_attempts: i32,
    error: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    step: Option<String>,
}

impl SummaryRow {
    fn into_summary(self) -> JobSummary {
        JobSummary {
            id: self.id,
            status: JobStatus::parse(&self.status).unwrap_or(JobStatus::Queued),
            kind: self.kind,
            parent_id: self.parent_id,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            error: self.error,
            created_by: self.created_by,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            step: self.step,
        }
    }
}

fn summary(row: job::Model) -> JobSummary {
    JobSummary {
        id: row.id,
        status: JobStatus::parse(&row.status).unwrap_or(JobStatus::Queued),
        kind: row.kind,
        parent_id: row.parent_id,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        error: row.error,
        created_by: row.created_by,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        step: row.step,
    }
}

/// Counts a parent's children by status, on a connection or inside a transaction.
pub(crate) async fn child_counts_on<C: ConnectionTrait>(
    conn: &C,
    parent: Uuid,
) -> Result<Vec<(JobStatus, i64)>, StoreError> {
    let rows = conn
        .query_all(sql(
            conn.get_database_backend(),
            "SELECT status, COUNT(*) AS n FROM jobs WHERE parent_id = ? GROUP BY status",
            vec![parent.into()],
        ))
        .await?;
    let mut counts = Vec::with_capacity(rows.len());
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        if let Some(st) = JobStatus::parse(&status) {
            counts.push((st, n));
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_dead_as_failed_and_retrying_as_queued() {
        let p = Progress::from_counts(&[
            (JobStatus::Succeeded, 2),
            (JobStatus::Dead, 1),
            (JobStatus::Retrying, 1),
        ]);
        assert_eq!((p.total, p.succeeded, p.failed, p.queued), (4, 2, 1, 1));
        assert_eq!(p.percent, 75.0);
    }
}
