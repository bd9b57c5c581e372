//! `/api/cluster-config`: the admin's cluster registry, with the request and response shapes of
//! the older lab tool's cluster API. Secrets are accepted, never returned.

use axum::{
    body::Bytes,
    extract::{FromRequestParts, State},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use labfleet_clusters::{ClusterInput, ClusterView};
use labfleet_fleet::backend::{ProbeError, ProbeReport};
use serde::Serialize;
use serde_json::json;

use crate::{
    auth::Caller,
    error::ApiError,
    extract::{parse_json, path_positive_id, Source},
    state::AppState,
};

/// The `{db_id}` path segment.
pub(crate) struct DbId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for DbId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_positive_id(parts, state, "db_id", "cluster db_id")
            .await
            .map(DbId)
    }
}

/// Every cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterList {
    ok: bool,
    clusters: Vec<ClusterView>,
}

/// One cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OneCluster {
    ok: bool,
    cluster: ClusterView,
}

/// List clusters (admin). Secrets are never included; `has_*` says which are set.
#[utoipa::path(get, path = "/api/cluster-config", tag = "clusters", security(("bearer" = [])),
    responses((status = 200, body = ClusterList), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<ClusterList>, ApiError> {
    caller.require_admin()?;
    let clusters = state
        .clusters
        .list()
        .await?
        .iter()
        .map(ClusterView::from)
        .collect();
    Ok(Json(ClusterList { ok: true, clusters }))
}

/// Register a cluster (admin).
#[utoipa::path(post, path = "/api/cluster-config", tag = "clusters", request_body = ClusterInput,
    security(("bearer" = [])),
    responses((status = 201, body = OneCluster), (status = 400, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let input: ClusterInput = parse_json(&body)?;
    let saved = state.clusters.create(input).await?;
    tracing::info!(cluster = %saved.cluster_id, by = %caller.name, "cluster registered");
    state
        .audit(
            &caller,
            source,
            "cluster.create",
            format!("cluster:{}", saved.id),
            json!({"cluster_id": saved.cluster_id, "name": saved.name, "host": saved.host}),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(OneCluster {
            ok: true,
            cluster: ClusterView::from(&saved),
        }),
    )
        .into_response())
}

/// Change a cluster (admin). Omitted fields and empty secrets keep their stored values.
#[utoipa::path(put, path = "/api/cluster-config/{db_id}", tag = "clusters", request_body = ClusterInput,
    params(("db_id" = i64, Path, description = "Cluster row id")), security(("bearer" = [])),
    responses((status = 200, body = OneCluster), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    DbId(db_id): DbId,
    body: Bytes,
) -> Result<Json<OneCluster>, ApiError> {
    caller.require_admin()?;
    let input: ClusterInput = parse_json(&body)?;
    let saved = state.clusters.update(db_id, input).await?;
    tracing::info!(cluster = %saved.cluster_id, by = %caller.name, "cluster updated");
    state
        .audit(
            &caller,
            source,
            "cluster.update",
            format!("cluster:{db_id}"),
            json!({"cluster_id": saved.cluster_id, "fields": fields_sent(&body)}),
        )
        .await;
    Ok(Json(OneCluster {
        ok: true,
        cluster: ClusterView::from(&saved),
    }))
}

/// Acknowledgement.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Done {
    ok: bool,
}

/// Remove a cluster (admin). The last cluster cannot be removed.
#[utoipa::path(delete, path = "/api/cluster-config/{db_id}", tag = "clusters",
    params(("db_id" = i64, Path, description = "Cluster row id")), security(("bearer" = [])),
    responses((status = 200, body = Done), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    DbId(db_id): DbId,
) -> Result<Json<Done>, ApiError> {
    caller.require_admin()?;
    state.clusters.delete(db_id).await?;
    tracing::info!(cluster.db_id = db_id, by = %caller.name, "cluster deleted");
    state
        .audit(
            &caller,
            source,
            "cluster.delete",
            format!("cluster:{db_id}"),
            json!(null),
        )
        .await;
    Ok(Json(Done { ok: true }))
}

/// A successful connection test.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TestResult {
    ok: bool,
    message: String,
    #[serde(flatten)]
    report: ConnectionReport,
}

/// What a successful connection test found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectionReport {
    /// Proxmox VE release (`8.4`), as the older lab tool showed it.
    version: String,
    /// Full package version (`8.4.1`).
    full_version: String,
    /// Number of nodes.
    nodes: usize,
    /// Node names, sorted.
    node_names: Vec<String>,
}

impl From<ProbeReport> for ConnectionReport {
    fn from(r: ProbeReport) -> Self {
        ConnectionReport {
            version: r.version,
            full_version: r.full_version,
            nodes: r.node_names.len(),
            node_names: r.node_names,
        }
    }
}

/// The error code of a failed connection test, for the API's error envelope.
fn probe_code(e: &ProbeError) -> &'static str {
    match e {
        ProbeError::NoCredentials(_) => "cluster_no_credentials",
        ProbeError::AuthFailed(_) => "cluster_auth_failed",
        ProbeError::Tls(_) => "cluster_tls_error",
        ProbeError::Unreachable(_) => "cluster_unreachable",
    }
}

/// Test the connection to a cluster (admin): log in, read the version and the nodes. A cluster
/// that cannot be reached or refuses the credentials answers 502 with the reason.
#[utoipa::path(post, path = "/api/cluster-config/{db_id}/test", tag = "clusters",
    params(("db_id" = i64, Path, description = "Cluster row id")), security(("bearer" = [])),
    responses((status = 200, body = TestResult), (status = 404, body = crate::error::ErrorBody),
        (status = 502, body = crate::error::ErrorBody)))]
pub(crate) async fn test(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    DbId(db_id): DbId,
) -> Result<Json<TestResult>, ApiError> {
    caller.require_admin()?;
    let cluster = state.clusters.get(db_id).await?;
    let target = format!("cluster:{db_id}");
    let detail = json!({"cluster_id": cluster.cluster_id});
    // The API's one synchronous hypervisor call, bounded by `PROBE_LIMIT`.
    match state.backends.probe(db_id).await {
        Ok(report) => {
            state
                .audit(&caller, source, "cluster.test", target, detail)
                .await;
            Ok(Json(TestResult {
                ok: true,
                message: "Connection successful".into(),
                report: report.into(),
            }))
        }
        Err(e) => {
            let code = probe_code(&e);
            tracing::info!(cluster = %cluster.cluster_id, error = %e, "cluster connection test failed");
            state
                .audit_outcome(&caller, source, "cluster.test", target, detail, "failed")
                .await;
            Err(ApiError::Upstream {
                message: connection_message(&e),
                code,
            })
        }
    }
}

/// The names (never the values) of the fields a request body carries, for the audit log.
fn fields_sent(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn connection_message(e: &ProbeError) -> String {
    format!("connection failed: {e}")
}
