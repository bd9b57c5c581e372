//! `POST /api/classes`: the request body, and its validation into a class that can be deployed —
//! cluster chosen, template found in the synced inventory, node and method checked — so that a
//! request that cannot work is refused at once, naming the field, before any job exists.

use labfleet_entities::{cluster, cluster_node, idle, template};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;

use crate::{
    method::DeployMethod,
    naming::slugify,
    placement::{ranking, NodeLoad, PlacementError, TemplateSite},
};

/// The body of `POST /api/classes` (the fields of the older lab tool's request plus
/// `deployment_cluster`, `start` and the idle auto-shutdown overrides).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassRequest {
    /// The class name ("Biology Lab 101"); VM names start with its slug.
    pub name: String,
    /// Free text, also written into every VM's description.
    #[serde(default)]
    pub description: Option<String>,
    /// The template's Proxmox VMID.
    pub template_id: i64,
    /// How many student VMs.
    pub pool_size: i64,
    /// `config_clone` (default), `linked_clone` or `full_clone`.
    #[serde(default)]
    pub deployment_method: Option<String>,
    /// Put every VM on this node (else least-loaded round-robin).
    #[serde(default)]
    pub deployment_node: Option<String>,
    /// The cluster (its `cluster_id`); else the highest-priority cluster that has the template.
    #[serde(default)]
    pub deployment_cluster: Option<String>,
    /// Power the VMs on once cloned (default false).
    #[serde(default)]
    pub start: Option<bool>,
    /// Idle auto-shutdown: CPU threshold in percent (overrides the cluster's).
    #[serde(default)]
    pub idle_cpu_percent: Option<f64>,
    /// Idle auto-shutdown: window in minutes (overrides the cluster's).
    #[serde(default)]
    pub idle_minutes: Option<i64>,
}

/// A request that cannot be deployed: the field at fault and why.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The value is wrong (422, naming the field).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong, and what would work.
        message: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

fn invalid(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field,
        message: message.into(),
    }
}

/// A validated class, ready to be stored.
#[derive(Clone, Debug)]
pub struct NewClass {
    /// Trimmed name.
    pub name: String,
    /// Its slug (non-empty).
    pub slug: String,
    /// Trimmed description, if any.
    pub description: Option<String>,
    /// The chosen cluster.
    pub cluster: cluster::Model,
    /// The template, from the synced inventory.
    pub template: template::Model,
    /// How VMs are made.
    pub method: DeployMethod,
    /// The requested node.
    pub deployment_node: Option<String>,
    /// Power on after cloning.
    pub start: bool,
    /// VM count.
    pub pool_size: u32,
    /// Idle threshold override.
    pub idle_cpu_percent: Option<f64>,
    /// Idle window override.
    pub idle_minutes: Option<i32>,
}

/// Largest VMID Proxmox accepts.
const MAX_VMID: i64 = 999_999_999;

