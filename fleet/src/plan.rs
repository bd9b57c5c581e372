//! The plan of a deployment, made once for the whole class and stored: every missing VM index
//! gets a node (placement) and a VMID (reservation) in one transaction, before any clone starts.
//! A deploy job that runs again finds the plan stored and does not make another.

use std::collections::BTreeSet;

use chrono::Utc;
use labfleet_entities::{class, class_vm, cluster};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait,
};

use crate::{
    naming::vm_name,
    placement::{deal, ranking, NodeLoad, PlacementError, TemplateSite},
    vmids::{self, VmidError},
};

/// What the cluster looks like now (one `/cluster/resources` read).
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    /// Nodes with their guest counts.
    pub nodes: Vec<NodeLoad>,
    /// Every VMID in use by a guest.
    pub vmids_in_use: BTreeSet<i64>,
    /// Templates: VMID and node.
    pub templates: Vec<(i64, String)>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The template is no longer on the cluster.
    #[error("template {0} does not exist on the cluster (any more)")]
    TemplateGone(i64),
    /// No legal node.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// No VMIDs left.
    #[error(transparent)]
    Vmids(#[from] VmidError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl PlanError {
    /// True when trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            PlanError::Db(_) => true,
            PlanError::Vmids(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Plans the class's missing VMs (indexes 1..=pool_size without a row); returns how many it
/// planned. `all_shared` comes from the synced template (whether its clones may leave its node).
pub async fn plan_missing(
    db: &DatabaseConnection,
    class: &class::Model,
    cluster: &cluster::Model,
    all_shared: bool,
    snapshot: &ClusterSnapshot,
    cooldown: std::time::Duration,
) -> Result<usize, PlanError> {
    let txn = db.begin().await?;
    let existing: BTreeSet<i32> = class_vm::Entity::find()
        .select_only()
        .column(class_vm::Column::Idx)
        .filter(class_vm::Column::ClassId.eq(class.id))
        .into_tuple::<i32>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let missing: Vec<i32> = (1..=class.pool_size)
        .filter(|i| !existing.contains(i))
        .collect();
    if missing.is_empty() {
        txn.commit().await?;
        return Ok(0);
    }
    let template_node = snapshot
        .templates
        .iter()
        .find(|(vmid, _)| *vmid == class.template_vmid)
        .map(|(_, node)| node.clone())
        .ok_or(PlanError::TemplateGone(class.template_vmid))?;
    let site = TemplateSite {
        vmid: class.template_vmid,
        node: template_node,
        all_shared,
    };
    let order = ranking(&snapshot.nodes, &site, class.deployment_node.as_deref())?;
    let nodes = deal(&order, missing.len());
    let ids = vmids::reserve(
        &txn,
        cluster.id,
        (cluster.vmid_range_start, cluster.vmid_range_end),
        missing.len(),
        &snapshot.vmids_in_use,
        &format!("class:{}", class.id),
        cooldown,
    )
    .await?;
    let now = Utc::now();
    let rows: Vec<class_vm::ActiveModel> = missing
        .iter()
        .zip(nodes)
        .zip(&ids)
        .map(|((idx, node), vmid)| class_vm::ActiveModel {
            class_id: Set(class.id),
            idx: Set(*idx),
            cluster_db_id: Set(cluster.id),
            node: Set(node),
            vmid: Set(*vmid),
            name: Set(vm_name(&class.slug, *idx as u32, *vmid as u32)),
            state: Set(crate::state::VmState::Planned.as_str().to_string()),
            upid: Set(None),
            error: Set(None),
            job_id: Set(None),
            student: Set(None),
            keep_running: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .collect();
    for chunk in rows.chunks(500) {
        class_vm::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(missing.len())
}
