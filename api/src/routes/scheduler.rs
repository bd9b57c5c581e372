//! `GET /api/scheduler` (the leader and every tick's last and next run) and `GET /api/reconcile`
//! (orphans and vanished VMs), both for admins.

use axum::{extract::State, Json};
use labfleet_scheduler::{reconcile::ReconcileView, SchedulerStatus};
use serde::Serialize;

use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    state::AppState,
};

/// The scheduler's status.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SchedulerStatusBody {
    ok: bool,
    #[serde(flatten)]
    status: SchedulerStatus,
}

/// Which scheduler process leads, and each tick's interval, last run (duration, items seen,
/// actions, note, error) and next run (admin).
#[utoipa::path(get, path = "/api/scheduler", tag = "operations",
    security(("bearer" = [])),
    responses((status = 200, body = SchedulerStatusBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn status(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<SchedulerStatusBody>, ApiError> {
    caller.require_admin()?;
    let status = labfleet_scheduler::status(state.store.db(), &state.settings).await?;
    Ok(Json(SchedulerStatusBody { ok: true, status }))
}

/// The reconciliation report.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReconcileBody {
    ok: bool,
    #[serde(flatten)]
    report: ReconcileView,
}

/// VMs in labfleet's VMID ranges that no class VM owns (orphans carrying our marker, and
/// foreign VMs that are never touched), and class VMs their cluster no longer lists (admin).
#[utoipa::path(get, path = "/api/reconcile", tag = "operations",
    security(("bearer" = [])),
    responses((status = 200, body = ReconcileBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn reconcile(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<ReconcileBody>, ApiError> {
    caller.require_admin()?;
    let report =
        labfleet_scheduler::reconcile::view(state.store.db(), &state.settings.scheduler).await?;
    Ok(Json(ReconcileBody { ok: true, report }))
}
