//! `destroy_orphan`: destroys a VM that carries our marker and that no VM row owns, after
//! checking both again (a deploy job may have adopted it since reconciliation saw it).

use labfleet_fleet::{backend::Expect, vmids};
use labfleet_jobs::OrphanArgs;
use sea_orm::ConnectionTrait;

use crate::{
    context::{JobContext, JobError, JobOutcome},
    jobs::vm::{release_slots, remove_if_ours, Removal},
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
    let result = async {
        let id = args.vmid.to_string();
        let expect = Expect::Vm(args.marker_vm_id);
        match remove_if_ours(&ctx, backend.as_ref(), cluster.id, &id, expect).await? {
            Removal::Parked(outcome) => return Ok(outcome),
            Removal::Foreign(_) => {
                // Its marker is gone or changed: not ours to destroy any more.
                forget_orphan(&ctx, &args).await?;
                return Ok(JobOutcome::Done(Some(
                    serde_json::json!({ "foreign": args.vmid }),
                )));
            }
            Removal::Gone => {}
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
