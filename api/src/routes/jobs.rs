//! `/api/jobs`: list, show (with progress, timeline and children), create a diagnostic job,
//! cancel, retry. Admins see every job; others only the jobs they created, and someone else's job
//! is a 404 (not a 403), so job ids do not leak. Cancel and retry: admins, and teachers on their
//! own jobs.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use labfleet_jobs::{
    store::{CreateOutcome, IdempotencyClaim, JobDetail, JobFilter, JobSummary, NewJob},
    JobSpec, JobStatus, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{page_offset, page_size, parse_json, parse_value, JobId, Query, Source},
    state::AppState,
};

/// Filters and paging of `GET /api/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only jobs in this status.
    status: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Only children of this job.
    parent: Option<String>,
    /// Only this class's jobs (its deployments and their per-VM children).
    #[param(minimum = 1)]
    class: Option<i64>,
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Rows to skip.
    #[param(maximum = 1000000000)]
    offset: Option<u64>,
}

/// A page of jobs.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobList {
    ok: bool,
    jobs: Vec<JobSummary>,
}

/// List jobs, newest first (non-admins: only their own).
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListParams),
    security(("bearer" = [])),
    responses((status = 200, body = JobList), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<JobList>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("unknown status `{s}`; expected one of queued, running, retrying, succeeded, failed, cancelled, dead"),
                )
            })
        })
        .transpose()?;
    let parent = params
        .parent
        .as_deref()
        .map(|p| {
            Uuid::parse_str(p)
                .map_err(|_| ApiError::bad_field("parent", format!("`{p}` is not a job id")))
        })
        .transpose()?;
    let filter = JobFilter {
        status,
        kind: params.kind,
        parent,
        created_by: (!caller.is_admin()).then(|| caller.name.clone()),
        class_id: params.class,
        limit: page_size(params.limit, "limit")?,
        offset: page_offset(params.offset, "offset")?,
    };
    let jobs = state.store.list(&filter).await?;
    Ok(Json(JobList { ok: true, jobs }))
}

/// Paging of a job's children.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShowParams {
    /// Children per page (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    children_limit: Option<u64>,
    /// Children to skip.
    #[param(maximum = 1000000000)]
    children_offset: Option<u64>,
}

/// A job with its progress.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobView {
    ok: bool,
    #[serde(flatten)]
    job: JobDetail,
}

/// Show one job: status, attempts, timestamps, error, progress, timeline, a page of children
/// (non-admins: only their own; another's job is not found).
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "Job id"), ShowParams),
    security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    JobId(id): JobId,
    Query(params): Query<ShowParams>,
) -> Result<Json<JobView>, ApiError> {
    let limit = page_size(params.children_limit, "children_limit")?;
    let job = state
        .store
        .get(
            id,
            limit,
            page_offset(params.children_offset, "children_offset")?,
        )
        .await?;
    if !caller.owns(&job.summary.created_by) {
        return Err(StoreError::NotFound(id).into());
    }
    Ok(Json(JobView { ok: true, job }))
}

/// Body of `POST /api/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateJob {
    /// The job kind; only the diagnostic `noop` is created this way.
    kind: String,
    /// The kind's arguments (for `noop`: duration_ms, fail_attempts, fail_permanently,
    /// continue_times, continue_after_ms, children, child, effect, family).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    args: Option<serde_json::Value>,
    /// Attempts the job gets (1–20; default from the settings).
    max_attempts: Option<u32>,
}

/// Answer to work-creating requests.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    ok: bool,
    /// The job doing the work.
    job_id: Uuid,
}

/// Create a diagnostic job (admin). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same job (24 h)")),
    security(("bearer" = [])),
    responses((status = 202, body = Accepted, headers(("Location" = String))),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: CreateJob = parse_json(&body)?;
    let spec = match req.kind.as_str() {
        "noop" => {
            let args: labfleet_jobs::NoopArgs =
                parse_value(req.args.unwrap_or_else(|| serde_json::json!({})), "args")?;
            args.validate()
                .map_err(|(field, msg)| ApiError::invalid(field, format!("{field}: {msg}")))?;
            JobSpec::Noop(args)
        }
        other => {
            return Err(ApiError::invalid(
                "kind",
                format!("kind `{other}` cannot be created here; expected `noop`"),
            ))
        }
    };
    let max_attempts = match req.max_attempts {
        None => state.settings.retry.max_attempts,
        Some(n @ 1..=20) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "max_attempts",
                format!("max_attempts must be between 1 and 20, got {n}"),
            ))
        }
    };
    let new = NewJob {
        spec,
        parent_id: None,
        created_by: caller.name.clone(),
        max_attempts,
        class_id: None,
    };
    let audit = AuditAs {
        source,
        action: "job.create",
        target: None,
        detail: json!({"kind": new.spec.kind()}),
    };
    submit(&state, &caller, &headers, &body, new, audit).await
}

