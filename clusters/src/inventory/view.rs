//! Templates and ISOs as the API lists them: named by their cluster's `cluster_id`.

use chrono::{DateTime, Utc};
use labfleet_entities::{iso, template};
use serde::Serialize;

/// One listed template.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    /// Row id.
    pub id: i64,
    /// The cluster's `cluster_id`.
    pub cluster: String,
    /// Proxmox VMID (a class's `template_id`).
    pub vmid: i64,
    pub name: String,
    /// The node holding the template.
    pub node: String,
    /// Every volume: `{key, volid, storage, storage_type, format, size, shared, cloudinit, iso}`.
    #[schema(value_type = Vec<Object>)]
    pub disks: serde_json::Value,
    /// Every volume is on shared storage: clones may be placed on any node.
    pub all_shared: bool,
    pub has_cloudinit: bool,
    /// Every disk is a qcow2 file on a file storage: `config_clone` works.
    pub config_clone_ok: bool,
    /// No longer on the cluster.
    pub gone: bool,
    pub gone_at: Option<DateTime<Utc>>,
    /// When a sync last saw it.
    pub synced_at: DateTime<Utc>,
}

impl TemplateView {
    /// The view of `t`, which belongs to cluster `cluster`.
    pub fn new(t: template::Model, cluster: String) -> Self {
        TemplateView {
            id: t.id,
            cluster,
            vmid: t.vmid,
            name: t.name,
            node: t.node,
            disks: t.disks,
            all_shared: t.all_shared,
            has_cloudinit: t.has_cloudinit,
            config_clone_ok: t.qcow2_files,
            gone: t.gone,
            gone_at: t.gone_at,
            synced_at: t.synced_at,
        }
    }
}

/// One listed ISO.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IsoView {
    /// Row id.
    pub id: i64,
    /// The cluster's `cluster_id`.
    pub cluster: String,
    /// The node it is on; empty for a shared storage (every node reaches it).
    pub node: String,
    pub storage: String,
    /// Volume id (`local:iso/debian-12.iso`), as a VM config names it.
    pub volid: String,
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: Option<i64>,
    pub shared: bool,
    pub gone: bool,
    pub gone_at: Option<DateTime<Utc>>,
    pub synced_at: DateTime<Utc>,
}

impl IsoView {
    /// The view of `i`, which belongs to cluster `cluster`.
    pub fn new(i: iso::Model, cluster: String) -> Self {
        IsoView {
            id: i.id,
            cluster,
            node: i.node,
            storage: i.storage,
            volid: i.volid,
            name: i.name,
            size: i.size,
            shared: i.shared,
            gone: i.gone,
            gone_at: i.gone_at,
            synced_at: i.synced_at,
        }
    }
}
