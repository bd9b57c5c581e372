//! Building the shared parts of a process from settings: database (migrated), queue transport,
//! job store and publisher.

use std::sync::Arc;

use anyhow::Context;
use labfleet_clusters::{ClusterStore, SecretBox};
use labfleet_jobs::{
    db,
    queue::{MemoryQueue, RabbitQueue},
    JobStore, Publisher, Queue, Settings,
};
use sea_orm::DatabaseConnection;

/// The parts every labfleet service is built from.
pub struct Components {
    pub settings: Arc<Settings>,
    pub store: JobStore,
    pub publisher: Publisher,
    pub clusters: ClusterStore,
}

impl Components {
    /// Connects, migrates and wires the transport chosen by the settings.
    pub async fn build(settings: Settings) -> anyhow::Result<Components> {
        let db = database(&settings).await?;
        let queue = match &settings.amqp_url {
            Some(url) => Queue::Rabbit(RabbitQueue::new(
                url.clone(),
                settings.queue_prefix.clone(),
                settings.queue_expires_ms,
            )),
            None => Queue::Memory(MemoryQueue::new()),
        };
        let secrets = secret_box(&settings)?;
        let clusters = ClusterStore::new(db.clone(), secrets);
        let store = JobStore::new(db);
        let (publisher, _marker) = Publisher::start(queue, store.clone());
        Ok(Components {
            settings: Arc::new(settings),
            store,
            publisher,
            clusters,
        })
    }

    /// A worker on these parts.
    pub fn worker(&self) -> labfleet_worker::Worker {
        labfleet_worker::Worker::new(
            self.store.clone(),
            self.publisher.clone(),
            self.clusters.clone(),
            (*self.settings).clone(),
        )
    }

    /// A scheduler on these parts.
    pub fn scheduler(&self) -> labfleet_scheduler::Scheduler {
        labfleet_scheduler::Scheduler::new(
            self.settings.clone(),
            self.store.clone(),
            self.publisher.clone(),
            self.clusters.clone(),
        )
    }

    /// The in-process queue forgets its messages with the process: send every waiting job again.
    pub async fn republish_if_in_process(&self) -> anyhow::Result<()> {
        if self.publisher.queue().is_in_process() {
            let waiting = self.store.all_waiting().await?;
            let n = self.publisher.republish(&waiting).await;
            if n > 0 {
                tracing::info!(jobs = n, "requeued waiting jobs from the database");
            }
        }
        Ok(())
    }
}

/// The database the settings name (the embedded SQLite file by default), migrated.
pub async fn database(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let url_kind = if settings.database_url.is_some() {
        "configured database"
    } else {
        "embedded SQLite database"
    };
    let db = db::connect(settings)
        .await
        .with_context(|| format!("cannot open the {url_kind}"))?;
    db::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    Ok(db)
}

/// The cipher for cluster secrets: the configured key, or in the embedded default a key file in
/// the data directory. With `DATABASE_URL` set a key must be configured (a clear error otherwise).
pub fn secret_box(settings: &Settings) -> anyhow::Result<SecretBox> {
    let embedded_dir = settings
        .database_url
        .is_none()
        .then_some(settings.data_dir.as_path());
    Ok(SecretBox::resolve(
        settings.secret_key.as_ref(),
        settings.secret_key_file.as_deref(),
        embedded_dir,
    )?)
}
