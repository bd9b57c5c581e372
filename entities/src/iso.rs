//! An ISO image on a cluster storage, as last seen by the ISO sync.

use sea_orm::entity::prelude::*;

/// One row of `isos`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "isos")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `clusters.id`.
    pub cluster_db_id: i64,
    /// The node it was listed on; empty for a shared storage (reachable from every node).
    pub node: String,
    pub storage: String,
    /// Volume id (`local:iso/ubuntu-24.04.iso`).
    pub volid: String,
    /// File name (`ubuntu-24.04.iso`).
    pub name: String,
    pub size: Option<i64>,
    pub shared: bool,
    pub gone: bool,
    pub gone_at: Option<DateTimeUtc>,
    pub first_seen_at: DateTimeUtc,
    pub synced_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
