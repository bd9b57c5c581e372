//! `/api/vms`: a class's VMs as the people who use them see them, and their power buttons.
//! A VM is visible to admins, to the teacher who owns its class and to the student it is
//! assigned to; anyone else gets the same 404 as for a VM that does not exist. Powering a VM
//! is a `vm_power` job (`202` + `Location`). `PATCH /api/classes/{id}/vms/{vm_id}` assigns a
//! student and the keep-running flag (the class's teacher, admins).

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, State},
    http::{request::Parts, HeaderMap},
    response::Response,
    Json,
};
use labfleet_access::Role;
use labfleet_fleet::{AssignedVm, ClassState, VmScope, VmState};
use labfleet_jobs::{store::NewJob, JobSpec, JobStatus, PowerAction, StoreError, VmPowerArgs};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::jobs::{submit, AuditAs};
use crate::{
    auth::Caller,
    error::ApiError,
    extract::{page_offset, page_size, parse_json, path_positive_id, positive_id, Query, Source},
    state::AppState,
};

/// Longest shutdown timeout a request may ask for.
const MAX_TIMEOUT_SECS: u32 = 3600;

/// The `{id}` path segment of a VM (`class_vms.id`).
pub(crate) struct VmId(i64);

impl<S: Send + Sync> FromRequestParts<S> for VmId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_positive_id(parts, state, "id", "VM id")
            .await
            .map(VmId)
    }
}

/// The `{id}/vms/{vm_id}` path segments: a class and one of its VMs.
pub(crate) struct ClassVmPath(i64, i64);

impl<S: Send + Sync> FromRequestParts<S> for ClassVmPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (class, vm) = match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((class, vm))) => (Some(class), Some(vm)),
            Err(_) => (None, None),
        };
        Ok(ClassVmPath(
            positive_id(class, "id", "class id")?,
            positive_id(vm, "vm_id", "VM id")?,
        ))
    }
}

/// What to do to a VM.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Power on (a running VM stays as it is).
    Start,
    /// Ask the guest to shut down; it is stopped hard if it has not after `timeout_secs`.
    Shutdown,
    /// Stop at once (pulling the plug).
    Stop,
    /// Reboot (a stopped VM is started).
    Reboot,
}

impl From<Action> for PowerAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Start => PowerAction::Start,
            Action::Shutdown => PowerAction::Shutdown,
            Action::Stop => PowerAction::Stop,
            Action::Reboot => PowerAction::Reboot,
        }
    }
}

/// Body of `POST /api/vms/{id}/power`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PowerRequest {
    action: Action,
    /// Shutdown and reboot: seconds the guest gets to shut down (shutdown: then it is stopped
    /// hard; default `power.shutdown_timeout_secs`, 60).
    #[schema(minimum = 1, maximum = 3600)]
    timeout_secs: Option<u32>,
}

/// One VM.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct VmDetail {
    ok: bool,
    vm: AssignedVm,
}

/// A page of VMs.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct VmList {
    ok: bool,
    vms: Vec<AssignedVm>,
}

/// Paging of `GET /api/vms`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Rows to skip.
    #[param(maximum = 1000000000)]
    offset: Option<u64>,
}

/// Body of `PATCH /api/classes/{id}/vms/{vm_id}`; an absent field is left as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VmPatch {
    /// The user name of the student the VM is for (a user with the student role); `null`
    /// unassigns it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    student: Option<Option<String>>,
    /// Never shut the VM down for idleness.
    keep_running: Option<bool>,
}

