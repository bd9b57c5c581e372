//! Reading jobs for the API: one job with its progress, timeline and a page of children, and
//! filtered lists. Progress of a parent is derived from its children on every read (one grouped
//! count over an index), so it is exact at every poll.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use labfleet_entities::job;

use super::{sql, JobStore, StoreError};
use crate::{
    spec::{JobKind, JobSpec},
    status::JobStatus,
};

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
    /// What it is doing now (set by its handler); none once it has finished.
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
    /// The class's newest job that has not finished, with its kind (one class operation at a
    /// time).
    pub async fn unfinished_job_of_class(
        &self,
        class_id: i64,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        let row = self
            .db
            .query_one(sql(
                self.db.get_database_backend(),
                &format!(
                    "SELECT id, kind FROM jobs WHERE class_id = ? AND status IN {} \
                     ORDER BY id DESC LIMIT 1",
                    JobStatus::UNFINISHED_SQL
                ),
                vec![class_id.into()],
            ))
            .await?;
        Ok(row
            .map(|r| Ok::<_, sea_orm::DbErr>((r.try_get("", "id")?, r.try_get("", "kind")?)))
            .transpose()?)
    }

    /// The class's newest job (deploy, resize or delete), if any.
    pub async fn latest_job_of_class(&self, class_id: i64) -> Result<Option<Uuid>, StoreError> {
        let row = self
            .db
            .query_one(sql(
                self.db.get_database_backend(),
                "SELECT id FROM jobs WHERE class_id = ? ORDER BY id DESC LIMIT 1",
                vec![class_id.into()],
            ))
            .await?;
        Ok(row.map(|r| r.try_get("", "id")).transpose()?)
    }

    /// The newest job of each of these classes, in one query (for listings).
    pub async fn latest_jobs_of_classes(
        &self,
        class_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Uuid>, StoreError> {
        if class_ids.is_empty() {
            return Ok(Default::default());
        }
        let values: Vec<sea_orm::Value> = class_ids.iter().map(|id| (*id).into()).collect();
        let rows = self
            .db
            .query_all(sql(
                self.db.get_database_backend(),
                &format!(
                    // Only parents carry a class, a few per class; ids grow with time (UUIDv7).
                    "SELECT class_id, id FROM jobs WHERE class_id IN ({}) ORDER BY id",
                    super::placeholders(class_ids.len())
                ),
                values,
            ))
            .await?;
        let mut newest = std::collections::HashMap::with_capacity(class_ids.len());
        for r in rows {
            newest.insert(r.try_get("", "class_id")?, r.try_get("", "id")?);
        }
        Ok(newest)
    }

    /// The specs of the unfinished jobs of one kind (say, every sync still to finish).
    pub async fn unfinished_of_kind(&self, kind: JobKind) -> Result<Vec<JobSpec>, StoreError> {
        let rows = self
            .db
            .query_all(sql(
                self.db.get_database_backend(),
                &format!(
                    "SELECT payload FROM jobs WHERE kind = ? AND status IN {}",
                    JobStatus::UNFINISHED_SQL
                ),
                vec![kind.as_str().into()],
            ))
            .await?;
        let mut specs = Vec::with_capacity(rows.len());
        for r in rows {
            let payload: serde_json::Value = r.try_get("", "payload")?;
            if let Ok(spec) = JobSpec::from_stored(kind.as_str(), payload) {
                specs.push(spec);
            }
        }
        Ok(specs)
    }

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

    /// One job with progress, timeline and a page of children, read in one statement: the row,
    /// its children's counts by status, its first 1,000 events and the page of children come
    /// back as one row (the three lists as JSON text), so the parts are from one snapshot and a
    /// poll costs one round trip.
    pub async fn get(
        &self,
        id: Uuid,
        children_limit: u64,
        children_offset: u64,
    ) -> Result<JobDetail, StoreError> {
        let backend = self.db.get_database_backend();
        let text = if backend == DatabaseBackend::Postgres {
            GET_POSTGRES
        } else {
            GET_SQLITE
        };
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let statement = Statement::from_sql_and_values(
            backend,
            text,
            [
                id.into(),
                clamp(children_limit).into(),
                clamp(children_offset).into(),
            ],
        );
        let row = self
            .db
            .query_one(statement)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let summary = SummaryRow::from_query_result(&row, "")?.into_summary();
        DetailRow::from_query_result(&row, "")?.into_detail(summary)
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

/// `GET /api/jobs/{id}` on PostgreSQL: `$1` the job, `$2`/`$3` the children page. The lists are
/// JSON arrays of arrays (positional, see `EventRow` and `ChildRow`), ordered inside the
/// aggregate; an empty list is NULL.
const GET_POSTGRES: &str =
    "SELECT j.id, j.kind, j.status, j.parent_id, j.attempts, j.max_attempts, \
 j.error, j.created_by, j.created_at, j.started_at, j.finished_at, j.step, j.payload, j.result, \
 (SELECT json_agg(json_build_array(c.status, c.n))::text \
  FROM (SELECT status, COUNT(*) AS n FROM jobs WHERE parent_id = $1 GROUP BY status) c) AS counts, \
 (SELECT json_agg(json_build_array(e.at, e.status, e.attempt, e.message) ORDER BY e.id)::text \
  FROM (SELECT id, at, status, attempt, message FROM job_events WHERE job_id = $1 \
        ORDER BY id LIMIT 1000) e) AS events, \
 (SELECT json_agg(json_build_array(c.id, c.kind, c.status, c.attempts, c.max_attempts, c.error, \
         c.created_by, c.created_at, c.started_at, c.finished_at, c.step) ORDER BY c.id)::text \
  FROM (SELECT id, kind, status, attempts, max_attempts, error, created_by, created_at, \
               started_at, finished_at, step \
        FROM jobs WHERE parent_id = $1 ORDER BY id LIMIT $2 OFFSET $3) c) AS children \
 FROM jobs j WHERE j.id = $1";

/// The same on SQLite (ids are 16-byte blobs there, so they travel as hex; timestamps are the
/// RFC 3339 text they were stored as). An empty list is `[]`.
const GET_SQLITE: &str = "SELECT j.id, j.kind, j.status, j.parent_id, j.attempts, j.max_attempts, \
 j.error, j.created_by, j.created_at, j.started_at, j.finished_at, j.step, j.payload, j.result, \
 (SELECT json_group_array(json_array(c.status, c.n)) \
  FROM (SELECT status, COUNT(*) AS n FROM jobs WHERE parent_id = ?1 GROUP BY status) c) AS counts, \
 (SELECT json_group_array(json_array(e.at, e.status, e.attempt, e.message) ORDER BY e.id) \
  FROM (SELECT id, at, status, attempt, message FROM job_events WHERE job_id = ?1 \
        ORDER BY id LIMIT 1000) e) AS events, \
 (SELECT json_group_array(json_array(hex(c.id), c.kind, c.status, c.attempts, c.max_attempts, \
         c.error, c.created_by, c.created_at, c.started_at, c.finished_at, c.step) ORDER BY c.id) \
  FROM (SELECT id, kind, status, attempts, max_attempts, error, created_by, created_at, \
               started_at, finished_at, step \
        FROM jobs WHERE parent_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3) c) AS children \
 FROM jobs j WHERE j.id = ?1";

/// The lists and bodies of the one row of `GET_POSTGRES` / `GET_SQLITE` (its summary columns
/// are read by `SummaryRow` from the same row).
#[derive(sea_orm::FromQueryResult)]
struct DetailRow {
    payload: serde_json::Value,
    result: Option<serde_json::Value>,
    counts: Option<String>,
    events: Option<String>,
    children: Option<String>,
}

/// One event: `[at, status, attempt, message]`.
#[derive(Deserialize)]
struct EventRow(
    #[serde(deserialize_with = "de_time")] DateTime<Utc>,
    String,
    i32,
    Option<String>,
);

/// One child: `[id, kind, status, attempts, max_attempts, error, created_by, created_at,
/// started_at, finished_at, step]`.
#[derive(Deserialize)]
struct ChildRow(
    Uuid,
    String,
    String,
    i32,
    i32,
    Option<String>,
    String,
    #[serde(deserialize_with = "de_time")] DateTime<Utc>,
    #[serde(deserialize_with = "de_opt_time")] Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de_opt_time")] Option<DateTime<Utc>>,
    Option<String>,
);

impl DetailRow {
    fn into_detail(self, summary: JobSummary) -> Result<JobDetail, StoreError> {
        let counts: Vec<(String, i64)> = json_list(self.counts.as_deref(), "counts")?;
        let counts: Vec<(JobStatus, i64)> = counts
            .into_iter()
            .filter_map(|(status, n)| JobStatus::parse(&status).map(|st| (st, n)))
            .collect();
        // A job without children counts itself.
        let progress = if counts.is_empty() {
            Progress::from_counts(&[(summary.status, 1)])
        } else {
            Progress::from_counts(&counts)
        };
        let events = json_list::<EventRow>(self.events.as_deref(), "events")?
            .into_iter()
            .map(|EventRow(at, status, attempt, message)| JobEventView {
                at,
                status,
                attempt,
                message,
            })
            .collect();
        let children = json_list::<ChildRow>(self.children.as_deref(), "children")?
            .into_iter()
            .map(|c| {
                SummaryRow {
                    id: c.0,
                    kind: c.1,
                    status: c.2,
                    parent_id: Some(summary.id),
                    attempts: c.3,
                    max_attempts: c.4,
                    error: c.5,
                    created_by: c.6,
                    created_at: c.7,
                    started_at: c.8,
                    finished_at: c.9,
                    step: c.10,
                }
                .into_summary()
            })
            .collect();
        Ok(JobDetail {
            summary,
            args: self.payload,
            result: self.result,
            progress,
            events,
            children,
        })
    }
}

/// Decodes a JSON list built by the database (NULL: empty).
fn json_list<T: DeserializeOwned>(text: Option<&str>, what: &str) -> Result<Vec<T>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Db(DbErr::Type(format!("cannot decode the job's {what}: {e}")))
        }),
    }
}

/// A timestamp as the database renders it in JSON: RFC 3339 (PostgreSQL's `timestamptz`, and
/// what sqlx stores in SQLite), or the other text forms sqlx reads from SQLite.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = text.parse::<DateTime<Utc>>() {
        return Some(t);
    }
    ["%F %T%.f", "%FT%T%.f", "%F %R", "%FT%R"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <&'de str>::deserialize(d)?;
    parse_time(text).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{text}`")))
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match <Option<&'de str>>::deserialize(d)? {
        None => Ok(None),
        Some(text) => parse_time(text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp `{text}`"))),
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
