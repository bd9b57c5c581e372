//! Writing one observation of a cluster in one transaction. Rows are matched by their natural
//! keys (node; node + storage; vmid; node + volid), so a sync updates in place; inserts are
//! upserts, so two syncs of one cluster racing each other cannot fail on the unique indexes.
//! Everything here is plain SeaORM and runs on SQLite and PostgreSQL alike.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

use chrono::{DateTime, Utc};
use labfleet_entities::{cluster_node, cluster_storage, iso, template};
use sea_orm::{
    sea_query::{Expr, OnConflict, SimpleExpr},
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, TransactionTrait,
};

use labfleet_fleet::backend::{
    IsoSeen, IsosSeen, NodeSeen, Observation, StorageSeen, TemplateSeen, TemplatesSeen,
};

use super::ItemCounts;

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
    let refresh = OnConflict::columns([N::ClusterDbId, N::Node])
        .update_columns([N::Online, N::Ip, N::Cpus, N::MaxMem, N::Guests, N::SyncedAt])
        .to_owned();
    upsert::<cluster_node::Entity, _>(c, rows.collect(), refresh).await
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
    let refresh = OnConflict::columns([S::ClusterDbId, S::Node, S::Storage])
        .update_columns([
            S::StorageType,
            S::Shared,
            S::Content,
            S::Active,
            S::Total,
            S::Used,
            S::SyncedAt,
        ])
        .to_owned();
    upsert::<cluster_storage::Entity, _>(c, rows.collect(), refresh).await
}

/// A stored row of a kind that syncs keep (templates, ISOs).
trait Stored {
    type Key: Eq + Hash;
    fn key(&self) -> Self::Key;
    fn id(&self) -> i64;
    fn gone(&self) -> bool;
}

/// What a sync saw of that kind.
trait Observed<R: Stored> {
    fn key(&self) -> R::Key;
    /// Whether `row` already says exactly this.
    fn matches(&self, row: &R) -> bool;
}

/// How the stored rows compare with what a sync saw.
struct Plan<'a, R, S> {
    /// Rows seen as they are: only their `synced_at` moves.
    unchanged: Vec<i64>,
    /// Seen items whose row differs (or is gone): upserted.
    changed: Vec<&'a S>,
    /// Seen for the first time: upserted.
    new: Vec<&'a S>,
    /// Rows not gone that the sync did not see.
    missing: Vec<&'a R>,
}

fn plan<'a, R: Stored, S: Observed<R>>(rows: &'a [R], seen: &'a [S]) -> Plan<'a, R, S> {
    let by_key: HashMap<R::Key, &R> = rows.iter().map(|r| (r.key(), r)).collect();
    let mut p = Plan {
        unchanged: Vec::new(),
        changed: Vec::new(),
        new: Vec::new(),
        missing: Vec::new(),
    };
    let mut seen_keys = HashSet::new();
    for s in seen {
        match by_key.get(&s.key()) {
            Some(row) if !row.gone() && s.matches(row) => p.unchanged.push(row.id()),
            Some(_) => p.changed.push(s),
            None => p.new.push(s),
        }
        seen_keys.insert(s.key());
    }
    p.missing = rows
        .iter()
        .filter(|r| !r.gone() && !seen_keys.contains(&r.key()))
        .collect();
    p
}

impl Stored for template::Model {
    type Key = i64;
    fn key(&self) -> i64 {
        self.vmid
    }
    fn id(&self) -> i64 {
        self.id
    }
    fn gone(&self) -> bool {
        self.gone
    }
}

impl Observed<template::Model> for TemplateSeen {
    fn key(&self) -> i64 {
        self.vmid
    }
    fn matches(&self, row: &template::Model) -> bool {
        row.name == self.name
            && row.node == self.node
            && serde_json::to_value(&self.volumes.disks).ok().as_ref() == Some(&row.disks)
            && row.all_shared == self.volumes.all_shared
            && row.has_cloudinit == self.volumes.has_cloudinit
            && row.qcow2_files == self.volumes.qcow2_files
    }
}

impl Stored for iso::Model {
    type Key = (String, String);
    fn key(&self) -> (String, String) {
        (self.node.clone(), self.volid.clone())
    }
    fn id(&self) -> i64 {
        self.id
    }
    fn gone(&self) -> bool {
        self.gone
    }
}

