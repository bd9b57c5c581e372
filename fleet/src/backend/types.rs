//! The words of the seam: guests, operations, what sits at an id, create and power requests,
//! the fleet read, and the concurrency slots a create needs.

use std::{collections::BTreeSet, fmt, time::Duration};

use chrono::{DateTime, Utc};

use labfleet_entities::template::TemplateDisk;
use labfleet_jobs::PowerAction;
use serde::{Deserialize, Serialize};

use crate::{placement::NodeLoad, plan::ClusterSnapshot, BackendError, DeployMethod, Marker};

/// A guest on a cluster: `id` is a VMID for Proxmox ("namespace/name" on another hypervisor);
/// `node` is where it runs, as far as the caller knows (`inspect` and `fleet` say where it is
/// now).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuestRef {
    /// The node it runs on.
    pub node: String,
    /// The hypervisor's id for it.
    pub id: String,
}

impl GuestRef {
    /// A guest with a numeric id (a VMID).
    pub fn numbered(node: impl Into<String>, id: i64) -> GuestRef {
        GuestRef {
            node: node.into(),
            id: id.to_string(),
        }
    }
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.id, self.node)
    }
}

/// An operation in flight, as a string the VM row and job checkpoints keep (a task id for
/// Proxmox). A request that finished at once returns [`Operation::done`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Operation(String);

const DONE: &str = "done";

impl Operation {
    /// An operation the backend names by this handle.
    pub fn new(handle: impl Into<String>) -> Operation {
        Operation(handle.into())
    }

    /// A request that needed no waiting.
    pub fn done() -> Operation {
        Operation(DONE.to_string())
    }

    /// Whether it finished when it was made.
    pub fn is_done(&self) -> bool {
        self.0 == DONE
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an operation does, as far as its handle tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// Makes a guest (a clone, a create).
    Create,
    /// Powers on.
    Start,
    /// Asks the guest to shut down.
    Shutdown,
    /// Stops at once.
    Stop,
    /// Reboots.
    Reboot,
    /// Removes a guest.
    Destroy,
    /// Anything else.
    Other,
}

impl OperationKind {
    /// The kinds a power action's operation may have (a reboot of a stopped guest is a start).
    pub fn of_power(action: PowerAction) -> &'static [OperationKind] {
        match action {
            PowerAction::Start => &[OperationKind::Start],
            PowerAction::Shutdown => &[OperationKind::Shutdown],
            PowerAction::Stop => &[OperationKind::Stop],
            PowerAction::Reboot => &[OperationKind::Reboot, OperationKind::Start],
        }
    }
}

/// What an operation's handle says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationInfo {
    /// What it does.
    pub kind: OperationKind,
    /// The guest it works on, when the handle names one.
    pub guest_id: Option<String>,
}

/// Where an operation is.
#[derive(Clone, Debug, PartialEq)]
pub enum OpState {
    /// Finished and did what it was asked.
    Done,
    /// Still running; `percent` when the backend knows how far (a disk copy).
    Running {
        /// How far, 0–100.
        percent: Option<f32>,
    },
    /// Ended without doing it, with the hypervisor's reason.
    Failed(BackendError),
}

/// Whether a wait should also read how far a running operation is (costs a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Only whether it still runs.
    Skip,
    /// Also how far.
    Read,
}

/// Whose marker `inspect` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The marker of this VM row.
    Vm(i64),
    /// Any labfleet marker (reconciliation looks for VMs no row owns).
    AnyOfOurs,
}

impl Expect {
    /// Whether a marker is the one looked for.
    pub fn accepts(self, marker: &Marker) -> bool {
        match self {
            Expect::Vm(id) => marker.class_vm_id == id,
            Expect::AnyOfOurs => true,
        }
    }
}

/// What sits at an id on the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Inspected {
    /// Nothing.
    Absent,
    /// A guest with the marker looked for.
    Ours {
        /// Where it is now.
        guest: GuestRef,
        /// Its marker.
        marker: Marker,
        /// Its making is still under way.
        in_progress: bool,
        /// It runs.
        running: bool,
    },
    /// A guest still being made whose marker is not written yet: it may be a make of ours whose
    /// record was lost, or someone else's; only its finished state tells, so callers wait and
    /// look again.
    BeingMade,
    /// Something else (another marker, none, or not a VM).
    Foreign {
        /// Where it is.
        guest: GuestRef,
    },
}

/// Where a new guest comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A template.
    Template {
        /// Where the template is.
        guest: GuestRef,
    },
    /// Another guest, optionally as it was at one of its snapshots.
    Guest {
        /// The guest.
        guest: GuestRef,
        /// The snapshot's name.
        snapshot: Option<String>,
    },
}

