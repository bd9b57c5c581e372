//! The Proxmox VE adapter: [`ProxmoxBackend`] implements labfleet's `Backend` trait with the REST
//! client (and, for config clones, the SSH pool) of `labfleet-proxmox`; [`ProxmoxBackends`]
//! builds one per registered cluster and keeps it while the cluster's row is unchanged.
//! Everything Proxmox-specific the rest of labfleet used to know — paths, parameters, UPIDs,
//! locks, PVE's error text, the marker's place in the description — ends here.

mod config_clone;
mod connection;
mod errors;
mod factory;
mod inventory;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use labfleet_fleet::{
    backend::{
        Capabilities, CpuSample, CreateRequest, Expect, Fleet, FleetGuest, FleetNode, GuestRef,
        Inspected, InventoryScope, Observation, OpState, Operation, OperationInfo, OperationKind,
        PowerRequest, ProbeError, ProbeReport, Progress, SlotKey, SlotQuery, Source,
    },
    Backend, BackendError, DeployMethod, Marker,
};
use labfleet_jobs::PowerAction;
use labfleet_proxmox::{
    ssh::SshPool, CloneParams, Consolidation, DestroyParams, ProxmoxClient, ProxmoxError,
    ResourceType, ShutdownParams, StartParams, StopParams, Timeframe, Upid,
};
use tokio::sync::Mutex;

pub use connection::client_for;
pub use factory::{ProxmoxBackends, Tuning};

use crate::{config_clone::ConfigClone, errors::classify};

/// What a Proxmox cluster offers: every create method, and VMIDs that labfleet reserves itself
/// (PVE's `nextid` is racy).
const CAPABILITIES: Capabilities = Capabilities {
    methods: &DeployMethod::ALL,
    reserves_ids: true,
};

/// One registered Proxmox cluster.
pub struct ProxmoxBackend {
    client: ProxmoxClient,
    /// The SSH pool for its nodes, or why there is none (no SSH credentials stored).
    ssh: Result<Arc<SshPool>, String>,
    ssh_port: u16,
    ssh_host_key_fingerprint: Option<String>,
    tuning: Tuning,
    /// Node name → cluster address, read from `/cluster/status` when a node is first needed.
    node_ips: Mutex<HashMap<String, String>>,
}

impl ProxmoxBackend {
    /// A backend over a client; config clones also need [`ProxmoxBackend::with_ssh`].
    pub fn new(client: ProxmoxClient, tuning: Tuning) -> ProxmoxBackend {
        ProxmoxBackend {
            client,
            ssh: Err("no SSH credentials are stored for this cluster".into()),
            ssh_port: 22,
            ssh_host_key_fingerprint: None,
            tuning,
            node_ips: Mutex::default(),
        }
    }

    /// Adds the SSH pool config clones use (or why there is none), the nodes' SSH port and the
    /// pinned host key.
    pub fn with_ssh(
        mut self,
        pool: Result<Arc<SshPool>, String>,
        port: u16,
        host_key_fingerprint: Option<String>,
    ) -> ProxmoxBackend {
        self.ssh = pool;
        self.ssh_port = port;
        self.ssh_host_key_fingerprint = host_key_fingerprint;
        self
    }

    /// The REST client (for the cluster registry's own reads in this crate's factory).
    pub fn client(&self) -> &ProxmoxClient {
        &self.client
    }

    fn ssh(&self) -> Result<Arc<SshPool>, BackendError> {
        self.ssh.clone().map_err(BackendError::Permanent)
    }

    /// A node's cluster address, for SSH.
    async fn node_ip(&self, node: &str) -> Result<String, BackendError> {
        let mut ips = self.node_ips.lock().await;
        if let Some(ip) = ips.get(node) {
            return Ok(ip.clone());
        }
        let status = self.client.cluster_status().await.map_err(classify)?;
        for entry in status.into_iter().filter(|e| e.kind == "node") {
            if let Some(ip) = entry.ip {
                ips.insert(entry.name, ip);
            }
        }
        ips.get(node).cloned().ok_or_else(|| {
            BackendError::Permanent(format!(
                "the cluster does not list an address for node `{node}`"
            ))
        })
    }

