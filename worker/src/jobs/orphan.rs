//! `destroy_orphan`: destroys a VM that carries our marker and that no VM row owns, after
//! checking both again (a deploy job may have adopted it since reconciliation saw it).

use std::time::Duration;

use labfleet_fleet::{backend::Expect, vmids, Inspected};
use labfleet_jobs::OrphanArgs;
use sea_orm::ConnectionTrait;

use crate::{
    context::{JobContext, JobError, JobOutcome},
    jobs::vm::{release_slots, stop_and_destroy},
};

pub(crate) async fn run(args: OrphanArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let owned = ctx
        .store
        .db()
        .query_one(labfleet_db::sql(
            ctx.store.db().get_database_backend(),
            "SELECT id FROM class_vms WHERE cluster_db_id = ? AND vmid = ?",
            vec![args.cluster_db_id.into(), args.vmid.into()],
        ))
        .await?;
    if owned.is_some() {
        forget_orphan(&ctx, &args).await?;
        return Ok(JobOutcome::Done(Some(
            serde_json::json!({ "owned_now": args.vmid }),
        )));
    }
    let connected = ctx.connect(args.cluster_db_id).await?;
    let (cluster, backend) = (connected.cluster, connected.backend);
    let deadline = ctx.run_deadline();
    let result = async {
        let found = backend
            .inspect(&args.vmid.to_string(), Expect::Vm(args.marker_vm_id))
            .await?;
        match found {
            Inspected::Absent => {}
            Inspected::Foreign { .. } => {
                // Its marker is gone or changed: not ours to destroy any more.
                forget_orphan(&ctx, &args).await?;
                return Ok(JobOutcome::Done(Some(
                    serde_json::json!({ "foreign": args.vmid }),
                )));
            }
            Inspected::Ours {
                in_progress: true, ..
            }
            | Inspected::BeingMade => {
                ctx.set_step("waiting for its clone to finish").await;
                return Ok(JobOutcome::park(
                    Duration::from_secs(1),
                    "clone still running",
                ));
            }
            Inspected::Ours { guest, running, .. } => {
                if let Some(parked) = stop_and_destroy(
                    &ctx,
                    backend.as_ref(),
                    cluster.id,
                    &guest,
                    running,
                    deadline,
                )
                .await?
                {
                    return Ok(parked);
                }
            }
        }
        vmids::release(ctx.store.db(), cluster.id, args.vmid).await?;
        forget_orphan(&ctx, &args).await?;
        Ok(JobOutcome::Done(Some(
            serde_json::json!({ "destroyed": args.vmid }),
        )))
    }
    .await;
    if !matches!(result, Ok(JobOutcome::Continue { .. })) {
        release_slots(&ctx).await;
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
        .await?;
    Ok(())
}