/// What `submit` writes to the audit log when it creates the job (a replay writes nothing).
pub(crate) struct AuditAs<'a> {
    /// Where the request came from.
    pub source: Source,
    /// The action (`job.create`, `cluster.sync`).
    pub action: &'a str,
    /// The object acted on; `None`: the job created.
    pub target: Option<String>,
    /// Particulars; the job's id is added to an object.
    pub detail: serde_json::Value,
}

/// Stores `new` and publishes it, answering 202 + `Location`. With an `Idempotency-Key` the
/// job is created once per caller and key: a repeat with the same `request` (the bytes that
/// identify the request: body, and the path where it names the target) returns the same job,
/// one with another `request` is a 409. A created job is recorded in the audit log as `audit`.
pub(crate) async fn submit(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &[u8],
    new: NewJob,
    audit: AuditAs<'_>,
) -> Result<Response, ApiError> {
    let claim = idempotency_key(headers)?.map(|key| IdempotencyClaim {
        caller: caller.name.clone(),
        key,
        request_hash: hex::encode(Sha256::digest(request)),
    });
    let outcome = state
        .publisher
        .submit_with(claim.as_ref(), move |_| Box::pin(async move { Ok(new) }))
        .await?;
    let (job_id, created) = match outcome {
        CreateOutcome::Created(id) => (id, true),
        CreateOutcome::Replayed(id) => (id, false),
        CreateOutcome::KeyConflict => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            ))
        }
    };
    if created {
        let AuditAs {
            source,
            action,
            target,
            mut detail,
        } = audit;
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("job_id".into(), json!(job_id));
        }
        let target = target.unwrap_or_else(|| format!("job:{job_id}"));
        state.audit(caller, source, action, target, detail).await;
    }
    Ok(accepted(job_id))
}

/// A 202 with the job's `Location`.
pub(crate) fn accepted(job_id: Uuid) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/jobs/{job_id}"))],
        Json(Accepted { ok: true, job_id }),
    )
        .into_response()
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::bad_field(
                "Idempotency-Key",
                "Idempotency-Key must be 1–255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

/// Cancel and retry: admins on any job, teachers on their own (another's is not found),
/// students never.
async fn may_control(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    caller.require_teacher()?;
    if !caller.is_admin() && !caller.owns(&state.store.get_row(id).await?.created_by) {
        return Err(StoreError::NotFound(id).into());
    }
    Ok(())
}

/// Result of a cancel.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Cancelled {
    ok: bool,
    /// The job's status now (`cancelled`, or `running` while running work stops).
    status: JobStatus,
    /// Running jobs asked to stop.
    stop_requested: u64,
}

/// Cancel a job: work not started is cancelled now, running work is asked to stop.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = Cancelled), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<Cancelled>, ApiError> {
    may_control(&state, &caller, id).await?;
    let out = state.store.cancel(id, "cancelled on request").await?;
    state
        .audit(
            &caller,
            source,
            "job.cancel",
            format!("job:{id}"),
            json!(null),
        )
        .await;
    Ok(Json(Cancelled {
        ok: true,
        status: out.status,
        stop_requested: out.stop_requested,
    }))
}

/// Result of a retry.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Retried {
    ok: bool,
    /// The job.
    job_id: Uuid,
    /// Jobs put back in the queue (the job itself, or its failed children).
    requeued: usize,
}

/// Retries a job (for a parent: its failed children), publishes what was requeued and finishes
/// a parent left with nothing to re-run.
pub(crate) async fn retry_and_publish(
    state: &AppState,
    id: Uuid,
) -> Result<labfleet_jobs::store::RetryOutcome, ApiError> {
    let out = state.store.retry(id).await?;
    state.publisher.publish_stored(&out.requeued).await;
    // A parent with nothing left to re-run finishes at once (else the recovery sweep does it:
    // the retry itself is committed, so this must not turn the answer into an error).
    if let Err(e) = state.store.finalize_parents(&[id]).await {
        tracing::warn!(job.id = %id, error = %e, "could not finish the retried parent now");
    }
    Ok(out)
}

/// Retry a failed, dead or cancelled job (for a parent: only its failed children).
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 202, body = Retried), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn retry(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    may_control(&state, &caller, id).await?;
    let out = retry_and_publish(&state, id).await?;
    let detail = json!({"requeued": out.requeued.len()});
    state
        .audit(&caller, source, "job.retry", format!("job:{id}"), detail)
        .await;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/jobs/{id}"))],
        Json(Retried {
            ok: true,
            job_id: id,
            requeued: out.requeued.len(),
        }),
    )
        .into_response())
}
