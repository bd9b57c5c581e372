//! `/api/classes`: a teacher's bulk deployments. Creating a class validates everything that can
//! be checked without Proxmox (cluster, synced template, node, method), stores the class and its
//! deploy job in one transaction and answers 202 at once; the worker plans and clones.
//! One class operation (deploy, resize, delete) runs at a time.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use labfleet_entities::class;
use labfleet_fleet::{ClassRequest, ClassState, ClassStore, VmView};
use labfleet_jobs::{
    store::{CreateOutcome, IdempotencyClaim, NewJob},
    ClassArgs, DestroyClassArgs, JobSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

use super::jobs::{idempotency_key, retry_and_publish};
use crate::{
    auth::Caller,
    error::ApiError,
    extract::{parse_json, ClassId, Source},
    state::AppState,
};

/// A class as listed.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClassView {
    /// labfleet's class id.
    id: i64,
    name: String,
    /// DNS-safe form of the name, the prefix of its VM names.
    slug: String,
    description: Option<String>,
    /// The user who created it.
    owner: String,
    /// The cluster's `cluster_id`.
    cluster: String,
    /// The template's Proxmox VMID.
    template_id: i64,
    deployment_method: String,
    deployment_node: Option<String>,
    /// Whether VMs are powered on once cloned.
    start: bool,
    pool_size: i32,
    /// `active`, `deleting` or `deleted`.
    state: String,
    /// The newest job of the class (deploy, resize or delete).
    job_id: Option<Uuid>,
    /// Idle auto-shutdown overrides.
    idle_cpu_percent: Option<f64>,
    idle_minutes: Option<i32>,
    created_at: DateTime<Utc>,
}

/// One class with its VMs.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClassDetail {
    ok: bool,
    class: ClassView,
    /// VM counts by outcome.
    counts: VmCounts,
    /// Every VM, by index; failed ones carry Proxmox's message.
    vms: Vec<VmView>,
}

/// How a class's VMs are doing.
#[derive(Serialize, utoipa::ToSchema, Default)]
pub(crate) struct VmCounts {
    total: usize,
    /// Made (and running, when the class starts its VMs).
    ready: usize,
    failed: usize,
    /// Planned or being made.
    in_progress: usize,
}

/// Every class the caller may see.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClassList {
    ok: bool,
    classes: Vec<ClassView>,
}

/// A class accepted for deployment.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClassAccepted {
    ok: bool,
    class_id: i64,
    /// The deploy job; poll `GET /api/jobs/{job_id}` for progress.
    job_id: Uuid,
}

/// A class operation accepted.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClassJob {
    ok: bool,
    class_id: i64,
    /// The job doing it (none when there was nothing to do).
    job_id: Option<Uuid>,
}

/// Body of `PATCH /api/classes/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassPatch {
    /// New number of VMs: more adds VMs, fewer destroys the highest-numbered ones.
    pool_size: i64,
}

/// Create a class: N student VMs from a template (teacher or admin). Answers at once; the
/// deployment runs as a job with one child per VM.
#[utoipa::path(post, path = "/api/classes", tag = "classes", request_body = ClassRequest,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same class")),
    responses((status = 202, body = ClassAccepted), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_teacher()?;
    let request: ClassRequest = parse_json(&body)?;
    let detail = json!({
        "name": request.name, "template_id": request.template_id, "pool_size": request.pool_size,
    });
    let claim = idempotency_key(&headers)?.map(|key| IdempotencyClaim {
        caller: caller.name.clone(),
        key,
        request_hash: hex::encode(Sha256::digest(&body)),
    });
    // A replay answers with the first class before validating again: the inventory may have
    // changed since, and the class exists either way.
    if let Some(claim) = &claim {
        match state.store.find_idempotent(claim).await? {
            Some(CreateOutcome::Replayed(job_id)) => return replayed(&state, job_id).await,
            Some(_) => return Err(key_conflict()),
            None => {}
        }
    }
    let new_class = request
        .validate(state.store.db(), state.settings.deploy.max_pool_size)
        .await?;
    let owner = caller.name.clone();
    let max_attempts = state.settings.retry.max_attempts;
    let outcome = state
        .publisher
        .submit_with(claim.as_ref(), move |txn| {
            Box::pin(async move {
                let class = ClassStore::insert(txn, &new_class, &owner).await?;
                Ok(NewJob {
                    spec: JobSpec::DeployClass(ClassArgs { class_id: class.id }),
                    parent_id: None,
                    created_by: owner,
                    max_attempts,
                    class_id: Some(class.id),
                })
            })
        })
        .await?;
    match outcome {
        CreateOutcome::Created(job_id) => {
            let class_id = class_of(&state, job_id).await?;
            let target = format!("class:{class_id}");
            state
                .audit(&caller, source, "class.create", target, detail)
                .await;
            Ok(class_accepted(class_id, job_id))
        }
        CreateOutcome::Replayed(job_id) => replayed(&state, job_id).await,
        CreateOutcome::KeyConflict => Err(key_conflict()),
    }
}

