//! `destroy_class` (fans out over the VMs to remove) and `destroy_vm` (stops and destroys one VM,
//! then frees its VMID for reuse after the cool-down). A VM that is already gone counts as
//! destroyed; a VM on our VMID without our marker is never touched.

use std::time::Duration;

use labfleet_deploy::{vmids, ClassState, ClassStore, VmChange, VmState, Want};
use labfleet_jobs::{ClassVmArgs, DestroyClassArgs, JobSpec, OrphanArgs};
use labfleet_proxmox::{DestroyParams, StopParams};
use sea_orm::ConnectionTrait;

use super::{connect, db, inspect, load_class, park, pve, run_deadline, wait_task, Found, Waited};
use crate::context::{JobContext, JobError, JobOutcome};

pub(crate) async fn class(args: DestroyClassArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let class = load_class(&ctx, args.class_id).await?;
    // A deployment still winding down (its cancel was asked for) would race the destroy.
    if let Some((job, kind)) = ctx.store.unfinished_job_of_class(class.id).await? {
        if job != ctx.job_id && kind == "deploy_class" {
            ctx.set_step("waiting for the deployment to stop").await;
            return Ok(park(Duration::from_secs(1), "deployment still running"));
        }
    }
    let doomed: Vec<JobSpec> = ctx
        .classes
        .vm_rows(class.id)
        .await
        .map_err(db)?
        .into_iter()
        .filter(|vm| vm.idx as u32 > args.keep)
        .map(|vm| JobSpec::DestroyVm(ClassVmArgs { class_vm_id: vm.id }))
        .collect();
    if doomed.is_empty() {
        if args.keep == 0 {
            ClassStore::set_state(ctx.store.db(), class.id, ClassState::Deleted)
                .await
                .map_err(db)?;
        }
        return Ok(JobOutcome::Done(Some(
            serde_json::json!({ "destroyed": 0 }),
        )));
    }
    ctx.set_step(format!("destroying {} VMs", doomed.len()))
        .await;
    ctx.spawn_children_with(doomed, ctx.deploy.vm_attempts.max(1))
        .await
}

pub(crate) async fn vm(args: ClassVmArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let Some(vm) = ctx.classes.vm(args.class_vm_id).await.map_err(db)? else {
        return Ok(JobOutcome::Done(None));
    };
    ctx.classes
        .update_vm(
            vm.id,
            VmChange {
                state: Some(VmState::Deleting),
                job_id: Some(ctx.job_id),
                ..Default::default()
            },
        )
        .await
        .map_err(db)?;
    let (cluster, client) = connect(&ctx, vm.cluster_db_id).await?;
    let deadline = run_deadline(&ctx);
    let holder = ctx.job_id.to_string();
    let result = async {
        let (found, _) = inspect(&client, vm.vmid, vm.id).await.map_err(pve)?;
        match found {
            Found::Absent => {}
            Found::Foreign { node } => {
                // Not ours: leave it alone, and never hand its VMID out again.
                tracing::warn!(
                    vmid = vm.vmid,
                    node,
                    "a foreign VM sits on a class VMID; not destroying it"
                );
                vmids::quarantine(ctx.store.db(), cluster.id, vm.vmid)
                    .await
                    .map_err(db)?;
                forget(&ctx, &vm).await?;
                return Ok(JobOutcome::Done(Some(
                    serde_json::json!({ "foreign": vm.vmid }),
                )));
            }
            Found::Ours {
                in_progress: true, ..
            }
            | Found::BeingMade => {
                ctx.set_step("waiting for its clone to finish").await;
                return Ok(park(Duration::from_secs(1), "clone still running"));
            }
            Found::Ours { node, running, .. } => {
                if let Some(parked) = stop_and_destroy(
                    &ctx,
                    &client,
                    cluster.id,
                    &node,
                    vm.vmid as u32,
                    running,
                    deadline,
                )
                .await?
                {
                    return Ok(parked);
                }
            }
        }
        finish(&ctx, &vm, cluster.id).await
    }
    .await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        if let Err(e) = ctx.slots.release(&holder).await {
            tracing::warn!(error = %e, "could not release slots; they expire by themselves");
        }
    }
    result
}

