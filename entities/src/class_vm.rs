//! One VM of a class (its "VM assignment"): where it goes, which VMID it has, how far it got.

use sea_orm::entity::prelude::*;

/// One row of `class_vms`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "class_vms")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub class_id: i64,
    /// The student index (1-based), part of the VM name.
    pub idx: i32,
    pub cluster_db_id: i64,
    /// The node it is (to be) placed on.
    pub node: String,
    /// Its VMID, reserved in `vmid_reservations` before any Proxmox call.
    pub vmid: i64,
    pub name: String,
    /// `planned`, `cloning`, `created`, `starting`, `ready`, `failed`, `deleting`, `missing`.
    pub state: String,
    /// The Proxmox task working on it now (resumed, not restarted, after a crash).
    pub upid: Option<String>,
    /// The last error, with Proxmox's message.
    pub error: Option<String>,
    /// The job that deploys (or destroys) it.
    pub job_id: Option<Uuid>,
    /// The student it belongs to, once assigned.
    pub student: Option<String>,
    /// Never shut down for idleness (a teacher's or admin's choice).
    pub keep_running: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