    async fn start(&self, guest: &GuestRef, id: u32) -> Result<Upid, ProxmoxError> {
        self.client
            .qemu_start(&guest.node, id, &StartParams::default())
            .await
    }
}

/// A guest's VMID.
fn vmid(guest: &GuestRef) -> Result<u32, BackendError> {
    guest
        .id
        .parse()
        .map_err(|_| BackendError::Permanent(format!("`{}` is not a Proxmox VMID", guest.id)))
}

fn operation(upid: Upid) -> Operation {
    Operation::new(upid.to_string())
}

fn upid_of(op: &Operation) -> Result<Upid, BackendError> {
    Upid::parse(op.as_str())
        .map_err(|_| BackendError::Permanent(format!("`{op}` is not a Proxmox task id")))
}

#[async_trait]
impl Backend for ProxmoxBackend {
    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    /// The new VM's node for every method, plus every storage whose lock the clone takes: the
    /// template's disk storages for a linked clone (each disk is cloned under the lock), the
    /// target storage for a full copy, and the cloud-init drive's storage for every method (it
    /// is allocated anew). A local storage is locked per node, a shared one cluster-wide.
    fn slots(&self, q: &SlotQuery<'_>) -> Vec<SlotKey> {
        let mut keys = vec![SlotKey::Node(q.target_node.to_string())];
        let storage = |name: &str, shared: bool, node: &str| SlotKey::Storage {
            name: name.to_string(),
            node: (!shared).then(|| node.to_string()),
        };
        for disk in q.source_disks.iter().filter(|d| !d.iso) {
            let needs_lock = match q.method {
                DeployMethod::LinkedClone => true,
                DeployMethod::FullClone | DeployMethod::ConfigClone => disk.cloudinit,
            };
            if needs_lock {
                keys.push(storage(&disk.storage, disk.shared, q.source_node));
            }
        }
        if let (DeployMethod::FullClone, Some(target)) = (q.method, q.target_storage) {
            let shared = q
                .source_disks
                .iter()
                .any(|d| d.storage == target && d.shared);
            keys.push(storage(target, shared, q.target_node));
        }
        keys
    }

    fn describe(&self, op: &Operation) -> Option<OperationInfo> {
        let upid = Upid::parse(op.as_str()).ok()?;
        let kind = match upid.task_type.as_str() {
            "qmclone" | "qmcreate" => OperationKind::Create,
            "qmstart" => OperationKind::Start,
            "qmshutdown" => OperationKind::Shutdown,
            "qmstop" => OperationKind::Stop,
            "qmreboot" => OperationKind::Reboot,
            "qmdestroy" => OperationKind::Destroy,
            _ => OperationKind::Other,
        };
        // A clone's task id is its SOURCE vmid, so it names no new guest.
        let guest_id =
            (kind != OperationKind::Create && !upid.id.is_empty()).then(|| upid.id.clone());
        Some(OperationInfo { kind, guest_id })
    }

    /// One unfiltered `/cluster/resources` read: node rows, and a row per VM and container.
    async fn fleet(&self) -> Result<Fleet, BackendError> {
        let resources = self
            .client
            .cluster_resources(None)
            .await
            .map_err(classify)?;
        let mut fleet = Fleet::default();
        for r in resources {
            match r.kind.as_str() {
                "node" => {
                    if let Some(name) = r.node {
                        fleet.nodes.push(FleetNode {
                            online: r.status.as_deref() == Some("online"),
                            name,
                        });
                    }
                }
                "qemu" | "lxc" => {
                    let (Some(id), Some(node)) = (r.vmid, r.node) else {
                        continue;
                    };
                    fleet.guests.push(FleetGuest {
                        guest: GuestRef::numbered(node, i64::from(id)),
                        name: r.name,
                        vm: r.kind == "qemu",
                        template: r.template == Some(true),
                        running: r.status.as_deref() == Some("running"),
                        busy: r.lock.is_some(),
                        cpu: r.cpu,
                    });
                }
                _ => {}
            }
        }
        Ok(fleet)
    }

