//! `sync_cluster`: refreshes one cluster's inventory (nodes, storages, templates, ISOs) and keeps
//! the sync report as the job's result. An unreachable cluster or a hypervisor 5xx is retried; a
//! cluster that no longer exists or has no usable credentials is not (another attempt would fail
//! the same way).

use std::time::Duration;

use labfleet_clusters::SyncScope;
use labfleet_fleet::FactoryError;
use labfleet_jobs::SyncClusterArgs;

use crate::context::{JobContext, JobError, JobOutcome};

/// A sync holds its delivery until it ends, and labfleet holds no delivery for longer than about
/// a minute (long waits become delayed continuations, so RabbitMQ's consumer timeout never
/// fires): a sync must end well within a minute.
const SYNC_LIMIT: Duration = Duration::from_secs(50);

pub(crate) async fn run(args: SyncClusterArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let id = args.cluster_db_id;
    let connected = ctx.backends.connect(id).await.map_err(|e| match e {
        FactoryError::Gone(_) => JobError::Permanent(format!("cluster {id} no longer exists")),
        FactoryError::Unavailable(m) => {
            JobError::Transient(format!("cannot read cluster {id}: {m}"))
        }
        e => JobError::Permanent(e.to_string()),
    })?;
    let (cluster, backend) = (connected.cluster, connected.backend);
    let name = &cluster.cluster_id;
    let scope = SyncScope {
        templates: args.templates,
        isos: args.isos,
    };
    let inventory = ctx.clusters.inventory();
    let sync = tokio::time::timeout(
        SYNC_LIMIT,
        inventory.sync(&cluster, backend.as_ref(), scope),
    );
    let report = tokio::select! {
        _ = ctx.cancel.cancelled() => return Err(JobError::Cancelled),
        r = sync => r.map_err(|_| {
            JobError::Transient(format!("sync of cluster {name} took longer than {SYNC_LIMIT:?}"))
        })?,
    };
    match report {
        Ok(report) => Ok(JobOutcome::Done(serde_json::to_value(&report).ok())),
        Err(e) if e.is_transient() => Err(JobError::Transient(format!(
            "sync of cluster {name} failed: {e}"
        ))),
        Err(e) => Err(JobError::Permanent(format!(
            "sync of cluster {name} failed: {e}"
        ))),
    }
}
