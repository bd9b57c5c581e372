//! Writing one observation of a cluster in one transaction. Rows are matched by their natural
//! keys (node; node + storage; vmid; node + volid), so a sync updates in place; inserts are
//! upserts, so two syncs of one cluster racing each other cannot fail on the unique indexes.
//! Everything here is plain SeaORM and runs on SQLite and PostgreSQL alike.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use labfleet_entities::{cluster_node, cluster_storage, iso, template};
use sea_orm::{
    sea_query::{Expr, OnConflict, SimpleExpr},
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    TransactionTrait,
};

use super::{
    observe::{IsosSeen, NodeSeen, Observation, StorageSeen, TemplatesSeen},
    ItemCounts,
};

/// Counts of what was written.
pub(crate) struct Written {
    pub templates: Option<ItemCounts>,
    pub isos: Option<ItemCounts>,
}

/// Stores `seen` for cluster `cluster_db_id`.
pub(crate) async fn apply(
    db: &DatabaseConnection,
    cluster_db_id: i64,
    seen: &Observation,
    now: DateTime<Utc>,
) -> Result<Written, DbErr> {
    let txn = db.begin().await?;
    write_nodes(&txn, cluster_db_id, &seen.nodes, now).await?;
    write_storages(&txn, cluster_db_id, &seen.storages, now).await?;
    let templates = match &seen.templates {
        Some(t) => Some(write_templates(&txn, cluster_db_id, t, now).await?),
        None => None,
    };
    let isos = match &seen.isos {
        Some(i) => Some(write_isos(&txn, cluster_db_id, i, now).await?),
        None => None,
    };
    txn.commit().await?;
    Ok(Written { templates, isos })
}

async fn write_nodes<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    nodes: &[NodeSeen],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    use cluster_node::Column as N;
    let existing = cluster_node::Entity::find()
        .filter(N::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?;
    let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let stale = existing
        .iter()
        .filter(|r| !names.contains(r.node.as_str()))
        .map(|r| r.id);
    delete_ids::<cluster_node::Entity, _>(c, N::Id, stale.collect()).await?;
    if nodes.is_empty() {
        return Ok(());
    }
    let rows = nodes.iter().map(|n| cluster_node::ActiveModel {
        id: NotSet,
        cluster_db_id: Set(cluster_db_id),
        node: Set(n.name.clone()),
        online: Set(n.online),
        ip: Set(n.ip.clone()),
        cpus: Set(n.cpus),
        max_mem: Set(n.max_mem),
        guests: Set(n.guests),
        synced_at: Set(now),
    });
    cluster_node::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([N::ClusterDbId, N::Node])
                .update_columns([N::Online, N::Ip, N::Cpus, N::MaxMem, N::Guests, N::SyncedAt])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}