    /// Finds the VMID on any node (`/cluster/resources?type=vm`), then reads its config for the
    /// marker line and the lock. While a clone copies, PVE keeps a placeholder config (`lock:
    /// clone`, no description) and writes the real one only at the end: that is `BeingMade`.
    async fn inspect(&self, id: &str, expect: Expect) -> Result<Inspected, BackendError> {
        let resources = self
            .client
            .cluster_resources(Some(ResourceType::Vm))
            .await
            .map_err(classify)?;
        let Some(entry) = resources
            .iter()
            .find(|r| r.vmid.map(|v| v.to_string()).as_deref() == Some(id))
        else {
            return Ok(Inspected::Absent);
        };
        let guest = GuestRef {
            node: entry.node.clone().unwrap_or_default(),
            id: id.to_string(),
        };
        if entry.kind != "qemu" {
            return Ok(Inspected::Foreign { guest });
        }
        let config = match self
            .client
            .qemu_config(&guest.node, vmid(&guest)?, false, None)
            .await
        {
            Ok(c) => c,
            // Gone between the two reads (a clone that failed and was cleaned up).
            Err(e) if e.is_not_found() => return Ok(Inspected::Absent),
            Err(e) => return Err(classify(e)),
        };
        let marker = config
            .get("description")
            .and_then(|d| Marker::parse(&d))
            .filter(|m| expect.accepts(m));
        let lock = config.lock().or_else(|| entry.lock.clone());
        let in_progress = matches!(lock.as_deref(), Some("clone" | "create"));
        Ok(match marker {
            Some(marker) => Inspected::Ours {
                guest,
                marker,
                in_progress,
                running: entry.status.as_deref() == Some("running"),
            },
            None if in_progress => Inspected::BeingMade,
            None => Inspected::Foreign { guest },
        })
    }

    /// Linked and full clones are PVE's `clone` (with `target` when the new VM goes to another
    /// node, `snapname` for a snapshot source); a config clone makes qcow2 overlays over SSH and
    /// creates the VM with a copy of the template's config.
    async fn create(&self, req: &CreateRequest) -> Result<Operation, BackendError> {
        let description = req.marker.description(req.notes.as_deref());
        let source = req.source.guest();
        let newid = vmid(&req.target)?;
        let mut params = match req.method {
            DeployMethod::LinkedClone => CloneParams::linked(newid),
            DeployMethod::FullClone => {
                let params = CloneParams::full(newid);
                match &req.storage {
                    Some(storage) => params.storage(storage.clone()),
                    None => params,
                }
            }
            DeployMethod::ConfigClone => {
                if !matches!(req.source, Source::Template { .. }) {
                    return Err(BackendError::Permanent(
                        "a config clone is made from a template only".into(),
                    ));
                }
                let upid = ConfigClone {
                    backend: self,
                    template: source,
                    target: &req.target,
                    name: &req.name,
                    description,
                }
                .create()
                .await?;
                return Ok(operation(upid));
            }
        }
        .name(req.name.clone())
        .description(description);
        if let Source::Guest {
            snapshot: Some(snapshot),
            ..
        } = &req.source
        {
            params.snapname = Some(snapshot.clone());
        }
        if req.target.node != source.node {
            params = params.target(req.target.node.clone());
        }
        self.client
            .qemu_clone(&source.node, vmid(source)?, &params)
            .await
            .map(operation)
            .map_err(classify)
    }

