//! What an inventory read of a cluster returns: its nodes, the storages each node reaches, its
//! templates with every volume, and its ISO images. The cluster registry stores it; the adapter
//! says how its hypervisor is read.

use std::collections::HashSet;

use labfleet_entities::template::TemplateDisk;

/// Which optional parts to read.
#[derive(Clone, Copy, Debug)]
pub struct InventoryScope {
    /// Read the templates (with their volumes).
    pub templates: bool,
    /// Read the ISO images.
    pub isos: bool,
}

/// A node as seen.
#[derive(Clone, Debug)]
pub struct NodeSeen {
    pub name: String,
    pub online: bool,
    pub ip: Option<String>,
    pub cpus: Option<i32>,
    pub max_mem: Option<i64>,
    /// Running or stopped QEMU VMs and LXC containers, templates excluded.
    pub guests: i32,
}

/// A storage as one node sees it.
#[derive(Clone, Debug)]
pub struct StorageSeen {
    pub node: String,
    pub storage: String,
    pub storage_type: String,
    pub shared: bool,
    pub content: String,
    pub active: bool,
    pub total: Option<i64>,
    pub used: Option<i64>,
}

/// A template as seen, with its volumes.
#[derive(Clone, Debug)]
pub struct TemplateSeen {
    pub vmid: i64,
    pub name: String,
    pub node: String,
    pub volumes: TemplateVolumes,
}

/// Templates as seen.
#[derive(Clone, Debug, Default)]
pub struct TemplatesSeen {
    pub seen: Vec<TemplateSeen>,
    /// Templates listed by the cluster whose config could not be read (node offline).
    pub unreadable: HashSet<i64>,
}

/// An ISO as seen.
#[derive(Clone, Debug)]
pub struct IsoSeen {
    /// Empty for a shared storage.
    pub node: String,
    pub storage: String,
    pub volid: String,
    pub name: String,
    pub size: Option<i64>,
    pub shared: bool,
}

/// ISOs as seen.
#[derive(Clone, Debug, Default)]
pub struct IsosSeen {
    pub seen: Vec<IsoSeen>,
    /// `(node, storage)` locations that exist but could not be listed (`node` empty for shared).
    pub unlisted: HashSet<(String, String)>,
}

/// Everything one sync read.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub nodes: Vec<NodeSeen>,
    pub storages: Vec<StorageSeen>,
    pub templates: Option<TemplatesSeen>,
    pub isos: Option<IsosSeen>,
}

/// A template's volumes with the flags derived from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVolumes {
    /// Every storage-backed drive.
    pub disks: Vec<TemplateDisk>,
    /// Every volume is on shared storage and no host device is attached.
    pub all_shared: bool,
    /// A cloud-init drive is attached.
    pub has_cloudinit: bool,
    /// There is at least one disk and every disk is a qcow2 file on a file storage.
    pub qcow2_files: bool,
}
