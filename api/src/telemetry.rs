//! Request metrics and the Prometheus recorder (installed once per process).

use std::{
    collections::HashSet,
    sync::{OnceLock, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics::SharedString;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder; the first call installs it.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours then renders nothing, which is
            // better than refusing to start.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts requests and records their duration by route and status. The label values are
/// `'static` (route templates and status codes are few, so each is interned once): recording
/// allocates no strings per request.
pub(crate) async fn record(req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| intern(p.as_str()));
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = intern(response.status().as_str());
    metrics::counter!("labfleet_http_requests_total", "method" => method.clone(), "path" => path, "status" => status)
        .increment(1);
    metrics::histogram!("labfleet_http_request_duration_seconds", "method" => method, "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: borrowed for the standard ones, a copy for any other (not interned:
/// clients choose those).
fn method_label(method: &Method) -> SharedString {
    let known = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return SharedString::from_owned(method.as_str().to_owned()),
    };
    SharedString::const_str(known)
}

/// A `'static` copy of a label value, made once per distinct value. Only bounded sets reach it:
/// the router's route templates and status codes.
fn intern(value: &str) -> &'static str {
    static SEEN: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(found) = seen.read().ok().and_then(|s| s.get(value).copied()) {
        return found;
    }
    let mut seen = match seen.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(found) = seen.get(value) {
        return found;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}
