//! Job handlers by concept — `class/` (deploy and destroy a class), `vm/` (make, destroy and
//! power one VM), `orphan` (remove a VM of ours no row owns), `sync` (a cluster's inventory),
//! `noop` — and the one exhaustive `match` that dispatches to them. Every hypervisor call goes
//! through the cluster's `Backend` (`ctx.connect(cluster)`).

mod class;
mod noop;
mod orphan;
mod sync;
mod vm;

use labfleet_entities::{class as class_row, template};
use labfleet_jobs::JobSpec;

use crate::context::{JobContext, JobError, JobOutcome};

/// Runs one job. Adding a `JobSpec` variant fails to compile until it is handled here.
pub async fn run(spec: JobSpec, ctx: JobContext) -> Result<JobOutcome, JobError> {
    match spec {
        JobSpec::Noop(args) => noop::run(args, ctx).await,
        JobSpec::DeployClass(args) => class::deploy::run(args, ctx).await,
        JobSpec::DeployVm(args) => vm::create::run(args, ctx).await,
        JobSpec::DestroyClass(args) => class::destroy::run(args, ctx).await,
        JobSpec::DestroyVm(args) => vm::destroy::run(args, ctx).await,
        JobSpec::SyncCluster(args) => sync::run(args, ctx).await,
        JobSpec::DestroyOrphan(args) => orphan::run(args, ctx).await,
        JobSpec::VmPower(args) => vm::power::run(args, ctx).await,
    }
}

/// A class by id; a class that no longer exists fails the job for good.
async fn load_class(ctx: &JobContext, class_id: i64) -> Result<class_row::Model, JobError> {
    ctx.classes
        .get(class_id)
        .await?
        .ok_or_else(|| JobError::Permanent(format!("class {class_id} does not exist")))
}

/// The synced template row of a cluster, if the inventory has it.
async fn template_row(
    ctx: &JobContext,
    cluster_db_id: i64,
    vmid: i64,
) -> Result<Option<template::Model>, JobError> {
    Ok(ctx
        .clusters
        .inventory()
        .template(cluster_db_id, vmid)
        .await?)
}
