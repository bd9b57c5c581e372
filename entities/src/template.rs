//! A QEMU template of a cluster, with its volumes, as last seen by the template sync.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One row of `templates`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "templates")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `clusters.id`.
    pub cluster_db_id: i64,
    /// The template's Proxmox VMID (the `template_id` of a class).
    pub vmid: i64,
    pub name: String,
    /// The node whose config holds the template.
    pub node: String,
    /// Every volume of the template (`Vec<TemplateDisk>` as JSON).
    pub disks: Json,
    /// Every volume is on shared storage: clones may go to any node.
    pub all_shared: bool,
    pub has_cloudinit: bool,
    /// Every disk is a qcow2 file on a file storage (dir, NFS, …): `config_clone` is possible.
    pub qcow2_files: bool,
    /// No longer on the cluster (kept while classes reference it).
    pub gone: bool,
    pub gone_at: Option<DateTimeUtc>,
    pub first_seen_at: DateTimeUtc,
    pub synced_at: DateTimeUtc,
}

/// One volume of a template: a disk, its cloud-init drive or an attached ISO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDisk {
    /// Config key (`scsi0`, `ide2`, `efidisk0`, …).
    pub key: String,
    /// Volume id (`nfs-shared:104/base-104-disk-0.qcow2`).
    pub volid: String,
    /// Storage id (`nfs-shared`).
    pub storage: String,
    /// PVE storage type (`nfs`, `dir`, `lvmthin`, …), when known.
    pub storage_type: Option<String>,
    /// Image format (`qcow2`, `raw`), when known.
    pub format: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<i64>,
    /// Whether the storage is shared between nodes.
    pub shared: bool,
    /// A cloud-init drive.
    pub cloudinit: bool,
    /// A CD-ROM with an ISO.
    pub iso: bool,
}

impl Model {
    /// The template's volumes; a row with unreadable JSON has none.
    pub fn disk_list(&self) -> Vec<TemplateDisk> {
        serde_json::from_value(self.disks.clone()).unwrap_or_default()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