/// A field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Start, shut down, stop or reboot a VM (admin, the class's teacher, the VM's student).
/// Answers at once; a `vm_power` job does it. Shutdown asks the guest (ACPI or agent) and stops
/// it hard once `timeout_secs` have passed.
#[utoipa::path(post, path = "/api/vms/{id}/power", tag = "vms", request_body = PowerRequest,
    params(("id" = i64, Path, description = "VM id (`class_vms.id`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same job (24 h)")),
    security(("bearer" = [])),
    responses((status = 202, body = super::jobs::Accepted, headers(("Location" = String))),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn power(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    headers: HeaderMap,
    VmId(id): VmId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let vm = visible_vm(&caller, &state, id).await?;
    let request: PowerRequest = parse_json(&body)?;
    if let Some(t) = request.timeout_secs {
        if !(1..=MAX_TIMEOUT_SECS).contains(&t) {
            return Err(ApiError::invalid(
                "timeout_secs",
                format!("timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}, got {t}"),
            ));
        }
    }
    ensure_powerable(&state, &vm).await?;
    let action = PowerAction::from(request.action);
    let new = NewJob {
        spec: JobSpec::VmPower(VmPowerArgs {
            class_vm_id: vm.id,
            action,
            timeout_secs: request.timeout_secs,
            reason: None,
        }),
        parent_id: None,
        created_by: caller.name.clone(),
        max_attempts: state.settings.retry.max_attempts,
        class_id: None,
    };
    // The key identifies the request by its target as well as its body.
    let mut key_request = format!("POST /api/vms/{id}/power\n").into_bytes();
    key_request.extend_from_slice(&body);
    let audit = AuditAs {
        source,
        action: "vm.power",
        target: Some(format!("vm:{id}")),
        detail: json!({
            "action": action.as_str(), "vmid": vm.vmid, "class_id": vm.class_id,
            "timeout_secs": request.timeout_secs,
        }),
    };
    submit(&state, &caller, &headers, &key_request, new, audit).await
}

/// One VM: class, name, node, VMID, state, student, keep-running flag.
#[utoipa::path(get, path = "/api/vms/{id}", tag = "vms",
    params(("id" = i64, Path, description = "VM id (`class_vms.id`)")), security(("bearer" = [])),
    responses((status = 200, body = VmDetail), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn show(
    caller: Caller,
    State(state): State<AppState>,
    VmId(id): VmId,
) -> Result<Json<VmDetail>, ApiError> {
    let vm = visible_vm(&caller, &state, id).await?;
    Ok(Json(VmDetail { ok: true, vm }))
}

/// The VMs the caller may see: a student's own, a teacher's classes', every VM for an admin;
/// by class and index.
#[utoipa::path(get, path = "/api/vms", tag = "vms", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = VmList), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<VmList>, ApiError> {
    let limit = page_size(params.limit, "limit")?;
    let offset = page_offset(params.offset, "offset")?;
    let scope = match caller.role {
        Role::Admin => VmScope::All,
        Role::Teacher => VmScope::Owner(&caller.name),
        Role::Student => VmScope::Student(&caller.name),
    };
    let vms = state.classes.assigned_vms(scope, limit, offset).await?;
    Ok(Json(VmList { ok: true, vms }))
}

/// Assign a VM of a class to a student (`null` unassigns) and set its keep-running flag (the
/// class's teacher, admins).
#[utoipa::path(patch, path = "/api/classes/{id}/vms/{vm_id}", tag = "vms", request_body = VmPatch,
    params(("id" = i64, Path, description = "Class id"),
        ("vm_id" = i64, Path, description = "VM id (`class_vms.id`)")),
    security(("bearer" = [])),
    responses((status = 200, body = VmDetail), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    ClassVmPath(class_id, vm_id): ClassVmPath,
    body: Bytes,
) -> Result<Json<VmDetail>, ApiError> {
    caller.require_teacher()?;
    let not_found = || ApiError::NotFound(format!("VM {vm_id} of class {class_id} not found"));
    let vm = state
        .classes
        .assigned_vm(vm_id)
        .await?
        .filter(|vm| vm.class_id == class_id && caller.owns(&vm.owner))
        .ok_or_else(not_found)?;
    let patch: VmPatch = parse_json(&body)?;
    if patch.student.is_none() && patch.keep_running.is_none() {
        return Err(ApiError::invalid(
            "body",
            "nothing to change: send `student` and/or `keep_running`",
        ));
    }
    if let Some(Some(name)) = &patch.student {
        check_student(&state, name).await?;
    }
    let student = patch.student.as_ref().map(|s| s.as_deref());
    if !state
        .classes
        .set_assignment(vm.id, student, patch.keep_running)
        .await?
    {
        return Err(not_found());
    }
    let vm = state
        .classes
        .assigned_vm(vm.id)
        .await?
        .ok_or_else(not_found)?;
    let mut detail = json!({"class_id": class_id, "vmid": vm.vmid});
    if let Some(student) = &patch.student {
        detail["student"] = json!(student);
    }
    if let Some(keep) = patch.keep_running {
        detail["keep_running"] = json!(keep);
    }
    state
        .audit(&caller, source, "vm.update", format!("vm:{vm_id}"), detail)
        .await;
    Ok(Json(VmDetail { ok: true, vm }))
}

/// A student name must be an existing, enabled user with the student role.
async fn check_student(state: &AppState, name: &str) -> Result<(), ApiError> {
    let user = state.auth.store().user_by_name(name).await?;
    let problem = match user {
        None => format!("student: there is no user named `{name}`"),
        Some(u) if u.role != Role::Student => {
            format!("student: `{name}` is a {}, not a student", u.role.as_str())
        }
        Some(u) if u.disabled_at.is_some() => format!("student: `{name}` is disabled"),
        Some(_) => return Ok(()),
    };
    Err(ApiError::invalid("student", problem))
}

/// The VM, if the caller may see it: an admin, its class's teacher, or its student. Anyone else
/// gets the 404 of a VM that does not exist.
async fn visible_vm(caller: &Caller, state: &AppState, id: i64) -> Result<AssignedVm, ApiError> {
    let vm = state.classes.assigned_vm(id).await?;
    match vm {
        Some(vm) if may_see(caller, &vm) => Ok(vm),
        _ => Err(ApiError::NotFound(format!("VM {id} not found"))),
    }
}

fn may_see(caller: &Caller, vm: &AssignedVm) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Teacher => vm.owner == caller.name,
        Role::Student => vm.student.as_deref() == Some(caller.name.as_str()),
    }
}

/// Refuses (409) a VM that does not exist yet or is going away: being deployed (or its deploy
/// job still runs), failed, being deleted, or in a class being deleted.
async fn ensure_powerable(state: &AppState, vm: &AssignedVm) -> Result<(), ApiError> {
    if !VmState::parse(&vm.state).is_some_and(VmState::powerable) {
        return Err(ApiError::Conflict(format!(
            "VM {} is {}: only a deployed VM (created or running) can be powered; \
             wait until its deployment or deletion has finished",
            vm.id, vm.state
        )));
    }
    let class = state.classes.get(vm.class_id).await?;
    if class.is_some_and(|c| ClassState::parse(&c.state) != Some(ClassState::Active)) {
        return Err(ApiError::Conflict(format!(
            "the class of VM {} is being deleted",
            vm.id
        )));
    }
    let row = state.classes.vm(vm.id).await?;
    if let Some(job) = row.and_then(|r| r.job_id) {
        let status = match state.store.get_row(job).await {
            Ok(j) => Some(j.status),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let unfinished = status
            .as_deref()
            .and_then(JobStatus::parse)
            .is_some_and(|s| {
                matches!(
                    s,
                    JobStatus::Queued | JobStatus::Running | JobStatus::Retrying
                )
            });
        if unfinished {
            return Err(ApiError::Conflict(format!(
                "VM {} is still being deployed (job {job}); try again when it has finished",
                vm.id
            )));
        }
    }
    Ok(())
}
