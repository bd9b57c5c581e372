//! `deploy_class`: reads the cluster once, stores the plan of the class's missing VMs (node and
//! VMID each), and fans out one `deploy_vm` child per planned VM. It does not wait for them
//! inside a delivery: the engine finishes it when its children have finished.

use labfleet_fleet::{plan_missing, ClassState, PlanError, VmState};
use labfleet_jobs::{ClassArgs, ClassVmArgs, JobSpec};

use crate::{
    context::{JobContext, JobError, JobOutcome},
    jobs::{load_class, template_row},
};

pub(crate) async fn run(args: ClassArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let class = load_class(&ctx, args.class_id).await?;
    if ClassState::parse(&class.state) != Some(ClassState::Active) {
        return Err(JobError::Permanent(format!(
            "class {} is {}",
            class.id, class.state
        )));
    }
    ctx.set_step("reading the cluster").await;
    let connected = ctx.connect(class.cluster_db_id).await?;
    let cluster = connected.cluster;
    let snap = connected.backend.fleet().await?.snapshot();
    let all_shared = template_row(&ctx, cluster.id, class.template_vmid)
        .await?
        .is_some_and(|t| t.all_shared);
    ctx.set_step("planning").await;
    let cooldown = std::time::Duration::from_secs(ctx.deploy.vmid_cooldown_secs);
    match plan_missing(ctx.store.db(), &class, &cluster, all_shared, &snap, cooldown).await {
        Ok(n) => tracing::info!(class = class.id, planned = n, "class plan stored"),
        Err(PlanError::TemplateGone(vmid)) => {
            return Err(JobError::Permanent(format!(
                "template {vmid} does not exist on cluster `{}`: it was removed after the last template sync",
                cluster.cluster_id
            )))
        }
        Err(e) if e.is_transient() => return Err(JobError::Transient(e.to_string())),
        Err(e) => return Err(JobError::Permanent(e.to_string())),
    }
    let children: Vec<JobSpec> = ctx
        .classes
        .vm_rows(class.id)
        .await?
        .into_iter()
        .filter(|vm| VmState::parse(&vm.state) == Some(VmState::Planned))
        .map(|vm| JobSpec::DeployVm(ClassVmArgs { class_vm_id: vm.id }))
        .collect();
    if children.is_empty() {
        return Ok(JobOutcome::Done(Some(serde_json::json!({ "planned": 0 }))));
    }
    ctx.set_step(format!("deploying {} VMs", children.len()))
        .await;
    ctx.spawn_children_with(children, ctx.deploy.vm_attempts.max(1))
        .await
}
