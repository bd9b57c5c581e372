//! The inventory: `POST /api/cluster-config/{db_id}/sync` starts a `sync_cluster` job;
//! `GET /api/templates` and `GET /api/isos` list what syncs found, filtered by cluster.

use std::collections::HashMap;

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response, Json};
use labfleet_clusters::{
    inventory::{IsoView, TemplateView},
    ClusterError, InventoryFilter,
};
use labfleet_jobs::{store::NewJob, JobSpec, SyncClusterArgs};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{parse_json, Query, Source},
    routes::{
        clusters::DbId,
        jobs::{submit, AuditAs},
    },
    state::AppState,
};

/// Optional body of `POST /api/cluster-config/{db_id}/sync`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncRequest {
    /// Sync templates (default true; needs `allow_template_sync`).
    #[serde(default = "yes")]
    templates: bool,
    /// Sync ISOs (default true; needs `allow_iso_sync`).
    #[serde(default = "yes")]
    isos: bool,
}

fn yes() -> bool {
    true
}

/// Sync a cluster's inventory now (admin): nodes and storages always, templates and ISOs where
/// the cluster's toggles allow. Answers with the job; its result is the sync report. Honours
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/api/cluster-config/{db_id}/sync", tag = "inventory",
    request_body(content = Option<SyncRequest>, description = "Optional; both parts by default"),
    params(("db_id" = i64, Path, description = "Cluster row id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same job (24 h)")),
    security(("bearer" = [])),
    responses((status = 202, body = crate::routes::jobs::Accepted, headers(("Location" = String))),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn sync(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    DbId(db_id): DbId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest {
            templates: true,
            isos: true,
        }
    } else {
        parse_json::<SyncRequest>(&body)?
    };
    let cluster = state.clusters.get(db_id).await?;
    let new = NewJob {
        spec: JobSpec::SyncCluster(SyncClusterArgs {
            cluster_db_id: cluster.id,
            templates: req.templates,
            isos: req.isos,
        }),
        parent_id: None,
        created_by: caller.name.clone(),
        max_attempts: state.settings.retry.max_attempts,
        class_id: None,
    };
    // The key identifies the request by its target as well as its body.
    let mut request = format!("POST /api/cluster-config/{db_id}/sync\n").into_bytes();
    request.extend_from_slice(&body);
    tracing::info!(cluster = %cluster.cluster_id, by = %caller.name, "inventory sync requested");
    let audit = AuditAs {
        source,
        action: "cluster.sync",
        target: Some(format!("cluster:{db_id}")),
        detail: serde_json::json!({
            "cluster_id": cluster.cluster_id, "templates": req.templates, "isos": req.isos,
        }),
    };
    submit(&state, &caller, &headers, &request, new, audit).await
}

/// Filters of the listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only this cluster (its `cluster_id`).
    cluster: Option<String>,
    /// Also list those no longer on their cluster (default false).
    include_gone: Option<bool>,
}

/// Templates found by syncs.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TemplateList {
    ok: bool,
    templates: Vec<TemplateView>,
}

/// ISOs found by syncs.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IsoList {
    ok: bool,
    isos: Vec<IsoView>,
}

/// The filter and the `cluster_id` of every cluster the caller may read, by row id; an unknown
/// cluster is a 404. Admins read every cluster's inventory; teachers, who deploy by template id,
/// read that of the active clusters that allow deployment (any other is unknown to them).
async fn resolve(
    state: &AppState,
    caller: &Caller,
    params: ListParams,
) -> Result<(InventoryFilter, HashMap<i64, String>), ApiError> {
    caller.require_teacher()?;
    let mut clusters = state.clusters.list().await?;
    if !caller.is_admin() {
        clusters.retain(|c| c.is_active && c.allow_vm_deployment);
    }
    let cluster_db_id = match &params.cluster {
        Some(wanted) => Some(
            clusters
                .iter()
                .find(|c| &c.cluster_id == wanted)
                .map(|c| c.id)
                .ok_or_else(|| ApiError::NotFound(format!("cluster `{wanted}` not found")))?,
        ),
        None => None,
    };
    let filter = InventoryFilter {
        cluster_db_id,
        include_gone: params.include_gone.unwrap_or(false),
    };
    let names = clusters.into_iter().map(|c| (c.id, c.cluster_id)).collect();
    Ok((filter, names))
}

fn cluster_name(names: &HashMap<i64, String>, db_id: i64) -> String {
    names.get(&db_id).cloned().unwrap_or_default()
}

/// List templates (admins: every cluster's; teachers: those of active clusters that allow
/// deployment). Gone templates only with `include_gone=true`.
#[utoipa::path(get, path = "/api/templates", tag = "inventory", params(ListParams),
    security(("bearer" = [])),
    responses((status = 200, body = TemplateList), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn templates(
    caller: Caller,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<TemplateList>, ApiError> {
    let (filter, names) = resolve(&state, &caller, params).await?;
    let rows = state
        .clusters
        .inventory()
        .templates(filter)
        .await
        .map_err(ClusterError::from)?;
    let rows = rows
        .into_iter()
        .filter(|r| names.contains_key(&r.cluster_db_id));
    let templates = rows
        .map(|t| {
            let cluster = cluster_name(&names, t.cluster_db_id);
            TemplateView::new(t, cluster)
        })
        .collect();
    Ok(Json(TemplateList {
        ok: true,
        templates,
    }))
}

/// List ISOs (admins: every cluster's; teachers: those of active clusters that allow
/// deployment). An ISO on a shared storage is listed once with `node` empty; one on a local
/// storage once per node.
#[utoipa::path(get, path = "/api/isos", tag = "inventory", params(ListParams),
    security(("bearer" = [])),
    responses((status = 200, body = IsoList), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn isos(
    caller: Caller,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<IsoList>, ApiError> {
    let (filter, names) = resolve(&state, &caller, params).await?;
    let rows = state
        .clusters
        .inventory()
        .isos(filter)
        .await
        .map_err(ClusterError::from)?;
    let rows = rows
        .into_iter()
        .filter(|r| names.contains_key(&r.cluster_db_id));
    let isos = rows
        .map(|i| {
            let cluster = cluster_name(&names, i.cluster_db_id);
            IsoView::new(i, cluster)
        })
        .collect();
    Ok(Json(IsoList { ok: true, isos }))
}
