//! `GET /api/audit`: the audit log, newest first (admin).

use axum::{extract::State, Json};
use chrono::{DateTime, Utc};
use labfleet_access::{AuditEventView, AuditFilter};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    extract::{page_offset, page_size, Query},
    state::AppState,
};

/// Filters and paging of `GET /api/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only this user's actions.
    actor: Option<String>,
    /// Only this action (`cluster.update`, `token.issue`, …).
    action: Option<String>,
    /// Only actions at or after this time (RFC 3339, e.g. `2026-11-23T10:00:00Z`).
    since: Option<String>,
    /// Page size (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Rows to skip.
    #[param(maximum = 1000000000)]
    offset: Option<u64>,
}

/// A page of the audit log.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditList {
    ok: bool,
    events: Vec<AuditEventView>,
}

/// Read the audit log (admin): who did what, to which object, when, from where.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditParams),
    security(("bearer" = [])),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    caller.require_admin()?;
    let since = params
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid(
                        "since",
                        format!("`{s}` is not an RFC 3339 time (e.g. 2026-11-23T10:00:00Z)"),
                    )
                })
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: params.actor,
        action: params.action,
        since,
        limit: page_size(params.limit, "limit")?,
        offset: page_offset(params.offset, "offset")?,
    };
    let events = state
        .auth
        .store()
        .audit_events(&filter)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(AuditList { ok: true, events }))
}
