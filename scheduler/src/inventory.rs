//! The periodic template and ISO sync: one `sync_cluster` job per active cluster whose toggles
//! allow either part, asking only for the parts allowed. A cluster whose previous sync has not
//! finished, or that does not answer now, is skipped with the reason in the tick's note (the
//! reachability probe is the backend's connection test: on Proxmox `/version` and `/nodes`); a skipped cluster is not a failed tick.

use std::time::Duration;

use labfleet_jobs::{store::NewJob, JobKind, JobSpec, SyncClusterArgs};
use sea_orm::DbErr;

use crate::{ticks::TickOutcome, Scheduler};

/// How long the probe waits for a cluster's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the sync jobs that are due.
pub async fn run(s: &Scheduler) -> Result<TickOutcome, DbErr> {
    let clusters = s.active_clusters().await?;
    let unfinished = clusters_syncing(s).await?;
    let mut outcome = TickOutcome::default();
    let mut skipped = Vec::new();
    let mut jobs = Vec::new();
    for c in &clusters {
        if !(c.allow_template_sync || c.allow_iso_sync) {
            continue;
        }
        outcome.seen += 1;
        if unfinished.contains(&c.id) {
            skipped.push(format!("{}: previous sync still running", c.cluster_id));
            continue;
        }
        let reachable = match tokio::time::timeout(PROBE_TIMEOUT, s.backends.probe(c.id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        if let Err(reason) = reachable {
            tracing::warn!(cluster = %c.cluster_id, %reason, "periodic sync skipped: cluster unreachable");
            skipped.push(format!("{}: unreachable ({reason})", c.cluster_id));
            continue;
        }
        jobs.push(NewJob {
            spec: JobSpec::SyncCluster(SyncClusterArgs {
                cluster_db_id: c.id,
                templates: c.allow_template_sync,
                isos: c.allow_iso_sync,
            }),
            parent_id: None,
            created_by: "scheduler".into(),
            max_attempts: s.settings.retry.max_attempts,
            class_id: None,
        });
    }
    if !jobs.is_empty() {
        let ids = s
            .publisher
            .submit(&jobs)
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        outcome.actions = ids.len() as u64;
    }
    outcome.note = (!skipped.is_empty()).then(|| skipped.join("; "));
    Ok(outcome)
}

/// Clusters with a `sync_cluster` job that has not finished.
async fn clusters_syncing(s: &Scheduler) -> Result<Vec<i64>, DbErr> {
    let syncs = s
        .store
        .unfinished_of_kind(JobKind::SyncCluster)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(syncs
        .into_iter()
        .filter_map(|spec| match spec {
            JobSpec::SyncCluster(args) => Some(args.cluster_db_id),
            _ => None,
        })
        .collect())
}
