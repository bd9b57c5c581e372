//! The inventory of a cluster: its nodes, storages, QEMU templates (with every volume) and ISOs,
//! read through the cluster's backend with few requests and kept in the database for placement
//! and deployment.
//!
//! A sync reads first (`Backend::inventory`; the Proxmox adapter makes one `/cluster/resources`,
//! one `/cluster/status`, one config read per template and one content listing per ISO storage
//! location) and then writes everything in one transaction ([`apply`]). Nodes and storages are a cache and always refreshed; templates are
//! synced only where `allow_template_sync` is on and ISOs only where `allow_iso_sync` is on.
//! Templates and ISOs that a sync no longer sees are marked `gone`, never deleted (classes
//! reference them); those it could not look at (their node is offline) are left as they were.

mod apply;
mod query;
mod view;

use chrono::Utc;
use labfleet_entities::cluster;
use labfleet_fleet::{backend::InventoryScope, Backend, BackendError};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;

pub use query::{Inventory, InventoryFilter};
pub use view::{IsoView, TemplateView};

/// What a sync was asked to refresh besides nodes and storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncScope {
    /// Refresh templates (if the cluster allows template sync).
    pub templates: bool,
    /// Refresh ISOs (if the cluster allows ISO sync).
    pub isos: bool,
}

/// Counts of one kind of synced item (templates or ISOs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ItemCounts {
    /// Seen on the cluster in this sync.
    pub seen: usize,
    /// Seen for the first time.
    pub added: usize,
    /// Seen before, with something changed (or back after being gone).
    pub updated: usize,
    /// No longer on the cluster: marked gone now.
    pub gone: usize,
    /// Could not be looked at (node offline, storage unavailable): left as they were.
    pub kept: usize,
}

/// What a sync did; the result of a `sync_cluster` job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    /// The cluster's `cluster_id`.
    pub cluster: String,
    /// Nodes stored.
    pub nodes: usize,
    /// Offline nodes among them.
    pub offline_nodes: Vec<String>,
    /// Storage rows stored (one per node that reaches a storage).
    pub storages: usize,
    /// Template counts, when templates were synced.
    pub templates: Option<ItemCounts>,
    /// Why templates were not synced.
    pub templates_skipped: Option<String>,
    /// ISO counts, when ISOs were synced.
    pub isos: Option<ItemCounts>,
    /// Why ISOs were not synced.
    pub isos_skipped: Option<String>,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The hypervisor could not be reached or refused a request.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl SyncError {
    /// Whether the same sync may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Backend(e) => e.is_transient(),
            // The database is infrastructure: worth another try.
            SyncError::Db(_) => true,
        }
    }
}

/// Refreshes what labfleet knows about `cluster` from its backend, in one transaction.
pub async fn sync_cluster(
    db: &DatabaseConnection,
    cluster: &cluster::Model,
    backend: &dyn Backend,
    scope: SyncScope,
) -> Result<SyncReport, SyncError> {
    let templates = allowed(
        scope.templates,
        cluster.allow_template_sync,
        "allow_template_sync",
    );
    let isos = allowed(scope.isos, cluster.allow_iso_sync, "allow_iso_sync");
    let seen = backend
        .inventory(InventoryScope {
            templates: templates.is_ok(),
            isos: isos.is_ok(),
        })
        .await?;
    let written = apply::apply(db, cluster.id, &seen, Utc::now()).await?;
    let report = SyncReport {
        cluster: cluster.cluster_id.clone(),
        nodes: seen.nodes.len(),
        offline_nodes: seen
            .nodes
            .iter()
            .filter(|n| !n.online)
            .map(|n| n.name.clone())
            .collect(),
        storages: seen.storages.len(),
        templates: written.templates,
        templates_skipped: templates.err(),
        isos: written.isos,
        isos_skipped: isos.err(),
    };
    tracing::info!(
        cluster = %cluster.cluster_id,
        nodes = report.nodes,
        storages = report.storages,
        templates = ?report.templates,
        isos = ?report.isos,
        "inventory synced"
    );
    Ok(report)
}

/// Whether a part was asked for and the cluster allows it; else why not.
fn allowed(requested: bool, allowed: bool, toggle: &str) -> Result<(), String> {
    match (requested, allowed) {
        (false, _) => Err("not requested".into()),
        (true, false) => Err(format!("{toggle} is off for this cluster")),
        (true, true) => Ok(()),
    }
}
