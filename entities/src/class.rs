//! A class: a teacher's request for N student VMs from one template, on one cluster.

use sea_orm::entity::prelude::*;

/// One row of `classes`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "classes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    /// DNS-safe form of the name, used in VM names.
    pub slug: String,
    pub description: Option<String>,
    /// The user who created it.
    pub owner: String,
    /// `clusters.id` of the cluster it deploys to (chosen once, at creation).
    pub cluster_db_id: i64,
    /// The template's Proxmox VMID.
    pub template_vmid: i64,
    /// `config_clone`, `linked_clone` or `full_clone`.
    pub method: String,
    /// All VMs on this node, when set.
    pub deployment_node: Option<String>,
    /// Power the VMs on once cloned.
    pub start_vms: bool,
    /// How many VMs the class should have.
    pub pool_size: i32,
    /// Idle auto-shutdown threshold for this class's VMs (overrides the cluster's).
    pub idle_cpu_percent: Option<f64>,
    /// Idle auto-shutdown window in minutes (overrides the cluster's).
    pub idle_minutes: Option<i32>,
    /// `active`, `deleting` or `deleted`.
    pub state: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