    /// Reads the live power state first (`status/current`), so a repeated request is
    /// `AlreadyInState` without a task; a reboot of a stopped VM starts it. A shutdown stops the
    /// VM hard when the guest ignores it past the timeout.
    async fn power(
        &self,
        guest: &GuestRef,
        request: PowerRequest,
    ) -> Result<Operation, BackendError> {
        let id = vmid(guest)?;
        let running = self
            .client
            .qemu_status(&guest.node, id)
            .await
            .map_err(classify)?
            .is_running();
        let timeout = request
            .timeout
            .map(|t| u32::try_from(t.as_secs().max(1)).unwrap_or(u32::MAX));
        let already = |state: &str| {
            Err(BackendError::AlreadyInState(format!(
                "VM {id} on {} is already {state}",
                guest.node
            )))
        };
        let sent = match (request.action, running) {
            (PowerAction::Start, true) => return already("running"),
            (PowerAction::Shutdown | PowerAction::Stop, false) => return already("stopped"),
            (PowerAction::Start | PowerAction::Reboot, false) => self.start(guest, id).await,
            (PowerAction::Reboot, true) => {
                match self.client.qemu_reboot(&guest.node, id, timeout).await {
                    // Stopped between the look and the request.
                    Err(e) if e.to_string().contains("not running") => self.start(guest, id).await,
                    other => other,
                }
            }
            (PowerAction::Shutdown, true) => {
                let params = ShutdownParams {
                    force_stop: Some(true),
                    timeout,
                    ..Default::default()
                };
                self.client.qemu_shutdown(&guest.node, id, &params).await
            }
            (PowerAction::Stop, true) => {
                self.client
                    .qemu_stop(&guest.node, id, &StopParams::default())
                    .await
            }
        };
        sent.map(operation).map_err(classify)
    }

    /// `DELETE` with `purge` and `destroy-unreferenced-disks`, so no volume of the VMID is left.
    async fn destroy(&self, guest: &GuestRef) -> Result<Operation, BackendError> {
        let params = DestroyParams {
            purge: Some(true),
            destroy_unreferenced_disks: Some(true),
            ..Default::default()
        };
        self.client
            .qemu_delete(&guest.node, vmid(guest)?, &params)
            .await
            .map(operation)
            .map_err(classify)
    }

    /// Polls the task's status (at most `task_poll_max` apart) until it ends or the budget is
    /// spent; with `Progress::Read`, a running task's copy progress comes from its log
    /// (`transferred … (42.0%)`, full clones).
    async fn wait(
        &self,
        op: &Operation,
        budget: Duration,
        progress: Progress,
    ) -> Result<OpState, BackendError> {
        if op.is_done() {
            return Ok(OpState::Done);
        }
        let upid = upid_of(op)?;
        match self
            .client
            .wait_task_polling(&upid, budget, self.tuning.task_poll_max)
            .await
        {
            Ok(_) => Ok(OpState::Done),
            Err(ProxmoxError::TaskTimeout { .. }) => {
                let percent = match progress {
                    Progress::Skip => None,
                    Progress::Read => match self.client.task_progress(&upid).await {
                        Ok(p) => p.map(|p| p.percent as f32),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not read the task's progress");
                            None
                        }
                    },
                };
                Ok(OpState::Running { percent })
            }
            Err(e @ ProxmoxError::TaskFailed { .. }) => Ok(OpState::Failed(classify(e))),
            Err(e) => Err(classify(e)),
        }
    }

    async fn cancel(&self, op: &Operation) -> Result<(), BackendError> {
        if op.is_done() {
            return Ok(());
        }
        self.client.task_stop(&upid_of(op)?).await.map_err(classify)
    }

    /// The hour's RRD data, averaged (`rrddata?timeframe=hour&cf=AVERAGE`).
    async fn cpu_history(&self, guest: &GuestRef) -> Result<Vec<CpuSample>, BackendError> {
        let points = self
            .client
            .qemu_rrddata(
                &guest.node,
                vmid(guest)?,
                Timeframe::Hour,
                Some(Consolidation::Average),
            )
            .await
            .map_err(classify)?;
        Ok(points
            .iter()
            .filter_map(|p| {
                Some(CpuSample {
                    at: chrono::DateTime::from_timestamp(p.time as i64, 0)?,
                    cpu: p.cpu?,
                })
            })
            .collect())
    }

    /// One `/cluster/resources` and one `/cluster/status` read, then one config read per
    /// template and one content listing per ISO storage location.
    async fn inventory(&self, scope: InventoryScope) -> Result<Observation, BackendError> {
        inventory::observe(&self.client, scope)
            .await
            .map_err(classify)
    }

    async fn probe(&self) -> Result<ProbeReport, ProbeError> {
        connection::probe(&self.client).await
    }
}
