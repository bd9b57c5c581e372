//! Lease renewal: one statement per interval extends every lease this worker holds, and reports
//! which of its jobs were asked to stop, so their handlers are cancelled.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::engine::Shared;

pub(crate) async fn heartbeat_loop(s: Arc<Shared>, stop: CancellationToken) {
    let lease = s.settings.worker.lease();
    // Renew well before expiry, and check cancellations at least every few seconds.
    let every = (lease / 3).min(Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let nothing_running = s.running.lock().map(|r| r.is_empty()).unwrap_or(true);
        if nothing_running {
            continue;
        }
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
        match s.store.renew_leases(&s.id, until).await {
            Ok(cancelled) => {
                if let Ok(running) = s.running.lock() {
                    for id in cancelled {
                        if let Some(token) = running.get(&id) {
                            token.cancel();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not renew leases"),
        }
    }
}
