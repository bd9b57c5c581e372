//! Reading the stored inventory: what the deploy code places clones with (a template's volumes,
//! a cluster's nodes and storages) and what the API lists.

use labfleet_entities::{cluster_node, cluster_storage, iso, template};
use labfleet_fleet::Backend;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

use super::{sync_cluster, SyncError, SyncReport, SyncScope};

/// Which templates or ISOs to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InventoryFilter {
    /// Only this cluster (`clusters.id`).
    pub cluster_db_id: Option<i64>,
    /// Also those no longer on their cluster.
    pub include_gone: bool,
}

/// The stored inventory of every cluster.
#[derive(Clone)]
pub struct Inventory {
    db: DatabaseConnection,
}

impl Inventory {
    /// The inventory kept in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Inventory { db }
    }

    /// Refreshes one cluster (see [`sync_cluster`]).
    pub async fn sync(
        &self,
        cluster: &labfleet_entities::cluster::Model,
        backend: &dyn Backend,
        scope: SyncScope,
    ) -> Result<SyncReport, SyncError> {
        sync_cluster(&self.db, cluster, backend, scope).await
    }

    /// A cluster's template by VMID (also when gone: the caller decides what that means).
    pub async fn template(
        &self,
        cluster_db_id: i64,
        vmid: i64,
    ) -> Result<Option<template::Model>, DbErr> {
        template::Entity::find()
            .filter(template::Column::ClusterDbId.eq(cluster_db_id))
            .filter(template::Column::Vmid.eq(vmid))
            .one(&self.db)
            .await
    }

    /// A cluster's nodes, by name.
    pub async fn nodes(&self, cluster_db_id: i64) -> Result<Vec<cluster_node::Model>, DbErr> {
        cluster_node::Entity::find()
            .filter(cluster_node::Column::ClusterDbId.eq(cluster_db_id))
            .order_by_asc(cluster_node::Column::Node)
            .all(&self.db)
            .await
    }

    /// A cluster's storages, one row per node that reaches each, by node then storage.
    pub async fn storages(&self, cluster_db_id: i64) -> Result<Vec<cluster_storage::Model>, DbErr> {
        cluster_storage::Entity::find()
            .filter(cluster_storage::Column::ClusterDbId.eq(cluster_db_id))
            .order_by_asc(cluster_storage::Column::Node)
            .order_by_asc(cluster_storage::Column::Storage)
            .all(&self.db)
            .await
    }

    /// Templates, by cluster then VMID.
    pub async fn templates(&self, f: InventoryFilter) -> Result<Vec<template::Model>, DbErr> {
        let mut q = template::Entity::find();
        if let Some(id) = f.cluster_db_id {
            q = q.filter(template::Column::ClusterDbId.eq(id));
        }
        if !f.include_gone {
            q = q.filter(template::Column::Gone.eq(false));
        }
        q.order_by_asc(template::Column::ClusterDbId)
            .order_by_asc(template::Column::Vmid)
            .all(&self.db)
            .await
    }

    /// ISOs, by cluster, node (shared ones first) and volume id.
    pub async fn isos(&self, f: InventoryFilter) -> Result<Vec<iso::Model>, DbErr> {
        let mut q = iso::Entity::find();
        if let Some(id) = f.cluster_db_id {
            q = q.filter(iso::Column::ClusterDbId.eq(id));
        }
        if !f.include_gone {
            q = q.filter(iso::Column::Gone.eq(false));
        }
        q.order_by_asc(iso::Column::ClusterDbId)
            .order_by_asc(iso::Column::Node)
            .order_by_asc(iso::Column::Volid)
            .all(&self.db)
            .await
    }
}
