//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up")))]
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({ "ok": true }))
}

/// The database and the broker are reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is down")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let limit = Duration::from_secs(2);
    let db = matches!(
        tokio::time::timeout(limit, state.store.ping()).await,
        Ok(Ok(()))
    );
    let broker = tokio::time::timeout(limit, state.publisher.queue().is_ready())
        .await
        .unwrap_or(false);
    let up = |b: bool| if b { "up" } else { "down" };
    let status = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ok": db && broker, "database": up(db), "broker": up(broker) });
    if !(db && broker) {
        body["error"] = json!("a dependency is unavailable");
        body["code"] = json!("unavailable");
    }
    (status, Json(body))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Proxmox tasks in flight per node and storage, across every worker (the slots in the
    // database); left as last seen when the database does not answer.
    if let Ok(Ok(slots)) = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        labfleet_fleet::Slots::in_use(state.store.db()),
    )
    .await
    {
        for (resource, held) in slots {
            metrics::gauge!("labfleet_proxmox_tasks_in_flight", "resource" => resource)
                .set(held as f64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.prometheus.render(),
    )
}
