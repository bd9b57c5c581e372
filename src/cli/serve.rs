//! `labfleet serve`: API, worker and scheduler in one process. With nothing configured this is
//! the embedded default (SQLite file, in-process queue).

use std::net::SocketAddr;

use anyhow::Context;
use labfleet_jobs::Settings;
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{components::Components, shutdown};

/// Runs everything until Ctrl-C or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    if settings.admin_token.is_none() {
        // No token configured: make one for this run and show it once, so the API is usable.
        let token = hex::encode(rand::random::<[u8; 24]>());
        println!("admin token (set LABFLEET_ADMIN_TOKEN to choose your own): {token}");
        settings.admin_token = Some(SecretString::from(token));
    }
    let parts = Components::build(settings).await?;
    let stop = shutdown::on_signal();
    let services = Services::start(&parts, stop).await?;
    println!(
        "labfleet is serving on http://{} (database: {}, queue: {})",
        services.addr,
        describe_db(&parts.settings),
        if parts.settings.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-process"
        }
    );
    services.wait().await
}

/// API, worker and scheduler running in this process until `stop` fires.
pub struct Services {
    /// Where the API listens.
    pub addr: SocketAddr,
    api: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
    scheduler: JoinHandle<()>,
}

impl Services {
    /// Binds the API and starts the three parts on `parts`.
    pub async fn start(parts: &Components, stop: CancellationToken) -> anyhow::Result<Services> {
        let api = labfleet_api::Application::build(
            parts.settings.clone(),
            parts.store.clone(),
            parts.publisher.clone(),
            parts.clusters.clone(),
        )
        .await
        .with_context(|| format!("cannot listen on {}", parts.settings.bind))?;
        let addr = api.local_addr()?;
        let worker = parts.worker();
        parts.republish_if_in_process().await?;
        let api = tokio::spawn(api.run_until_stopped(stop.clone().cancelled_owned()));
        let worker = tokio::spawn(worker.run_until_stopped(stop.clone().cancelled_owned()));
        let scheduler = tokio::spawn(parts.scheduler().run_until_stopped(stop.cancelled_owned()));
        Ok(Services {
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

fn describe_db(settings: &Settings) -> String {
    match &settings.database_url {
        Some(url) if url.starts_with("postgres") => "PostgreSQL".into(),
        Some(_) => "SQLite".into(),
        None => format!(
            "SQLite file {}",
            settings.data_dir.join("labfleet.db").display()
        ),
    }
}
