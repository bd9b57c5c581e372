//! What every handler shares.

use std::sync::Arc;

use labfleet_clusters::ClusterStore;
use labfleet_deploy::ClassStore;
use labfleet_jobs::{JobStore, Publisher, Settings};
use metrics_exporter_prometheus::PrometheusHandle;

/// Shared state of the API (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Jobs.
    pub store: JobStore,
    /// Registered clusters.
    pub clusters: ClusterStore,
    /// Classes and their VMs.
    pub classes: ClassStore,
    /// Publishes jobs after commit.
    pub publisher: Publisher,
    /// Settings the process was built from.
    pub settings: Arc<Settings>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
}