impl Observed<iso::Model> for IsoSeen {
    fn key(&self) -> (String, String) {
        (self.node.clone(), self.volid.clone())
    }
    fn matches(&self, row: &iso::Model) -> bool {
        row.storage == self.storage
            && row.name == self.name
            && row.size == self.size
            && row.shared == self.shared
    }
}

async fn write_templates<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    t: &TemplatesSeen,
    now: DateTime<Utc>,
) -> Result<ItemCounts, DbErr> {
    use template::Column as T;
    let rows = template::Entity::find()
        .filter(T::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?;
    let p = plan(&rows, &t.seen);
    let mut upserts = Vec::with_capacity(p.changed.len() + p.new.len());
    for s in p.changed.iter().chain(&p.new) {
        let disks = serde_json::to_value(&s.volumes.disks)
            .map_err(|e| DbErr::Custom(format!("template {} disks: {e}", s.vmid)))?;
        upserts.push(template::ActiveModel {
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
        });
    }
    // Everything but the key and `first_seen_at` is refreshed on an existing row.
    let refresh = OnConflict::columns([T::ClusterDbId, T::Vmid])
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
        .to_owned();
    upsert::<template::Entity, _>(c, upserts, refresh).await?;
    update_ids::<template::Entity, _>(c, T::Id, p.unchanged, &[(T::SyncedAt, Expr::value(now))])
        .await?;
    let (kept, gone): (Vec<&template::Model>, Vec<&template::Model>) = p
        .missing
        .iter()
        .partition(|r| t.unreadable.contains(&r.vmid));
    let counts = ItemCounts {
        seen: t.seen.len(),
        added: p.new.len(),
        updated: p.changed.len(),
        gone: gone.len(),
        kept: kept.len(),
    };
    mark_gone::<template::Entity, _>(c, T::Id, T::Gone, T::GoneAt, &gone, now).await?;
    Ok(counts)
}

async fn write_isos<C: ConnectionTrait>(
    c: &C,
    cluster_db_id: i64,
    i: &IsosSeen,
    now: DateTime<Utc>,
) -> Result<ItemCounts, DbErr> {
    use iso::Column as I;
    let rows = iso::Entity::find()
        .filter(I::ClusterDbId.eq(cluster_db_id))
        .all(c)
        .await?;
    let p = plan(&rows, &i.seen);
    let upserts = p.changed.iter().chain(&p.new).map(|s| iso::ActiveModel {
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
    });
    let refresh = OnConflict::columns([I::ClusterDbId, I::Node, I::Volid])
        .update_columns([
            I::Storage,
            I::Name,
            I::Size,
            I::Shared,
            I::Gone,
            I::GoneAt,
            I::SyncedAt,
        ])
        .to_owned();
    upsert::<iso::Entity, _>(c, upserts.collect(), refresh).await?;
    update_ids::<iso::Entity, _>(c, I::Id, p.unchanged, &[(I::SyncedAt, Expr::value(now))]).await?;
    // ISOs on a location that could not be listed (offline node) are left as they were.
    let (kept, gone): (Vec<&iso::Model>, Vec<&iso::Model>) = p
        .missing
        .iter()
        .partition(|r| i.unlisted.contains(&(r.node.clone(), r.storage.clone())));
    let counts = ItemCounts {
        seen: i.seen.len(),
        added: p.new.len(),
        updated: p.changed.len(),
        gone: gone.len(),
        kept: kept.len(),
    };
    mark_gone::<iso::Entity, _>(c, I::Id, I::Gone, I::GoneAt, &gone, now).await?;
    Ok(counts)
}

/// Rows per insert statement (each row binds about a dozen values).
const ROWS_PER_INSERT: usize = 500;

async fn upsert<E: EntityTrait, C: ConnectionTrait>(
    c: &C,
    rows: Vec<E::ActiveModel>,
    on_conflict: OnConflict,
) -> Result<(), DbErr>
where
    E::Model: IntoActiveModel<E::ActiveModel>,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<E::ActiveModel> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        E::insert_many(chunk)
            .on_conflict(on_conflict.clone())
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

async fn mark_gone<E: EntityTrait, C: ConnectionTrait>(
    c: &C,
    id: E::Column,
    gone: E::Column,
    gone_at: E::Column,
    rows: &[&impl Stored],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let ids = rows.iter().map(|r| r.id()).collect();
    let values = [(gone, Expr::value(true)), (gone_at, Expr::value(Some(now)))];
    update_ids::<E, _>(c, id, ids, &values).await
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
