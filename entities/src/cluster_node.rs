//! A node of a registered cluster, as last seen by the inventory sync.

use sea_orm::entity::prelude::*;

/// One row of `cluster_nodes`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_nodes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `clusters.id`.
    pub cluster_db_id: i64,
    /// Node name (`pve1`).
    pub node: String,
    /// Whether the node answered as online.
    pub online: bool,
    /// Cluster-network address (from `/cluster/status`), used for SSH.
    pub ip: Option<String>,
    /// CPU threads.
    pub cpus: Option<i32>,
    /// Memory in bytes.
    pub max_mem: Option<i64>,
    /// QEMU VMs + LXC containers on the node (placement load).
    pub guests: i32,
    pub synced_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
