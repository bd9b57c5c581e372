//! The recovery sweeps that make "nothing accepted is ever lost" true: expired leases (a worker
//! vanished), jobs committed but not published (the broker was down), messages lost in transit,
//! parents whose completion was missed, and idempotency keys past their window.

use std::time::Duration;

use labfleet_config::Settings;
use labfleet_jobs::{JobStore, Publisher, StoreError};

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Jobs taken back from vanished workers.
    pub leases_recovered: usize,
    /// Jobs published again.
    pub republished: usize,
    /// Parents finished.
    pub parents_finished: usize,
    /// Idempotency keys forgotten.
    pub keys_purged: u64,
}

impl SweepReport {
    /// True when the sweep found nothing to do.
    pub fn is_quiet(&self) -> bool {
        *self == SweepReport::default()
    }
}

/// Runs every recovery step once.
pub async fn sweep_once(
    settings: &Settings,
    store: &JobStore,
    publisher: &Publisher,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport {
        leases_recovered: store.recover_expired_leases().await?.len(),
        ..Default::default()
    };
    let due = store
        .due_for_republish(
            Duration::from_millis(settings.scheduler.unpublished_grace_ms),
            Duration::from_millis(settings.scheduler.stale_message_ms),
        )
        .await?;
    report.republished = publisher.republish(&due).await;
    let parents = store.parents_ready_to_finish().await?;
    report.parents_finished = store.finalize_parents(&parents).await?.len();
    report.keys_purged = store.purge_idempotency_keys().await?;
    metrics::counter!("labfleet_scheduler_actions_total", "action" => "lease_recovered")
        .increment(report.leases_recovered as u64);
    metrics::counter!("labfleet_scheduler_actions_total", "action" => "republished")
        .increment(report.republished as u64);
    Ok(report)
}
