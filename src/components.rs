//! Building the shared parts of a process from settings: database (migrated), queue transport,
//! job store and publisher.

use std::sync::Arc;

use anyhow::Context;
use labfleet_backend_proxmox::{ProxmoxBackends, Tuning};
use labfleet_clusters::{ClusterStore, SecretBox};
use labfleet_config::Settings;
use labfleet_db as db;
use labfleet_jobs::{
    queue::{MemoryQueue, RabbitQueue},
    JobStore, Publisher, Queue,
};
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// The parts every labfleet service is built from.
pub struct Components {
    pub settings: Arc<Settings>,
    pub store: JobStore,
    pub publisher: Publisher,
    pub clusters: ClusterStore,
    /// The hypervisor of each registered cluster.
    pub backends: Arc<ProxmoxBackends>,
}

impl Components {
    /// Connects, migrates and wires the transport chosen by the settings.
    pub async fn build(settings: Settings) -> anyhow::Result<Components> {
        let db = database(&settings).await?;
        tracing::info!(database = %describe_database(&settings), "database ready");
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
        let backends = backends(&settings, &clusters);
        let store = JobStore::new(db);
        let (publisher, _marker) = Publisher::start(queue, store.clone());
        Ok(Components {
            settings: Arc::new(settings),
            store,
            publisher,
            clusters,
            backends,
        })
    }

    /// The HTTP API on these parts, bound to `settings.bind` (not yet serving).
    pub async fn api(&self) -> anyhow::Result<labfleet_api::Application> {
        labfleet_api::Application::build(
            self.settings.clone(),
            self.store.clone(),
            self.publisher.clone(),
            self.clusters.clone(),
            self.backends.clone(),
        )
        .await
        .with_context(|| format!("cannot listen on {}", self.settings.bind))
    }

    /// A worker on these parts.
    pub fn worker(&self) -> labfleet_worker::Worker {
        labfleet_worker::Worker::new(
            self.store.clone(),
            self.publisher.clone(),
            self.clusters.clone(),
            self.backends.clone(),
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
            self.backends.clone(),
        )
    }

    /// Closes the database after every part built on these components has stopped. For the
    /// embedded SQLite file this folds the write-ahead log back into `labfleet.db` first, so a
    /// cleanly stopped labfleet leaves one file behind (not a `-wal` beside it).
    pub async fn close(self) -> anyhow::Result<()> {
        let db = self.store.db().clone();
        drop(self);
        if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await
                .context("cannot checkpoint the SQLite write-ahead log")?;
        }
        db.close().await.context("cannot close the database")?;
        Ok(())
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

/// The hypervisor backends of a process: one per registered cluster, kept while its row is
/// unchanged.
pub fn backends(settings: &Settings, clusters: &ClusterStore) -> Arc<ProxmoxBackends> {
    let tuning = Tuning {
        task_poll_max: std::time::Duration::from_millis(settings.deploy.task_poll_max_ms.max(100)),
    };
    Arc::new(ProxmoxBackends::new(clusters.clone(), tuning))
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

/// Whether a command may bring a database into being.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMissing {
    /// Commands that only read or change what exists (`user list`, `token revoke`): in the
    /// embedded default, a data directory without `labfleet.db` is most likely the wrong
    /// directory, and an empty new database there would hide that.
    Refuse,
    /// Commands that create (`user create`, `token create`) may be the first thing run on a new
    /// installation: they create the database, and say so.
    Create,
}

/// The database a command run from the command line (`user`, `token`) works on. Says on stderr
/// which database it uses, and whether it was just created.
pub async fn cli_database(
    settings: &Settings,
    if_missing: IfMissing,
) -> anyhow::Result<DatabaseConnection> {
    if settings.database_url.is_none() {
        let file = embedded_file(settings);
        if !file.exists() && if_missing == IfMissing::Create {
            eprintln!(
                "no labfleet database at {} yet: creating one (`labfleet serve` with the same \
                 LABFLEET_DATA_DIR uses it)",
                file.display()
            );
        } else if !file.exists() {
            anyhow::bail!(
                "there is no labfleet database at {} (LABFLEET_DATA_DIR is {}): run this where \
                 `labfleet serve` keeps its data, or set LABFLEET_DATA_DIR or DATABASE_URL",
                file.display(),
                settings.data_dir.display()
            );
        }
    }
    eprintln!("database: {}", describe_database(settings));
    database(settings).await
}

/// The embedded default's SQLite file.
fn embedded_file(settings: &Settings) -> std::path::PathBuf {
    settings.data_dir.join("labfleet.db")
}

/// Which database the settings name, for people: "PostgreSQL (host …)", "SQLite file …".
pub fn describe_database(settings: &Settings) -> String {
    match &settings.database_url {
        Some(url) if url.starts_with("postgres") => {
            // Host and database only: the URL may carry a password.
            let place = url
                .rsplit('@')
                .next()
                .filter(|_| url.contains('@'))
                .or_else(|| url.split("://").nth(1))
                .unwrap_or_default();
            format!("PostgreSQL {place}")
        }
        Some(url) => format!("SQLite {}", url.trim_start_matches("sqlite://")),
        None => {
            let file = embedded_file(settings);
            let shown = std::fs::canonicalize(&file).unwrap_or(file);
            format!("SQLite file {}", shown.display())
        }
    }
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
