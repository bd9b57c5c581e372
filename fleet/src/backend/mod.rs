//! The seam between labfleet and a hypervisor: what labfleet asks of one registered cluster,
//! whatever runs it. An adapter crate implements [`Backend`] (the Proxmox one is
//! `backends/proxmox`); the job handlers, the scheduler and the registry use only this trait,
//! its types and [`BackendError`], so a hypervisor's paths, ids, locks and error text end at its
//! adapter. `docs/backends.md` describes every method and what each adapter does for it.
//!
//! Adding what later features need (snapshots, reconfigure, resize, cloud-init, the guest
//! agent) means adding methods here and in the adapters, not touching the job engine.

mod error;
mod inventory;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use labfleet_entities::cluster;

pub use error::{BackendError, FactoryError, ProbeError};
pub use inventory::{
    InventoryScope, IsoSeen, IsosSeen, NodeSeen, Observation, StorageSeen, TemplateSeen,
    TemplateVolumes, TemplatesSeen,
};
pub use types::{
    Capabilities, CpuSample, CreateRequest, Customization, Expect, Fleet, FleetGuest, FleetNode,
    GuestRef, Inspected, OpState, Operation, OperationInfo, OperationKind, PowerRequest,
    ProbeReport, Progress, SlotKey, SlotQuery, Source,
};

/// One registered cluster's hypervisor.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The create methods it offers and whether labfleet reserves ids for it.
    fn capabilities(&self) -> &Capabilities;

    /// The resources a create touches whose concurrency labfleet caps (no request is made).
    fn slots(&self, query: &SlotQuery<'_>) -> Vec<SlotKey>;

    /// What an operation's handle says (its kind and guest), or `None` for a handle this
    /// backend did not make.
    fn describe(&self, op: &Operation) -> Option<OperationInfo>;

    /// Nodes, guests and templates in one read.
    async fn fleet(&self) -> Result<Fleet, BackendError>;

    /// What sits at `id`, wherever it runs: absent, ours (by `expect`), being made, or foreign.
    async fn inspect(&self, id: &str, expect: Expect) -> Result<Inspected, BackendError>;

    /// Starts making a guest. A taken id is [`BackendError::AlreadyExists`] (here or from the
    /// operation).
    async fn create(&self, request: &CreateRequest) -> Result<Operation, BackendError>;

    /// Starts a power change. A guest already where the action leaves it is
    /// [`BackendError::AlreadyInState`]; a reboot of a stopped guest starts it.
    async fn power(
        &self,
        guest: &GuestRef,
        request: PowerRequest,
    ) -> Result<Operation, BackendError>;

    /// Starts removing a (stopped) guest with its disks. A missing one is
    /// [`BackendError::NotFound`].
    async fn destroy(&self, guest: &GuestRef) -> Result<Operation, BackendError>;

    /// Waits up to `budget` for an operation to end. An `Err` means it could not be asked; how
    /// the operation itself ended is in the [`OpState`].
    async fn wait(
        &self,
        op: &Operation,
        budget: Duration,
        progress: Progress,
    ) -> Result<OpState, BackendError>;

    /// Asks a running operation to stop (a stopped make leaves no guest behind).
    async fn cancel(&self, op: &Operation) -> Result<(), BackendError>;

    /// A guest's CPU use over about the last hour, oldest first (the idle sweep confirms an
    /// idle streak with it).
    async fn cpu_history(&self, guest: &GuestRef) -> Result<Vec<CpuSample>, BackendError>;

    /// Nodes, storages and, as `scope` asks, templates with their volumes and ISO images.
    async fn inventory(&self, scope: InventoryScope) -> Result<Observation, BackendError>;

    /// Logs in and reads the version and the nodes: the registry's connection test.
    async fn probe(&self) -> Result<ProbeReport, ProbeError>;
}

/// How long a connection test may take in all. It is the one hypervisor call the API waits for
/// (the registry's "test" button shows its result), so it is bounded well below an HTTP
/// client's patience.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A registered cluster's row and its backend.
#[derive(Clone)]
pub struct Connected {
    /// The cluster as registered.
    pub cluster: cluster::Model,
    /// Its hypervisor.
    pub backend: Arc<dyn Backend>,
}

/// Builds (and keeps) the backend of each registered cluster from its row and credentials.
#[async_trait]
pub trait BackendFactory: Send + Sync {
    /// The cluster's row and its backend; kept while the row is unchanged, so a backend keeps
    /// its connections and logins.
    async fn connect(&self, cluster_db_id: i64) -> Result<Connected, FactoryError>;

    /// The connection test of a registered cluster, within [`PROBE_LIMIT`].
    async fn probe(&self, cluster_db_id: i64) -> Result<ProbeReport, ProbeError> {
        let test = async {
            let connected = self.connect(cluster_db_id).await.map_err(|e| match e {
                FactoryError::NoCredentials(m) | FactoryError::Unusable(m) => {
                    ProbeError::NoCredentials(m)
                }
                e => ProbeError::Unreachable(e.to_string()),
            })?;
            connected.backend.probe().await
        };
        tokio::time::timeout(PROBE_LIMIT, test)
            .await
            .unwrap_or_else(|_| {
                Err(ProbeError::Unreachable(format!(
                    "no answer within {} s",
                    PROBE_LIMIT.as_secs()
                )))
            })
    }
}
