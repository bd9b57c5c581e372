//! Lease renewal: one statement per interval extends every lease this worker holds and reports
//! each held claim. Handlers whose job was asked to stop are cancelled, and so are handlers whose
//! claim is gone (the job was taken back after a lost lease): their outcome would be refused.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::Shared;

pub(crate) async fn heartbeat_loop(s: Arc<Shared>, stop: CancellationToken) {
    let lease = s.settings.worker.lease();
    // Renew well before expiry, and check cancellations at least every few seconds. Leases are
    // renewed even when no handler runs: outcomes waiting to be written still hold theirs.
    let every = (lease / 3).min(Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let renewing_since = Instant::now();
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
        match s.store.renew_leases(&s.id, until).await {
            Ok(held) => {
                let held: HashMap<Uuid, (Option<Uuid>, bool)> = held
                    .into_iter()
                    .map(|h| (h.job_id, (h.lease_token, h.cancel_requested)))
                    .collect();
                if let Ok(running) = s.running.lock() {
                    for (id, job) in running.iter() {
                        match held.get(id) {
                            Some((_, true)) => job.cancel.cancel(),
                            Some((token, false)) if *token == Some(job.lease_token) => {}
                            _ if job.claimed_at < renewing_since => {
                                tracing::warn!(job.id = %id, "lease lost: the job was taken over; stopping this run");
                                job.cancel.cancel();
                            }
                            _ => {}
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not renew leases"),
        }
    }
}
