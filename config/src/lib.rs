//! The one typed `Settings`, loaded once at start-up from an optional TOML file and the environment,
//! then passed down. Every value a test needs to change is a field here.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

/// Everything a labfleet process is built from. Defaults run the embedded setup: a SQLite file in
/// `data_dir` and an in-process queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `postgres://…` or `sqlite://…`; unset means a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// `amqp://…`; unset means the in-process queue (one process runs everything).
    pub amqp_url: Option<String>,
    /// Address the API listens on.
    pub bind: SocketAddr,
    /// Where the embedded database and other local state live.
    pub data_dir: PathBuf,
    /// Bootstrap admin token (`Authorization: Bearer …`).
    pub admin_token: Option<SecretString>,
    /// Key that encrypts cluster secrets at rest: 32 bytes as hex or base64. Required with
    /// `DATABASE_URL`; the embedded default keeps one in `<data_dir>/secret.key`.
    pub secret_key: Option<SecretString>,
    /// A file holding the secret key instead.
    pub secret_key_file: Option<PathBuf>,
    /// Prefix of every queue name, so several installations (or tests) share one broker.
    pub queue_prefix: String,
    /// Let RabbitMQ delete labfleet's queues after this long unused (tests); unset in production.
    pub queue_expires_ms: Option<u64>,
    /// Database pool and timeouts.
    pub database: DatabaseSettings,
    /// Job execution.
    pub worker: WorkerSettings,
    /// Retry policy for transient failures.
    pub retry: RetrySettings,
    /// Periodic recovery work.
    pub scheduler: SchedulerSettings,
    /// Class deployments: limits and how hard Proxmox is pushed.
    pub deploy: DeploySettings,
    /// Power jobs.
    pub power: PowerSettings,
    /// Logging.
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: None,
            amqp_url: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("labfleet-data"),
            admin_token: None,
            secret_key: None,
            secret_key_file: None,
            queue_prefix: "labfleet".into(),
            queue_expires_ms: None,
            database: DatabaseSettings::default(),
            worker: WorkerSettings::default(),
            retry: RetrySettings::default(),
            scheduler: SchedulerSettings::default(),
            power: PowerSettings::default(),
            deploy: DeploySettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// Database pool and timeouts.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before the API answers 503.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            max_connections: 16,
            acquire_timeout_ms: 3_000,
        }
    }
}

/// How workers run jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs of each family run at once per worker process (also the broker prefetch).
    pub concurrency: FamilyConcurrency,
    /// How long a claim lasts without renewal; a vanished worker's jobs are recovered after it.
    pub lease_secs: u64,
    /// Most deliveries claimed or completed in one database transaction.
    pub batch_max: usize,
    /// A handler running longer than this is stopped and retried (no delivery is held for long).
    pub handler_timeout_secs: u64,
    /// On shutdown, how long in-flight jobs may finish before they are handed back.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: FamilyConcurrency::default(),
            lease_secs: 30,
            batch_max: 128,
            handler_timeout_secs: 55,
            shutdown_grace_secs: 20,
        }
    }
}

impl WorkerSettings {
    /// The lease duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}

/// Per-family concurrency (one field per queue family of the job contract); 0 means this
/// process does not consume that family.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FamilyConcurrency {
    /// Class deployments and their children.
    pub deploy: u16,
    /// Single-VM work.
    pub vm: u16,
    /// Power actions.
    pub power: u16,
    /// Pool resets.
    pub reset: u16,
    /// Template and ISO sync.
    pub sync: u16,
    /// Diagnostic jobs.
    pub diag: u16,
}

impl Default for FamilyConcurrency {
    fn default() -> Self {
        FamilyConcurrency {
            deploy: 32,
            vm: 16,
            power: 16,
            reset: 8,
            sync: 2,
            diag: 256,
        }
    }
}

/// Retry policy for transient failures (see `retry`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts a job gets, the first one included.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_delay_ms: u64,
    /// Each further retry waits this many times longer.
    pub multiplier: f64,
    /// Longest delay between attempts.
    pub max_delay_ms: u64,
    /// Random spread of each delay, 0.0–1.0 (0.2 = ±20%), so retries of many jobs do not align.
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 5,
            initial_delay_ms: 1_000,
            multiplier: 2.0,
            max_delay_ms: 60_000,
            jitter: 0.2,
        }
    }
}

/// The scheduler: its leader lease and the interval of each tick (0 turns a tick off).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Time between two recovery sweeps.
    pub sweep_interval_ms: u64,
    /// How long the leader's lease lasts without renewal; a dead leader is replaced after at
    /// most this long. The leader renews every third of it.
    pub lease_ms: u64,
    /// Time between two template and ISO syncs of each cluster whose toggles allow them.
    pub inventory_sync_interval_ms: u64,
    /// Time between two idle sweeps (one `/cluster/resources` read per auto-shutdown cluster).
    pub idle_sweep_interval_ms: u64,
    /// CPU use (percent of the VM's cores) under which a VM counts as idle, unless the cluster
    /// or the class says otherwise.
    pub idle_cpu_percent: f64,
    /// How long a VM must stay idle before it is shut down, in seconds, unless the cluster or
    /// the class says otherwise (they say it in minutes).
    pub idle_window_secs: u64,
    /// Time between two reconciliations (VMs of ours that no row owns, rows whose VM vanished).
    pub reconcile_interval_ms: u64,
    /// An orphan (a VM with our marker that no row owns) is destroyed once it has been seen for
    /// this long, and only when `reconcile_destroy_orphans` is on.
    pub orphan_grace_secs: u64,
    /// Destroy orphans past their grace period (off: they are only reported).
    pub reconcile_destroy_orphans: bool,
    /// A job committed but not confirmed published for this long is published again.
    pub unpublished_grace_ms: u64,
    /// A waiting job whose message should have arrived this long ago is published again
    /// (heals a message lost with a deleted queue or a broker that lost data).
    pub stale_message_ms: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            sweep_interval_ms: 5_000,
            unpublished_grace_ms: 5_000,
            stale_message_ms: 300_000,
            lease_ms: 15_000,
            inventory_sync_interval_ms: 15 * 60_000,
            idle_sweep_interval_ms: 60_000,
            idle_cpu_percent: 5.0,
            idle_window_secs: 30 * 60,
            reconcile_interval_ms: 5 * 60_000,
            orphan_grace_secs: 3_600,
            reconcile_destroy_orphans: false,
        }
    }
}