impl Source {
    /// The guest copied from.
    pub fn guest(&self) -> &GuestRef {
        match self {
            Source::Template { guest } | Source::Guest { guest, .. } => guest,
        }
    }
}

/// How a new guest differs from its source beyond name and marker. Empty for now: the lifecycle
/// work adds fields (cloud-init user, keys, network), not a new create signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Customization {}

/// A guest to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    /// What to copy.
    pub source: Source,
    /// How to copy it.
    pub method: DeployMethod,
    /// The new guest: its node and id.
    pub target: GuestRef,
    /// Where a full copy's disks go (`None`: next to the source's).
    pub storage: Option<String>,
    /// Its name.
    pub name: String,
    /// Free text shown with it (the class description), kept beside the marker.
    pub notes: Option<String>,
    /// Who owns it, written into the guest from its birth.
    pub marker: Marker,
    /// Further changes, if any.
    pub customization: Option<Customization>,
}

/// A power request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerRequest {
    /// What to do.
    pub action: PowerAction,
    /// For a shutdown (and a reboot's shutdown half): how long the guest may take before it is
    /// stopped hard; `None` is the hypervisor's default.
    pub timeout: Option<Duration>,
}

/// What the backend offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The create methods it implements.
    pub methods: &'static [DeployMethod],
    /// Whether labfleet must reserve ids for new guests (the hypervisor does not hand them out).
    pub reserves_ids: bool,
}

/// What a create touches, for the concurrency slots the domain caps.
#[derive(Clone, Debug)]
pub struct SlotQuery<'a> {
    /// How it makes the guest.
    pub method: DeployMethod,
    /// The source's node.
    pub source_node: &'a str,
    /// The source's disks as the inventory knows them.
    pub source_disks: &'a [TemplateDisk],
    /// The new guest's node.
    pub target_node: &'a str,
    /// A full copy's target storage.
    pub target_storage: Option<&'a str>,
}

/// One resource whose concurrency the domain caps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKey {
    /// A node.
    Node(String),
    /// A storage; `node` for storage local to one node (each node has its own lock).
    Storage {
        /// The storage.
        name: String,
        /// Its node, when it is local.
        node: Option<String>,
    },
}

/// A node as the fleet read sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetNode {
    /// Its name.
    pub name: String,
    /// Whether it is up.
    pub online: bool,
}

/// A guest as the fleet read sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetGuest {
    /// Where it is.
    pub guest: GuestRef,
    /// Its name.
    pub name: Option<String>,
    /// A VM (not a container or other kind of guest).
    pub vm: bool,
    /// A template.
    pub template: bool,
    /// It runs.
    pub running: bool,
    /// A change is under way (a lock is held, a make or migration runs).
    pub busy: bool,
    /// Current CPU use as a fraction of its own cores.
    pub cpu: Option<f64>,
}

/// The whole cluster in one read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    /// Its nodes.
    pub nodes: Vec<FleetNode>,
    /// Every guest, templates included.
    pub guests: Vec<FleetGuest>,
}

impl Fleet {
    /// The ids in use, as numbers where they are (VMIDs).
    pub fn numeric_ids(&self) -> BTreeSet<i64> {
        self.guests
            .iter()
            .filter_map(|g| g.guest.id.parse().ok())
            .collect()
    }

    /// The guest with this id.
    pub fn guest(&self, id: &str) -> Option<&FleetGuest> {
        self.guests.iter().find(|g| g.guest.id == id)
    }

    /// What placement and planning need: nodes with their load (guests that run or may run,
    /// templates excluded), the ids in use, the templates and their nodes.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let mut snap = ClusterSnapshot {
            vmids_in_use: self.numeric_ids(),
            ..Default::default()
        };
        let mut guests_per_node = std::collections::HashMap::<&str, u32>::new();
        for g in &self.guests {
            if g.template && g.vm {
                if let Ok(id) = g.guest.id.parse() {
                    snap.templates.push((id, g.guest.node.clone()));
                }
            } else {
                *guests_per_node.entry(g.guest.node.as_str()).or_default() += 1;
            }
        }
        snap.nodes = self
            .nodes
            .iter()
            .map(|n| NodeLoad {
                name: n.name.clone(),
                online: n.online,
                guests: guests_per_node.get(n.name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        snap
    }
}

/// One point of a guest's CPU history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    /// When.
    pub at: DateTime<Utc>,
    /// CPU use as a fraction of the guest's own cores.
    pub cpu: f64,
}

/// What a successful connection test found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    /// The hypervisor's release as its users name it (`8.4`).
    pub version: String,
    /// Its full version (`8.4.1`).
    pub full_version: String,
    /// Node names, sorted.
    pub node_names: Vec<String>,
}
