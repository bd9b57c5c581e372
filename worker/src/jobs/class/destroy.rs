//! `destroy_class`: fans out one `destroy_vm` per VM to remove (those past `keep`); with none
//! left to remove, a class being deleted is marked deleted.

use std::time::Duration;

use labfleet_fleet::{ClassState, ClassStore};
use labfleet_jobs::{ClassVmArgs, DestroyClassArgs, JobSpec};

use crate::{
    context::{JobContext, JobError, JobOutcome},
    jobs::load_class,
};

pub(crate) async fn run(args: DestroyClassArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let class = load_class(&ctx, args.class_id).await?;
    // A deployment still winding down (its cancel was asked for) would race the destroy.
    if let Some((job, kind)) = ctx.store.unfinished_job_of_class(class.id).await? {
        if job != ctx.job_id && kind == "deploy_class" {
            ctx.set_step("waiting for the deployment to stop").await;
            return Ok(JobOutcome::park(
                Duration::from_secs(1),
                "deployment still running",
            ));
        }
    }
    let doomed: Vec<JobSpec> = ctx
        .classes
        .vm_rows(class.id)
        .await?
        .into_iter()
        .filter(|vm| vm.idx as u32 > args.keep)
        .map(|vm| JobSpec::DestroyVm(ClassVmArgs { class_vm_id: vm.id }))
        .collect();
    if doomed.is_empty() {
        if args.keep == 0 {
            ClassStore::set_state(ctx.store.db(), class.id, ClassState::Deleted).await?;
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
