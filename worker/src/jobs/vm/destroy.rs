//! `destroy_vm`: stops and destroys one VM, then frees its VMID for reuse after the cool-down.
//! A VM that is already gone counts as destroyed; a VM on our VMID without our marker is never
//! touched.

use labfleet_entities::class_vm;
use labfleet_fleet::{backend::Expect, vmids, ClassState, ClassStore, VmChange, VmState};
use labfleet_jobs::ClassVmArgs;

use super::{release_slots, remove_if_ours, Removal};
use crate::context::{JobContext, JobError, JobOutcome};

pub(crate) async fn run(args: ClassVmArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let Some(vm) = ctx.classes.vm(args.class_vm_id).await? else {
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
        .await?;
    let connected = ctx.connect(vm.cluster_db_id).await?;
    let (cluster, backend) = (connected.cluster, connected.backend);
    let result = async {
        let id = vm.vmid.to_string();
        match remove_if_ours(&ctx, backend.as_ref(), cluster.id, &id, Expect::Vm(vm.id)).await? {
            Removal::Parked(outcome) => return Ok(outcome),
            Removal::Foreign(guest) => {
                // Not ours: leave it alone, and never hand its VMID out again.
                tracing::warn!(
                    vmid = vm.vmid,
                    node = guest.node,
                    "a foreign VM sits on a class VMID; not destroying it"
                );
                vmids::quarantine(ctx.store.db(), cluster.id, vm.vmid).await?;
                forget(&ctx, &vm).await?;
                return Ok(JobOutcome::Done(Some(
                    serde_json::json!({ "foreign": vm.vmid }),
                )));
            }
            Removal::Gone => {}
        }
        vmids::release(ctx.store.db(), cluster.id, vm.vmid).await?;
        forget(&ctx, &vm).await?;
        Ok(JobOutcome::Done(Some(
            serde_json::json!({ "destroyed": vm.vmid }),
        )))
    }
    .await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        release_slots(&ctx).await;
    }
    result
}

/// Drops a VM's row; the last VM of a class being deleted marks the class deleted.
async fn forget(ctx: &JobContext, vm: &class_vm::Model) -> Result<(), JobError> {
    ClassStore::delete_vm(ctx.store.db(), vm.id).await?;
    if let Some(class) = ctx.classes.get(vm.class_id).await? {
        if ClassState::parse(&class.state) == Some(ClassState::Deleting)
            && ctx.classes.vm_rows(class.id).await?.is_empty()
        {
            ClassStore::set_state(ctx.store.db(), class.id, ClassState::Deleted).await?;
        }
    }
    Ok(())
}
