//! A storage as one node sees it (a shared storage has one row per node that reaches it).

use sea_orm::entity::prelude::*;

/// One row of `cluster_storages`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_storages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `clusters.id`.
    pub cluster_db_id: i64,
    pub node: String,
    /// Storage id (`local-lvm`, `nfs-shared`).
    pub storage: String,
    /// PVE storage type (`dir`, `nfs`, `lvmthin`, …).
    pub storage_type: String,
    pub shared: bool,
    /// Comma-separated content types (`images,rootdir,iso`).
    pub content: String,
    pub active: bool,
    pub total: Option<i64>,
    pub used: Option<i64>,
    pub synced_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
