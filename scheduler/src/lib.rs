//! The scheduler: periodic work. For now the recovery sweeps of the job engine; template and ISO
//! sync, idle shutdown, pool resets and the leader lease that runs each tick once across replicas
//! come with the scheduler issue.

mod recovery;

pub use recovery::{sweep_once, SweepReport};

use std::{future::Future, time::Duration};

use labfleet_jobs::{JobStore, Publisher, Settings};

/// Runs the sweeps every `scheduler.sweep_interval_ms` until `shutdown` resolves.
pub async fn run_until_stopped(
    settings: &Settings,
    store: JobStore,
    publisher: Publisher,
    shutdown: impl Future<Output = ()>,
) {
    let every = Duration::from_millis(settings.scheduler.sweep_interval_ms.max(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        match sweep_once(settings, &store, &publisher).await {
            Ok(report) if report.is_quiet() => {}
            Ok(report) => tracing::info!(?report, "recovery sweep"),
            Err(e) => tracing::warn!(error = %e, "recovery sweep failed; next tick tries again"),
        }
    }
}
