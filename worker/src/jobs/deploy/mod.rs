//! Class deployment handlers: `deploy_class` (plan, fan out), `deploy_vm` (clone one VM),
//! `destroy_class` and `destroy_vm`. The shared pieces: turning errors into retry decisions,
//! reading the cluster once, and looking at what Proxmox really has before acting.

pub(crate) mod class;
mod config_clone;
pub(crate) mod destroy;
pub(crate) mod vm;

use std::{collections::BTreeSet, time::Duration};

use labfleet_deploy::{placement::NodeLoad, ClusterSnapshot, Marker};
use labfleet_entities::{cluster, template};
use labfleet_proxmox::{ClusterResource, ProxmoxClient, ProxmoxError, Upid};
use sea_orm::DbErr;

use crate::context::{JobContext, JobError, JobOutcome};

/// A Proxmox failure as a job error: transient ones (locks, timeouts, 5xx) are retried with
/// backoff by the engine; the rest fail the job with Proxmox's message.
pub(crate) fn pve(e: ProxmoxError) -> JobError {
    if e.is_transient() {
        JobError::Transient(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

/// A database failure as a job error (always worth another attempt).
pub(crate) fn db(e: DbErr) -> JobError {
    JobError::Transient(format!("database error: {e}"))
}

/// A VMID reservation that failed: the database's trouble passes (retry), a range without
/// free ids does not.
pub(crate) fn vmid_error(e: labfleet_deploy::vmids::VmidError) -> JobError {
    if e.is_transient() {
        JobError::Transient(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

/// The cluster's row and its (cached) client.
pub(crate) async fn connect(
    ctx: &JobContext,
    cluster_db_id: i64,
) -> Result<(cluster::Model, ProxmoxClient), JobError> {
    ctx.clusters.connect(cluster_db_id).await.map_err(|e| {
        if e.is_transient() {
            JobError::Transient(e.to_string())
        } else {
            JobError::Permanent(e.to_string())
        }
    })
}

/// A class by id; a class that no longer exists fails the job for good.
pub(crate) async fn load_class(
    ctx: &JobContext,
    class_id: i64,
) -> Result<labfleet_entities::class::Model, JobError> {
    ctx.classes
        .get(class_id)
        .await
        .map_err(db)?
        .ok_or_else(|| JobError::Permanent(format!("class {class_id} does not exist")))
}

/// The synced template row of a cluster, if the inventory has it.
pub(crate) async fn template_row(
    ctx: &JobContext,
    cluster_db_id: i64,
    vmid: i64,
) -> Result<Option<template::Model>, JobError> {
    ctx.clusters
        .inventory()
        .template(cluster_db_id, vmid)
        .await
        .map_err(db)
}

/// Nodes, guests and templates from one `/cluster/resources` read.
pub(crate) fn snapshot(resources: &[ClusterResource]) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::default();
    let mut guests_per_node = std::collections::HashMap::<&str, u32>::new();
    for r in resources {
        match r.kind.as_str() {
            "qemu" | "lxc" => {
                if let Some(vmid) = r.vmid {
                    snap.vmids_in_use.insert(i64::from(vmid));
                }
                if r.kind == "qemu" && r.template == Some(true) {
                    if let (Some(vmid), Some(node)) = (r.vmid, r.node.clone()) {
                        snap.templates.push((i64::from(vmid), node));
                    }
                } else if let Some(node) = r.node.as_deref() {
                    // Load counts guests that run or may run, as the inventory does: not templates.
                    *guests_per_node.entry(node).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    for r in resources.iter().filter(|r| r.kind == "node") {
        if let Some(name) = r.node.clone() {
            snap.nodes.push(NodeLoad {
                guests: guests_per_node.get(name.as_str()).copied().unwrap_or(0),
                online: r.status.as_deref() == Some("online"),
                name,
            });
        }
    }
    snap
}

/// What sits at a VMID on the cluster.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing.
    Absent,
    /// A VM with our marker for this class VM.
    Ours {
        node: String,
        /// `lock: clone` or `create`: its making is still in progress.
        in_progress: bool,
        running: bool,
    },
    /// A guest still being made (`lock: clone` or `create`) whose config carries no marker yet:
    /// while a clone copies, Proxmox keeps a placeholder config (`# qmclone temporary file`,
    /// `lock: clone`) and writes the real one, our description included, only at the end. Until
    /// then it may be a clone we started (before a crash or an outage lost its record) or
    /// someone else's; only its finished config tells, so callers wait and look again.
    BeingMade,
    /// Something else.
    Foreign { node: String },
}

/// Looks the VMID up cluster-wide (it may sit on any node) and reads its marker.
pub(crate) async fn inspect(
    client: &ProxmoxClient,
    vmid: i64,
    class_vm_id: i64,
) -> Result<(Found, BTreeSet<i64>), ProxmoxError> {
    let resources = client
        .cluster_resources(Some(labfleet_proxmox::ResourceType::Vm))
        .await?;
    let in_use: BTreeSet<i64> = resources
        .iter()
        .filter_map(|r| r.vmid.map(i64::from))
        .collect();
    let Some(entry) = resources
        .iter()
        .find(|r| r.vmid.map(i64::from) == Some(vmid))
    else {
        return Ok((Found::Absent, in_use));
    };
    let node = entry.node.clone().unwrap_or_default();
    if entry.kind != "qemu" {
        return Ok((Found::Foreign { node }, in_use));
    }
    let config = match client.qemu_config(&node, vmid as u32, false, None).await {
        Ok(c) => c,
        // Gone between the two reads (a clone that failed and was cleaned up).
        Err(e) if e.is_not_found() => return Ok((Found::Absent, in_use)),
        Err(e) => return Err(e),
    };
    let ours = config
        .get("description")
        .and_then(|d| Marker::parse(&d))
        .is_some_and(|m| m.class_vm_id == class_vm_id);
    let lock = config.lock().or_else(|| entry.lock.clone());
    let in_progress = matches!(lock.as_deref(), Some("clone" | "create"));
    let found = if ours {
        Found::Ours {
            node,
            in_progress,
            running: entry.status.as_deref() == Some("running"),
        }
    } else if in_progress {
        Found::BeingMade
    } else {
        Found::Foreign { node }
    };
    Ok((found, in_use))
}

/// How a wait for a Proxmox task ended.
pub(crate) enum Waited {
    /// The task finished OK.
    Done,
    /// Still running at the end of the inline wait: park and come back.
    StillRunning,
}

/// Waits for a task until `deadline` (the run's inline budget), stopping it (and the job) on cancel.
/// With `step`, every few seconds the job's step shows it with the copy progress Proxmox logs
/// (`transferred … (42.0%)`, full clones).
pub(crate) async fn wait_task(
    ctx: &JobContext,
    client: &ProxmoxClient,
    upid: &Upid,
    step: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<Waited, JobError> {
    let max_poll = Duration::from_millis(ctx.deploy.task_poll_max_ms.max(100));
    loop {
        let chunk = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(3));
        let waited = tokio::select! {
            r = client.wait_task_polling(upid, chunk, max_poll) => r,
            _ = ctx.cancel.cancelled() => return stop_task(client, upid).await,
        };
        match waited {
            Ok(_) => return Ok(Waited::Done),
            Err(ProxmoxError::TaskTimeout { .. }) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Waited::StillRunning);
                }
                if let Some(step) = step {
                    if let Ok(Some(p)) = client.task_progress(upid).await {
                        ctx.set_step(format!("{step} ({:.0}%)", p.percent)).await;
                    }
                }
            }
            Err(e) => return Err(pve(e)),
        }
    }
}

/// Cancel stops the Proxmox task too where it can (an interrupted clone leaves nothing behind).
/// A task that finished before the stop reached it did its work: that is reported as done, so
/// the VM it made is recorded rather than left unaccounted for.
async fn stop_task(client: &ProxmoxClient, upid: &Upid) -> Result<Waited, JobError> {
    if let Err(e) = client.task_stop(upid).await {
        tracing::warn!(upid = %upid, error = %e, "could not stop the task on cancel");
    }
    match client
        .wait_task_polling(upid, Duration::from_secs(10), Duration::from_millis(200))
        .await
    {
        Ok(_) => Ok(Waited::Done),
        Err(_) => Err(JobError::Cancelled),
    }
}

/// The end of this run's inline budget: a run waits on Proxmox at most this long, then parks
/// (no delivery is held long; the engine's handler timeout is above it).
pub(crate) fn run_deadline(ctx: &JobContext) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(ctx.deploy.inline_wait_secs.clamp(1, 45))
}

/// Parks the job for a moment, keeping what it waits for in the checkpoint.
pub(crate) fn park(after: Duration, note: &str) -> JobOutcome {
    JobOutcome::Continue {
        after,
        checkpoint: serde_json::json!({ "waiting": note }),
        note: Some(note.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labfleet_deploy::vmids::VmidError;

    #[test]
    fn a_database_error_while_reserving_a_vmid_is_retried_and_an_empty_range_is_not() {
        let db_down = VmidError::Db(DbErr::Conn(sea_orm::RuntimeErr::Internal(
            "connection refused".into(),
        )));
        assert!(matches!(vmid_error(db_down), JobError::Transient(_)));
        let exhausted = VmidError::RangeExhausted {
            start: 100,
            end: 101,
            free: 0,
            wanted: 1,
        };
        assert!(matches!(vmid_error(exhausted), JobError::Permanent(_)));
    }
}
