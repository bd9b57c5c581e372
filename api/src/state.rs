//! What every handler shares, and the one call that writes the audit log.

use std::sync::Arc;

use labfleet_access::{Authenticator, NewAuditEvent};
use labfleet_clusters::ClusterStore;
use labfleet_config::Settings;
use labfleet_fleet::{BackendFactory, ClassStore};
use labfleet_jobs::{JobStore, Publisher};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{auth::Caller, extract::Source};

/// Shared state of the API (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Jobs.
    pub store: JobStore,
    /// Registered clusters.
    pub clusters: ClusterStore,
    /// The clusters' hypervisors, for the connection test: the one hypervisor call the API
    /// waits for (within `PROBE_LIMIT`, 10 s). Everything else the API shows comes from the
    /// database.
    pub backends: Arc<dyn BackendFactory>,
    /// Classes and their VMs.
    pub classes: ClassStore,
    /// Publishes jobs after commit.
    pub publisher: Publisher,
    /// Settings the process was built from.
    pub settings: Arc<Settings>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Verifies API tokens; owns users, tokens and the audit log (`auth.store()`).
    pub auth: Authenticator,
}

impl AppState {
    /// Records that `caller` did `action` (`cluster.update`) to `target` (`cluster:3`) from
    /// `source`. Never put a secret in `detail`. The action has already happened, so a failure
    /// to write the row is logged and the request still succeeds.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        source: Source,
        action: &str,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) {
        self.audit_outcome(caller, source, action, target, detail, "succeeded")
            .await
    }

    /// Like `audit`, for an action that ended otherwise (`failed`).
    pub(crate) async fn audit_outcome(
        &self,
        caller: &Caller,
        source: Source,
        action: &str,
        target: impl Into<String>,
        detail: serde_json::Value,
        outcome: &str,
    ) {
        let event = NewAuditEvent {
            actor: caller.name.clone(),
            actor_role: caller.role,
            action: action.to_string(),
            target: target.into(),
            detail: (!detail.is_null()).then_some(detail),
            source: source.to_string(),
            outcome: Some(outcome.to_string()),
        };
        if let Err(e) = self.auth.store().record(event).await {
            tracing::error!(action, actor = %caller.name, error = %e, "could not write the audit log");
        }
    }
}