fn key_conflict() -> ApiError {
    ApiError::Conflict("this Idempotency-Key was already used with a different request".into())
}

async fn replayed(state: &AppState, job_id: Uuid) -> Result<Response, ApiError> {
    let class_id = class_of(state, job_id).await?;
    Ok(class_accepted(class_id, job_id))
}

async fn class_of(state: &AppState, job_id: Uuid) -> Result<i64, ApiError> {
    state.store.get_row(job_id).await?.class_id.ok_or_else(|| {
        ApiError::Conflict("this Idempotency-Key belongs to another kind of request".into())
    })
}

fn class_accepted(class_id: i64, job_id: Uuid) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/jobs/{job_id}"))],
        Json(ClassAccepted {
            ok: true,
            class_id,
            job_id,
        }),
    )
        .into_response()
}

/// List classes: a teacher's own, every class for an admin.
#[utoipa::path(get, path = "/api/classes", tag = "classes", security(("bearer" = [])),
    responses((status = 200, body = ClassList), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<ClassList>, ApiError> {
    caller.require_teacher()?;
    let owner = (!caller.is_admin()).then_some(caller.name.as_str());
    let classes = state.classes.list(owner).await?;
    let clusters: HashMap<i64, String> = state
        .clusters
        .list()
        .await?
        .into_iter()
        .map(|c| (c.id, c.cluster_id))
        .collect();
    let ids: Vec<i64> = classes.iter().map(|c| c.id).collect();
    let jobs = state.store.latest_jobs_of_classes(&ids).await?;
    let out = classes
        .into_iter()
        .map(|class| {
            let job_id = jobs.get(&class.id).copied();
            view(class, &clusters, job_id)
        })
        .collect();
    Ok(Json(ClassList {
        ok: true,
        classes: out,
    }))
}

/// One class with every VM's node, VMID, name, state and error.
#[utoipa::path(get, path = "/api/classes/{id}", tag = "classes",
    params(("id" = i64, Path, description = "Class id")), security(("bearer" = [])),
    responses((status = 200, body = ClassDetail), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    ClassId(id): ClassId,
) -> Result<Json<ClassDetail>, ApiError> {
    let class = visible_class(&caller, &state, id).await?;
    let (vms, job_id, cluster) = tokio::try_join!(
        async { state.classes.vm_views(id).await.map_err(ApiError::from) },
        async {
            state
                .store
                .latest_job_of_class(id)
                .await
                .map_err(ApiError::from)
        },
        async { Ok(state.clusters.get(class.cluster_db_id).await.ok()) },
    )?;
    let mut counts = VmCounts {
        total: vms.len(),
        ..Default::default()
    };
    for vm in &vms {
        match vm.state.as_str() {
            "created" | "running" => counts.ready += 1,
            "failed" | "cancelled" => counts.failed += 1,
            _ => counts.in_progress += 1,
        }
    }
    let clusters: HashMap<i64, String> =
        cluster.into_iter().map(|c| (c.id, c.cluster_id)).collect();
    Ok(Json(ClassDetail {
        ok: true,
        class: view(class, &clusters, job_id),
        counts,
        vms,
    }))
}

/// Change a class's pool size: adds VMs (a deploy job) or destroys the highest-numbered ones.
#[utoipa::path(patch, path = "/api/classes/{id}", tag = "classes", request_body = ClassPatch,
    params(("id" = i64, Path, description = "Class id")), security(("bearer" = [])),
    responses((status = 202, body = ClassJob), (status = 200, body = ClassJob),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn resize(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    ClassId(id): ClassId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let class = visible_class(&caller, &state, id).await?;
    let patch: ClassPatch = parse_json(&body)?;
    let max = state.settings.deploy.max_pool_size;
    if patch.pool_size < 1 || patch.pool_size > i64::from(max) {
        return Err(ApiError::invalid(
            "pool_size",
            format!("pool_size: must be between 1 and {max} (DELETE the class to remove every VM)"),
        ));
    }
    ensure_idle(&state, &class).await?;
    let new_size = patch.pool_size as u32;
    let spec = match new_size.cmp(&(class.pool_size as u32)) {
        std::cmp::Ordering::Equal => {
            return Ok((
                StatusCode::OK,
                Json(ClassJob {
                    ok: true,
                    class_id: id,
                    job_id: None,
                }),
            )
                .into_response())
        }
        std::cmp::Ordering::Greater => JobSpec::DeployClass(ClassArgs { class_id: id }),
        std::cmp::Ordering::Less => JobSpec::DestroyClass(DestroyClassArgs {
            class_id: id,
            keep: new_size,
        }),
    };
    let job_id = class_job(&state, &caller, id, spec, move |txn| {
        Box::pin(async move { ClassStore::set_pool_size(txn, id, new_size).await })
    })
    .await?;
    let detail = json!({"from": class.pool_size, "to": new_size});
    state
        .audit(
            &caller,
            source,
            "class.resize",
            format!("class:{id}"),
            detail,
        )
        .await;
    Ok(class_job_accepted(id, job_id))
}

/// Delete a class: its deployment (if running) is cancelled, its VMs destroyed, VMIDs freed.
#[utoipa::path(delete, path = "/api/classes/{id}", tag = "classes",
    params(("id" = i64, Path, description = "Class id")), security(("bearer" = [])),
    responses((status = 202, body = ClassJob), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    ClassId(id): ClassId,
) -> Result<Response, ApiError> {
    let class = visible_class(&caller, &state, id).await?;
    if !is_active(&class) {
        return Err(ApiError::Conflict(format!(
            "class {id} is already {}",
            class.state
        )));
    }
    if let Some((job, kind)) = state.store.unfinished_job_of_class(id).await? {
        if kind != "deploy_class" {
            return Err(ApiError::Conflict(format!(
                "job {job} ({kind}) of this class is still running; try again when it has finished"
            )));
        }
        state.store.cancel(job, "class deleted").await?;
    }
    let spec = JobSpec::DestroyClass(DestroyClassArgs {
        class_id: id,
        keep: 0,
    });
    let job_id = class_job(&state, &caller, id, spec, move |txn| {
        Box::pin(async move { ClassStore::set_state(txn, id, ClassState::Deleting).await })
    })
    .await?;
    let detail = json!({"name": class.name});
    state
        .audit(
            &caller,
            source,
            "class.delete",
            format!("class:{id}"),
            detail,
        )
        .await;
    Ok(class_job_accepted(id, job_id))
}

/// Retry the class's failed VMs (only those) on its newest job.
#[utoipa::path(post, path = "/api/classes/{id}/retry-failed", tag = "classes",
    params(("id" = i64, Path, description = "Class id")), security(("bearer" = [])),
    responses((status = 202, body = ClassJob), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn retry_failed(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    ClassId(id): ClassId,
) -> Result<Response, ApiError> {
    let class = visible_class(&caller, &state, id).await?;
    if !is_active(&class) {
        return Err(ApiError::Conflict(format!("class {id} is {}", class.state)));
    }
    let job = state
        .store
        .latest_job_of_class(id)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("class {id} has no deployment to retry")))?;
    let out = retry_and_publish(&state, job).await?;
    let detail = json!({"job_id": job, "requeued": out.requeued.len()});
    state
        .audit(
            &caller,
            source,
            "class.retry_failed",
            format!("class:{id}"),
            detail,
        )
        .await;
    Ok(class_job_accepted(id, Some(job)))
}

/// The class, if the caller may see it: its owner or an admin (others get 404, so ids don't
/// tell what exists).
async fn visible_class(
    caller: &Caller,
    state: &AppState,
    id: i64,
) -> Result<class::Model, ApiError> {
    caller.require_teacher()?;
    match state.classes.get(id).await? {
        Some(c)
            if ClassState::parse(&c.state) != Some(ClassState::Deleted)
                && (caller.is_admin() || c.owner == caller.name) =>
        {
            Ok(c)
        }
        _ => Err(ApiError::NotFound(format!("class {id} not found"))),
    }
}

/// True when the class is in use (not being deleted, not deleted).
fn is_active(class: &class::Model) -> bool {
    ClassState::parse(&class.state) == Some(ClassState::Active)
}

/// Refuses (409) while another operation of the class runs.
async fn ensure_idle(state: &AppState, class: &class::Model) -> Result<(), ApiError> {
    if !is_active(class) {
        return Err(ApiError::Conflict(format!(
            "class {} is {}",
            class.id, class.state
        )));
    }
    if let Some((job, kind)) = state.store.unfinished_job_of_class(class.id).await? {
        return Err(ApiError::Conflict(format!(
            "job {job} ({kind}) of this class is still running; try again when it has finished"
        )));
    }
    Ok(())
}

/// Stores a class operation's job with a change to the class, in one transaction, and
/// publishes it.
async fn class_job<F>(
    state: &AppState,
    caller: &Caller,
    class_id: i64,
    spec: JobSpec,
    change: F,
) -> Result<Option<Uuid>, ApiError>
where
    F: for<'t> FnOnce(
            &'t sea_orm::DatabaseTransaction,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), sea_orm::DbErr>> + Send + 't>,
        > + Send
        + 'static,
{
    let new = NewJob {
        spec,
        parent_id: None,
        created_by: caller.name.clone(),
        max_attempts: state.settings.retry.max_attempts,
        class_id: Some(class_id),
    };
    let outcome = state
        .publisher
        .submit_with(None, move |txn| {
            Box::pin(async move {
                change(txn).await?;
                Ok(new)
            })
        })
        .await?;
    match outcome {
        CreateOutcome::Created(job_id) => Ok(Some(job_id)),
        _ => Err(ApiError::Internal(
            "a job without a key was replayed".into(),
        )),
    }
}

fn class_job_accepted(class_id: i64, job_id: Option<Uuid>) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(ClassJob {
            ok: true,
            class_id,
            job_id,
        }),
    )
        .into_response();
    if let Some(job) = job_id {
        if let Ok(v) = format!("/api/jobs/{job}").parse() {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    response
}

fn view(class: class::Model, clusters: &HashMap<i64, String>, job_id: Option<Uuid>) -> ClassView {
    ClassView {
        id: class.id,
        cluster: clusters
            .get(&class.cluster_db_id)
            .cloned()
            .unwrap_or_else(|| class.cluster_db_id.to_string()),
        name: class.name,
        slug: class.slug,
        description: class.description,
        owner: class.owner,
        template_id: class.template_vmid,
        deployment_method: class.method,
        deployment_node: class.deployment_node,
        start: class.start_vms,
        pool_size: class.pool_size,
        state: class.state,
        job_id,
        idle_cpu_percent: class.idle_cpu_percent,
        idle_minutes: class.idle_minutes,
        created_at: class.created_at,
    }
}