/// Power jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerSettings {
    /// Seconds a guest gets to shut down cleanly before it is stopped hard.
    pub shutdown_timeout_secs: u32,
}

impl Default for PowerSettings {
    fn default() -> Self {
        PowerSettings {
            shutdown_timeout_secs: 60,
        }
    }
}

/// Class deployments. The caps shape load on Proxmox: PVE runs every clone, allocation and free
/// of a volume on a storage under one lock per storage, and a task gives up waiting for that lock
/// after 10 s, so more clones in flight on one storage only queue and then time out (see
/// `docs/proxmox.md`, "Locks"). The caps hold across every worker process (they are slots in the
/// database).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySettings {
    /// Largest `pool_size` of a class.
    pub max_pool_size: u32,
    /// Proxmox tasks in flight per storage (clone, create, destroy), across all workers.
    pub storage_concurrency: u32,
    /// Proxmox tasks in flight per node, across all workers.
    pub node_concurrency: u32,
    /// Attempts of each VM's job (lock timeouts and HTTP 5xx are retried with jittered backoff).
    pub vm_attempts: u32,
    /// A freed VMID is not reused before this many seconds (stale caches, late tasks).
    pub vmid_cooldown_secs: u64,
    /// Longest pause between two polls of a running Proxmox task (polls start at 100 ms).
    pub task_poll_max_ms: u64,
    /// How long a handler waits for a task before it parks and continues later (no delivery is
    /// held long).
    pub inline_wait_secs: u64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            max_pool_size: 2_000,
            storage_concurrency: 12,
            node_concurrency: 8,
            vm_attempts: 10,
            vmid_cooldown_secs: 600,
            task_poll_max_ms: 250,
            inline_wait_secs: 40,
        }
    }
}

/// Logging.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing` env-filter directive (overridden by `RUST_LOG`).
    pub filter: String,
    /// JSON lines instead of human-readable logs.
    pub json: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            filter: "info,sqlx=warn,sea_orm=warn,lapin=warn".into(),
            json: false,
        }
    }
}

/// `LABFLEET_` variables that are not settings: the settings file's own name, and the API
/// address and token of the command-line client (`labfleet deploy`), which a shell that also
/// runs `labfleet serve` may well export.
const NOT_SETTINGS: [&str; 3] = ["LABFLEET_CONFIG", "LABFLEET_SERVER", "LABFLEET_TOKEN"];

/// Variables taken as the exact string they hold. Every other `LABFLEET_*` value is parsed
/// (numbers, booleans), which would turn a key of 64 zeros into `0` and a token `0123` into
/// `123`.
const VERBATIM: [(&str, &str); 3] = [
    ("LABFLEET_SECRET_KEY", "secret_key"),
    ("LABFLEET_ADMIN_TOKEN", "admin_token"),
    ("LABFLEET_QUEUE_PREFIX", "queue_prefix"),
];

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads settings from `file` (TOML, optional) and the environment: `LABFLEET_<KEY>` and
    /// `LABFLEET_<SECTION>__<KEY>` (e.g. `LABFLEET_WORKER__LEASE_SECS=10`), plus the conventional
    /// `DATABASE_URL` and `AMQP_URL`. The environment wins over the file.
    pub fn load(file: Option<&std::path::Path>) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: std::collections::HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("LABFLEET_")
                    && !NOT_SETTINGS.contains(&k.as_str())
                    && !VERBATIM.iter().any(|(var, _)| var == k)
            })
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("LABFLEET")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let verbatim = [("DATABASE_URL", "database_url"), ("AMQP_URL", "amqp_url")];
        for (var, key) in verbatim.into_iter().chain(VERBATIM) {
            if let Ok(value) = std::env::var(var) {
                if !value.is_empty() {
                    builder = builder
                        .set_override(key, value)
                        .map_err(|e| SettingsError(e.to_string()))?;
                }
            }
        }
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that deserialize fine but make no sense.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.retry.max_attempts == 0 {
            return Err(SettingsError(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) {
            return Err(SettingsError("retry.jitter must be between 0 and 1".into()));
        }
        if self.retry.multiplier < 1.0 {
            return Err(SettingsError("retry.multiplier must be at least 1".into()));
        }
        if self.worker.batch_max == 0 {
            return Err(SettingsError("worker.batch_max must be at least 1".into()));
        }
        if self.queue_prefix.is_empty()
            || !self
                .queue_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(SettingsError(
                "queue_prefix must be letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(())
    }

    /// The database URL in effect: the configured one or the embedded SQLite file.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("labfleet.db").display()
            ),
        }
    }
}
