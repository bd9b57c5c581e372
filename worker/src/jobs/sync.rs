//! `sync_cluster`: refreshes one cluster's inventory (nodes, storages, templates, ISOs) and keeps
//! the sync report as the job's result. An unreachable cluster or a Proxmox 5xx is retried; a
//! cluster that no longer exists or has no usable credentials is not (another attempt would fail
//! the same way).

use std::time::Duration;

use labfleet_clusters::{
    connection::{client_for, ConnectionError},
    ClusterError, SyncScope,
};
use labfleet_jobs::SyncClusterArgs;

use crate::context::{JobContext, JobError, JobOutcome};

/// A sync holds its delivery until it ends, and labfleet holds no delivery for longer than about
/// a minute (long waits become delayed continuations, so RabbitMQ's consumer timeout never
/// fires): a sync must end well within a minute.
const SYNC_LIMIT: Duration = Duration::from_secs(50);

pub(crate) async fn run(args: SyncClusterArgs, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let id = args.cluster_db_id;
    let cluster = ctx.clusters.get(id).await.map_err(|e| match e {
        ClusterError::NotFound(_) => JobError::Permanent(format!("cluster {id} no longer exists")),
        e => JobError::Transient(format!("cannot read cluster {id}: {e}")),
    })?;
    let name = &cluster.cluster_id;
    let secrets = ctx.clusters.secrets_of(&cluster).map_err(|e| {
        JobError::Permanent(format!(
            "cannot open the credentials of cluster {name}: {e}"
        ))
    })?;
    let client = client_for(&cluster, &secrets).map_err(|e| match e {
        ConnectionError::Proxmox(p) if p.is_transient() => {
            JobError::Transient(format!("cluster {name}: {p}"))
        }
        e => JobError::Permanent(format!("cluster {name}: {e}")),
    })?;
    let scope = SyncScope {
        templates: args.templates,
        isos: args.isos,
    };
    let inventory = ctx.clusters.inventory();
    let sync = tokio::time::timeout(SYNC_LIMIT, inventory.sync(&cluster, &client, scope));
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