/// Stops (if running) and destroys one of our VMs with its disks. `Some` is a continuation to
/// return (a task still runs, or no slot is free yet); `None` means the VM is gone.
async fn stop_and_destroy(
    ctx: &JobContext,
    client: &labfleet_proxmox::ProxmoxClient,
    cluster_db_id: i64,
    node: &str,
    vmid: u32,
    running: bool,
    deadline: tokio::time::Instant,
) -> Result<Option<JobOutcome>, JobError> {
    if running {
        ctx.set_step(format!("stopping {vmid}")).await;
        let upid = client
            .qemu_stop(node, vmid, &StopParams::default())
            .await
            .map_err(pve)?;
        if let Waited::StillRunning = wait_task(ctx, client, &upid, None, deadline).await? {
            return Ok(Some(park(Duration::from_secs(1), "stop task running")));
        }
    }
    // Destroying frees volumes under the storage lock: take the node's slot like a clone does
    // (the storages are not known here; the node is).
    let holder = ctx.job_id.to_string();
    let wants = [Want::node(cluster_db_id, node, ctx.deploy.node_concurrency)];
    let patience = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(Duration::from_secs(10));
    if !ctx
        .slots
        .acquire(&wants, &holder, Duration::from_secs(120), patience)
        .await
        .map_err(db)?
    {
        return Ok(Some(park(Duration::from_millis(500), "waiting for a slot")));
    }
    ctx.set_step(format!("destroying {vmid} on {node}")).await;
    let params = DestroyParams {
        purge: Some(true),
        destroy_unreferenced_disks: Some(true),
        ..Default::default()
    };
    let upid = match client.qemu_delete(node, vmid, &params).await {
        Ok(upid) => upid,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(pve(e)),
    };
    if let Waited::StillRunning = wait_task(ctx, client, &upid, None, deadline).await? {
        return Ok(Some(park(Duration::from_secs(1), "destroy task running")));
    }
    Ok(None)
}

/// `destroy_orphan`: destroys a VM that carries our marker and that no class VM owns, after
/// checking both again (a deploy job may have adopted it since reconciliation saw it).
pub(crate) async fn orphan(args: OrphanArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let owned = ctx
        .store
        .db()
        .query_one(labfleet_db::sql(
            ctx.store.db().get_database_backend(),
            "SELECT id FROM class_vms WHERE cluster_db_id = ? AND vmid = ?",
            vec![args.cluster_db_id.into(), args.vmid.into()],
        ))
        .await
        .map_err(db)?;
    if owned.is_some() {
        forget_orphan(&ctx, &args).await?;
        return Ok(JobOutcome::Done(Some(
            serde_json::json!({ "owned_now": args.vmid }),
        )));
    }
    let (cluster, client) = connect(&ctx, args.cluster_db_id).await?;
    let deadline = run_deadline(&ctx);
    let holder = ctx.job_id.to_string();
    let result = async {
        let (found, _) = inspect(&client, args.vmid, args.marker_vm_id)
            .await
            .map_err(pve)?;
        match found {
            Found::Absent => {}
            Found::Foreign { .. } => {
                // Its marker is gone or changed: not ours to destroy any more.
                forget_orphan(&ctx, &args).await?;
                return Ok(JobOutcome::Done(Some(
                    serde_json::json!({ "foreign": args.vmid }),
                )));
            }
            Found::Ours {
                in_progress: true, ..
            }
            | Found::BeingMade => {
                ctx.set_step("waiting for its clone to finish").await;
                return Ok(park(Duration::from_secs(1), "clone still running"));
            }
            Found::Ours { node, running, .. } => {
                if let Some(parked) = stop_and_destroy(
                    &ctx,
                    &client,
                    cluster.id,
                    &node,
                    args.vmid as u32,
                    running,
                    deadline,
                )
                .await?
                {
                    return Ok(parked);
                }
            }
        }
        vmids::release(ctx.store.db(), cluster.id, args.vmid)
            .await
            .map_err(db)?;
        forget_orphan(&ctx, &args).await?;
        Ok(JobOutcome::Done(Some(
            serde_json::json!({ "destroyed": args.vmid }),
        )))
    }
    .await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        if let Err(e) = ctx.slots.release(&holder).await {
            tracing::warn!(error = %e, "could not release slots; they expire by themselves");
        }
    }
    result
}

async fn forget_orphan(ctx: &JobContext, args: &OrphanArgs) -> Result<(), JobError> {
    ctx.store
        .db()
        .execute(labfleet_db::sql(
            ctx.store.db().get_database_backend(),
            "DELETE FROM orphans WHERE cluster_db_id = ? AND vmid = ?",
            vec![args.cluster_db_id.into(), args.vmid.into()],
        ))
        .await
        .map_err(db)?;
    Ok(())
}

/// The VM is gone: free its VMID (after the cool-down) and drop its row.
async fn finish(
    ctx: &JobContext,
    vm: &labfleet_entities::class_vm::Model,
    cluster_db_id: i64,
) -> Result<JobOutcome, JobError> {
    vmids::release(ctx.store.db(), cluster_db_id, vm.vmid)
        .await
        .map_err(db)?;
    forget(ctx, vm).await?;
    Ok(JobOutcome::Done(Some(
        serde_json::json!({ "destroyed": vm.vmid }),
    )))
}

/// Drops a VM's row; the last VM of a class being deleted marks the class deleted.
async fn forget(ctx: &JobContext, vm: &labfleet_entities::class_vm::Model) -> Result<(), JobError> {
    ClassStore::delete_vm(ctx.store.db(), vm.id)
        .await
        .map_err(db)?;
    let class = ctx.classes.get(vm.class_id).await.map_err(db)?;
    if let Some(class) = class {
        if ClassState::parse(&class.state) == Some(ClassState::Deleting)
            && ctx.classes.vm_rows(class.id).await.map_err(db)?.is_empty()
        {
            ClassStore::set_state(ctx.store.db(), class.id, ClassState::Deleted)
                .await
                .map_err(db)?;
        }
    }
    Ok(())
}
