//! The periodic template and ISO sync: one `sync_cluster` job per active cluster whose toggles
//! allow either part, asking only for the parts allowed. A cluster whose previous sync has not
//! finished, or that does not answer now, is skipped with the reason in the tick's note (the
//! reachability probe is one cheap `/version` call); a skipped cluster is not a failed tick.

use std::time::Duration;

use labfleet_jobs::{
    store::{sql, NewJob},
    Family, JobSpec, SyncClusterArgs,
};
use sea_orm::{ConnectionTrait, DbErr};

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
        let reachable = match s.clusters.connect(c.id).await {
            Ok((_, client)) => match tokio::time::timeout(PROBE_TIMEOUT, client.version()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            },
            Err(e) => Err(e.to_string()),
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
            .store
            .create(&jobs)
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        outcome.actions = ids.len() as u64;
        // Committed: a failed publish is healed by the recovery sweep.
        if let Err(e) = s.publisher.publish(Family::Sync, &ids).await {
            tracing::warn!(error = %e, "sync jobs stored but not published yet");
        }
    }
    outcome.note = (!skipped.is_empty()).then(|| skipped.join("; "));
    Ok(outcome)
}

/// Clusters with a `sync_cluster` job that has not finished.
async fn clusters_syncing(s: &Scheduler) -> Result<Vec<i64>, DbErr> {
    let db = s.store.db();
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            "SELECT payload FROM jobs WHERE kind = 'sync_cluster' \
             AND status IN ('queued', 'running', 'retrying')",
            vec![],
        ))
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let payload: serde_json::Value = r.try_get("", "payload")?;
        if let Ok(JobSpec::SyncCluster(args)) = JobSpec::from_parts("sync_cluster", payload) {
            out.push(args.cluster_db_id);
        }
    }
    Ok(out)
}