async fn write_storages<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    storages: &[StorageSeen],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    use cluster_storage::Column as S;
    let existing = cluster_storage::Entity::find()
        .filter(S::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?;
    let keys: HashSet<(&str, &str)> = storages
        .iter()
        .map(|s| (s.node.as_str(), s.storage.as_str()))
        .collect();
    let stale = existing
        .iter()
        .filter(|r| !keys.contains(&(r.node.as_str(), r.storage.as_str())))
        .map(|r| r.id);
    delete_ids::<cluster_storage::Entity, _>(c, S::Id, stale.collect()).await?;
    if storages.is_empty() {
        return Ok(());
    }
    let rows = storages.iter().map(|s| cluster_storage::ActiveModel {
        id: NotSet,
        cluster_db_id: Set(cluster_db_id),
        node: Set(s.node.clone()),
        storage: Set(s.storage.clone()),
        storage_type: Set(s.storage_type.clone()),
        shared: Set(s.shared),
        content: Set(s.content.clone()),
        active: Set(s.active),
        total: Set(s.total),
        used: Set(s.used),
        synced_at: Set(now),
    });
    cluster_storage::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([S::ClusterDbId, S::Node, S::Storage])
                .update_columns([
                    S::StorageType,
                    S::Shared,
                    S::Content,
                    S::Active,
                    S::Total,
                    S::Used,
                    S::SyncedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}

async fn write_templates<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    t: &TemplatesSeen,
    now: DateTime<Utc>,
) -> Result<ItemCounts, DbErr> {
    use template::Column as T;
    let existing: HashMap<i64, template::Model> = template::Entity::find()
        .filter(T::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?
        .into_iter()
        .map(|m| (m.vmid, m))
        .collect();
    let mut counts = ItemCounts {
        seen: t.seen.len(),
        kept: t.unreadable.len(),
        ..Default::default()
    };
    let mut unchanged = Vec::new();
    for s in &t.seen {
        let disks = serde_json::to_value(&s.volumes.disks)
            .map_err(|e| DbErr::Custom(format!("template {} disks: {e}", s.vmid)))?;
        match existing.get(&s.vmid) {
            Some(row)
                if !row.gone
                    && row.name == s.name
                    && row.node == s.node
                    && row.disks == disks
                    && row.all_shared == s.volumes.all_shared
                    && row.has_cloudinit == s.volumes.has_cloudinit
                    && row.qcow2_files == s.volumes.qcow2_files =>
            {
                unchanged.push(row.id);
            }
            Some(row) => {
                let mut am: template::ActiveModel = row.clone().into();
                am.name = Set(s.name.clone());
                am.node = Set(s.node.clone());
                am.disks = Set(disks);
                am.all_shared = Set(s.volumes.all_shared);
                am.has_cloudinit = Set(s.volumes.has_cloudinit);
                am.qcow2_files = Set(s.volumes.qcow2_files);
                am.gone = Set(false);
                am.gone_at = Set(None);
                am.synced_at = Set(now);
                am.update(c).await?;
                counts.updated += 1;
            }
            None => {
                let row = template::ActiveModel {
                    id: NotSet,
                    cluster_db_id: Set(cluster_db_id),
                    vmid: Set(s.vmid),
                    name: Set(s.name.clone()),
                    node: Set(s.node.clone()),
                    disks: Set(disks),
                    all_shared: Set(s.volumes.all_shared),
                    has_cloudinit: Set(s.volumes.has_cloudinit),
                    qcow2_files: Set(s.volumes.qcow2_files),
                    gone: Set(false),
                    gone_at: Set(None),
                    first_seen_at: Set(now),
                    synced_at: Set(now),
                };
                template::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([T::ClusterDbId, T::Vmid])
                            .update_columns([
                                T::Name,
                                T::Node,
                                T::Disks,
                                T::AllShared,
                                T::HasCloudinit,
                                T::Qcow2Files,
                                T::Gone,
                                T::GoneAt,
                                T::SyncedAt,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(c)
                    .await?;
                counts.added += 1;
            }
        }
    }
    let seen_at = [(T::SyncedAt, Expr::value(now))];
    update_ids::<template::Entity, _>(c, T::Id, unchanged, &seen_at).await?;
    let seen: HashSet<i64> = t.seen.iter().map(|s| s.vmid).collect();
    let gone: Vec<i64> = existing
        .values()
        .filter(|r| !r.gone && !seen.contains(&r.vmid) && !t.unreadable.contains(&r.vmid))
        .map(|r| r.id)
        .collect();
    counts.gone = gone.len();
    let gone_now = [
        (T::Gone, Expr::value(true)),
        (T::GoneAt, Expr::value(Some(now))),
    ];
    update_ids::<template::Entity, _>(c, T::Id, gone, &gone_now).await?;
    Ok(counts)
}

async fn write_isos<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    i: &IsosSeen,
    now: DateTime<Utc>,
) -> Result<ItemCounts, DbErr> {
    use iso::Column as I;
    let existing: HashMap<(String, String), iso::Model> = iso::Entity::find()
        .filter(I::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?
        .into_iter()
        .map(|m| ((m.node.clone(), m.volid.clone()), m))
        .collect();
    let mut counts = ItemCounts {
        seen: i.seen.len(),
        ..Default::default()
    };
    let mut unchanged = Vec::new();
    for s in &i.seen {
        match existing.get(&(s.node.clone(), s.volid.clone())) {
            Some(row)
                if !row.gone
                    && row.storage == s.storage
                    && row.name == s.name
                    && row.size == s.size
                    && row.shared == s.shared =>
            {
                unchanged.push(row.id);
            }
            Some(row) => {
                let mut am: iso::ActiveModel = row.clone().into();
                am.storage = Set(s.storage.clone());
                am.name = Set(s.name.clone());
                am.size = Set(s.size);
                am.shared = Set(s.shared);
                am.gone = Set(false);
                am.gone_at = Set(None);
                am.synced_at = Set(now);
                am.update(c).await?;
                counts.updated += 1;
            }
            None => {
                let row = iso::ActiveModel {
                    id: NotSet,
                    cluster_db_id: Set(cluster_db_id),
                    node: Set(s.node.clone()),
                    storage: Set(s.storage.clone()),
                    volid: Set(s.volid.clone()),
                    name: Set(s.name.clone()),
                    size: Set(s.size),
                    shared: Set(s.shared),
                    gone: Set(false),
                    gone_at: Set(None),
                    first_seen_at: Set(now),
                    synced_at: Set(now),
                };
                iso::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([I::ClusterDbId, I::Node, I::Volid])
                            .update_columns([
                                I::Storage,
                                I::Name,
                                I::Size,
                                I::Shared,
                                I::Gone,
                                I::GoneAt,
                                I::SyncedAt,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(c)
                    .await?;
                counts.added += 1;
            }
        }
    }
    let seen_at = [(I::SyncedAt, Expr::value(now))];
    update_ids::<iso::Entity, _>(c, I::Id, unchanged, &seen_at).await?;
    let seen: HashSet<(&str, &str)> = i
        .seen
        .iter()
        .map(|s| (s.node.as_str(), s.volid.as_str()))
        .collect();
    let mut gone = Vec::new();
    for r in existing.values().filter(|r| !r.gone) {
        if seen.contains(&(r.node.as_str(), r.volid.as_str())) {
            continue;
        }
        if i.unlisted.contains(&(r.node.clone(), r.storage.clone())) {
            counts.kept += 1;
        } else {
            gone.push(r.id);
        }
    }
    counts.gone = gone.len();
    let gone_now = [
        (I::Gone, Expr::value(true)),
        (I::GoneAt, Expr::value(Some(now))),
    ];
    update_ids::<iso::Entity, _>(c, I::Id, gone, &gone_now).await?;
    Ok(counts)
}

/// Largest id list per statement (SQLite allows 32,766 bound values; PostgreSQL 65,535).
const IDS_PER_STATEMENT: usize = 5_000;

async fn delete_ids<E: EntityTrait, C: ConnectionTrait>(
    c: &C,
    id: E::Column,
    ids: Vec<i64>,
) -> Result<(), DbErr> {
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        E::delete_many()
            .filter(id.is_in(chunk.iter().copied()))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Sets `values` on the rows with these ids.
async fn update_ids<E: EntityTrait, C: ConnectionTrait>(
    c: &C,
    id: E::Column,
    ids: Vec<i64>,
    values: &[(E::Column, SimpleExpr)],
) -> Result<(), DbErr> {
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut update = E::update_many();
        for (col, value) in values {
            update = update.col_expr(*col, value.clone());
        }
        update
            .filter(id.is_in(chunk.iter().copied()))
            .exec(c)
            .await?;
    }
    Ok(())
}
