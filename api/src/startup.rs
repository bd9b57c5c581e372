//! Building the API from its parts and serving it until shutdown. The listener is bound first, so
//! port 0 works and the real address is known before serving.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    http::{Request, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{delete, get, patch, post, put},
    Router,
};
use labfleet_access::{AccessStore, Authenticator};
use labfleet_clusters::ClusterStore;
use labfleet_config::Settings;
use labfleet_jobs::{JobStore, Publisher};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{error::ApiError, openapi, routes, state::AppState, telemetry};

/// A bound, not yet serving, API server.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Application {
    /// Binds `settings.bind` and builds the router. Users, tokens and the audit log live in the
    /// job store's database.
    pub async fn build(
        settings: Arc<Settings>,
        store: JobStore,
        publisher: Publisher,
        clusters: ClusterStore,
        backends: Arc<dyn labfleet_fleet::BackendFactory>,
    ) -> std::io::Result<Application> {
        let listener = tokio::net::TcpListener::bind(settings.bind).await?;
        let auth = Authenticator::new(AccessStore::new(store.db().clone()));
        let state = AppState {
            classes: labfleet_fleet::ClassStore::new(store.db().clone()),
            auth,
            store,
            clusters,
            backends,
            publisher,
            settings,
            prometheus: telemetry::prometheus(),
        };
        Ok(Application {
            listener,
            router: router(state),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight. Each request
    /// knows its peer's address (the audit log's source).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/api/openapi.json", get(openapi::serve))
        .route(
            "/api/jobs",
            get(routes::jobs::list).post(routes::jobs::create),
        )
        .route("/api/jobs/{id}", get(routes::jobs::show))
        .route("/api/jobs/{id}/cancel", post(routes::jobs::cancel))
        .route("/api/jobs/{id}/retry", post(routes::jobs::retry))
        .route(
            "/api/cluster-config",
            get(routes::clusters::list).post(routes::clusters::create),
        )
        .route(
            "/api/cluster-config/{db_id}",
            put(routes::clusters::update).delete(routes::clusters::delete),
        )
        .route("/api/cluster-config/{db_id}/test", post(routes::clusters::test))
        .route(
            "/api/classes",
            get(routes::classes::list).post(routes::classes::create),
        )
        .route(
            "/api/classes/{id}",
            get(routes::classes::show)
                .patch(routes::classes::resize)
                .delete(routes::classes::delete),
        )
        .route(
            "/api/classes/{id}/retry-failed",
            post(routes::classes::retry_failed),
        )
        .route("/api/cluster-config/{db_id}/sync", post(routes::inventory::sync))
        .route("/api/templates", get(routes::inventory::templates))
        .route("/api/isos", get(routes::inventory::isos))
        .route("/api/me", get(routes::users::me))
        .route(
            "/api/users",
            get(routes::users::list).post(routes::users::create),
        )
        .route(
            "/api/users/{id}/tokens",
            get(routes::users::list_tokens).post(routes::users::issue_token),
        )
        .route("/api/tokens/{id}", delete(routes::users::revoke_token))
        .route("/api/audit", get(routes::audit::list))
        .route("/api/scheduler", get(routes::scheduler::status))
        .route("/api/reconcile", get(routes::scheduler::reconcile))
        .route("/api/vms", get(routes::vms::list))
        .route("/api/vms/{id}", get(routes::vms::show))
        .route("/api/vms/{id}/power", post(routes::vms::power))
        .route("/api/classes/{id}/vms/{vm_id}", patch(routes::vms::update))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({
                    "ok": false, "error": "method not allowed on this route", "code": "method_not_allowed"
                })),
            )
        })
        .layer(middleware::from_fn(telemetry::record))
        .layer(
            // The fields are evaluated only when the span is enabled (not at `warn`).
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    matched_path = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("", |p| p.as_str())
                )
            }),
        )
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(state)
}