impl ClassRequest {
    /// Checks every field and resolves cluster and template; `max_pool_size` from the settings.
    pub async fn validate<C: ConnectionTrait>(
        self,
        db: &C,
        max_pool_size: u32,
    ) -> Result<NewClass, RequestError> {
        let name = self.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("name", "must be 1 to 100 characters"));
        }
        let slug = slugify(&name);
        if slug.is_empty() {
            return Err(invalid(
                "name",
                "must contain at least one letter or digit (VM names are made from it)",
            ));
        }
        let description = self
            .description
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty());
        if description.as_ref().is_some_and(|d| d.len() > 4_000) {
            return Err(invalid("description", "must be at most 4,000 bytes"));
        }
        if !(100..=MAX_VMID).contains(&self.template_id) {
            return Err(invalid(
                "template_id",
                format!("must be a Proxmox VMID (100–{MAX_VMID})"),
            ));
        }
        if self.pool_size < 1 || self.pool_size > i64::from(max_pool_size) {
            return Err(invalid(
                "pool_size",
                format!("must be between 1 and {max_pool_size}"),
            ));
        }
        let method = match self.deployment_method.as_deref() {
            None => DeployMethod::ConfigClone,
            Some(m) => DeployMethod::parse(m).ok_or_else(|| {
                invalid(
                    "deployment_method",
                    format!(
                        "unknown method `{m}`; expected config_clone, linked_clone or full_clone"
                    ),
                )
            })?,
        };
        if let Some(p) = self.idle_cpu_percent {
            idle::check_cpu_percent(p).map_err(|m| invalid("idle_cpu_percent", m))?;
        }
        let idle_minutes = self
            .idle_minutes
            .map(|m| idle::check_minutes(m).map_err(|msg| invalid("idle_minutes", msg)))
            .transpose()?;
        let deployment_node = self
            .deployment_node
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());

        let (cluster, template) =
            choose_cluster(db, self.deployment_cluster.as_deref(), self.template_id).await?;

        if method == DeployMethod::ConfigClone && !template.qcow2_files {
            return Err(invalid(
                "deployment_method",
                format!(
                    "config_clone needs the template's disks as qcow2 files on a directory or NFS storage, \
                     and template {} has other disks; use linked_clone instead",
                    template.vmid
                ),
            ));
        }
        if let Some(node) = &deployment_node {
            let nodes = cluster_node::Entity::find()
                .filter(cluster_node::Column::ClusterDbId.eq(cluster.id))
                .all(db)
                .await?;
            let loads: Vec<NodeLoad> = nodes
                .iter()
                .map(|n| NodeLoad {
                    name: n.node.clone(),
                    guests: n.guests.max(0) as u32,
                    online: n.online,
                })
                .collect();
            let site = TemplateSite {
                vmid: template.vmid,
                node: template.node.clone(),
                all_shared: template.all_shared,
            };
            if let Err(e) = ranking(&loads, &site, Some(node)) {
                let mut message = e.to_string();
                if matches!(e, PlacementError::UnknownNode(_)) {
                    let known: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
                    message = format!(
                        "no node `{node}` in cluster `{}` (its nodes: {})",
                        cluster.cluster_id,
                        known.join(", ")
                    );
                }
                return Err(invalid("deployment_node", message));
            }
        }
        Ok(NewClass {
            name,
            slug,
            description,
            cluster,
            template,
            method,
            deployment_node,
            start: self.start.unwrap_or(false),
            pool_size: self.pool_size as u32,
            idle_cpu_percent: self.idle_cpu_percent,
            idle_minutes,
        })
    }
}

/// The cluster named by `deployment_cluster`, or the highest-priority active cluster that
/// allows deployment and has the template (the default cluster first among equals).
async fn choose_cluster<C: ConnectionTrait>(
    db: &C,
    requested: Option<&str>,
    template_vmid: i64,
) -> Result<(cluster::Model, template::Model), RequestError> {
    let candidates = match requested.map(str::trim) {
        Some(id) => {
            let c = cluster::Entity::find()
                .filter(cluster::Column::ClusterId.eq(id))
                .one(db)
                .await?
                .ok_or_else(|| invalid("deployment_cluster", format!("no cluster `{id}`")))?;
            if !c.is_active {
                return Err(invalid(
                    "deployment_cluster",
                    format!("cluster `{id}` is not active"),
                ));
            }
            if !c.allow_vm_deployment {
                return Err(invalid(
                    "deployment_cluster",
                    format!("cluster `{id}` does not allow VM deployment"),
                ));
            }
            vec![c]
        }
        None => {
            cluster::Entity::find()
                .filter(cluster::Column::IsActive.eq(true))
                .filter(cluster::Column::AllowVmDeployment.eq(true))
                .order_by_desc(cluster::Column::Priority)
                .order_by_desc(cluster::Column::IsDefault)
                .order_by_asc(cluster::Column::Id)
                .all(db)
                .await?
        }
    };
    if candidates.is_empty() {
        return Err(invalid(
            "deployment_cluster",
            "no active cluster allows VM deployment",
        ));
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
    let templates = template::Entity::find()
        .filter(template::Column::ClusterDbId.is_in(ids))
        .filter(template::Column::Vmid.eq(template_vmid))
        .filter(template::Column::Gone.eq(false))
        .all(db)
        .await?;
    for c in candidates {
        if let Some(t) = templates.iter().find(|t| t.cluster_db_id == c.id) {
            let t = t.clone();
            return Ok((c, t));
        }
    }
    Err(invalid(
        "template_id",
        match requested {
            Some(id) => format!(
                "template {template_vmid} is not among the synced templates of cluster `{id}` \
                 (sync it with POST /api/cluster-config/{{db_id}}/sync)"
            ),
            None => format!(
                "template {template_vmid} is not among the synced templates of any active cluster \
                 that allows deployment (sync with POST /api/cluster-config/{{db_id}}/sync)"
            ),
        },
    ))
}
