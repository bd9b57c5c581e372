//! The whole system in this process: API, worker and scheduler on one set of components, as
//! `labfleet serve`, `labfleet demo` and the integration tests run it.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::components::Components;

/// API, worker and scheduler running in this process until their stop tokens fire.
pub struct System {
    /// Where the API listens.
    pub addr: SocketAddr,
    api: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
    scheduler: JoinHandle<()>,
}

impl System {
    /// Binds the API and starts the three parts on `parts`; all stop when `stop` fires.
    pub async fn start(parts: &Components, stop: CancellationToken) -> anyhow::Result<System> {
        let scheduler_stop = stop.child_token();
        Self::start_with_scheduler_stop(parts, stop, scheduler_stop).await
    }

    /// [`System::start`] with a token of the scheduler's own, so a test can stop the scheduler
    /// alone (and run replicas of its own) while the rest keeps running. `stop` must also stop
    /// the scheduler (pass a child token of it).
    pub async fn start_with_scheduler_stop(
        parts: &Components,
        stop: CancellationToken,
        scheduler_stop: CancellationToken,
    ) -> anyhow::Result<System> {
        let api = parts.api().await?;
        let addr = api.local_addr()?;
        let worker = parts.worker();
        parts.republish_if_in_process().await?;
        let api = tokio::spawn(api.run_until_stopped(stop.clone().cancelled_owned()));
        let worker = tokio::spawn(worker.run_until_stopped(stop.cancelled_owned()));
        let scheduler = tokio::spawn(
            parts
                .scheduler()
                .run_until_stopped(scheduler_stop.cancelled_owned()),
        );
        Ok(System {
            addr,
            api,
            worker,
            scheduler,
        })
    }

    /// Waits until all three have stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.api.await??;
        self.worker.await?;
        self.scheduler.await?;
        Ok(())
    }
}
