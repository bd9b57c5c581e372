//! Job handlers, one module per kind (or family of kinds), and the one exhaustive `match` that
//! dispatches to them.

mod deploy;
mod noop;
mod power;
mod sync;

use labfleet_jobs::JobSpec;

use crate::context::{JobContext, JobError, JobOutcome};

/// Runs one job. Adding a `JobSpec` variant fails to compile until it is handled here.
pub async fn run(spec: JobSpec, ctx: JobContext) -> Result<JobOutcome, JobError> {
    match spec {
        JobSpec::Noop(args) => noop::run(args, ctx).await,
        JobSpec::DeployClass(args) => deploy::class::run(args, ctx).await,
        JobSpec::DeployVm(args) => deploy::vm::run(args, ctx).await,
        JobSpec::DestroyClass(args) => deploy::destroy::class(args, ctx).await,
        JobSpec::DestroyVm(args) => deploy::destroy::vm(args, ctx).await,
        JobSpec::SyncCluster(args) => sync::run(args, ctx).await,
        JobSpec::DestroyOrphan(args) => deploy::destroy::orphan(args, ctx).await,
        JobSpec::VmPower(args) => power::run(args, ctx).await,
    }
}
