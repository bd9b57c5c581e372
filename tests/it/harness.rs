//! `spawn_app()`: the whole system in-process (API on port 0, worker, scheduler) on a fresh
//! database and queue prefix, plus helpers that speak to its API.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use labfleet_config::Settings;
use labfleet_db as db;
use labfleet_jobs::{JobStore, Queue};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const TOKEN: &str = "test-admin-token";

/// Which infrastructure a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + in-process queue.
    Embedded,
    /// PostgreSQL + RabbitMQ on loopback.
    Real,
}

/// A running system under test.
#[allow(dead_code)] // fields used by some test modules only
pub struct TestApp {
    pub addr: SocketAddr,
    pub clusters: labfleet_clusters::ClusterStore,
    /// The system's hypervisor backends (the same the worker and scheduler use).
    pub backends: Arc<labfleet_backend_proxmox::ProxmoxBackends>,
    pub http: reqwest::Client,
    pub store: JobStore,
    pub settings: Settings,
    pub queue: Queue,
    pub publisher: labfleet_jobs::Publisher,
    pub database_url: String,
    stop: CancellationToken,
    stop_scheduler: CancellationToken,
    system: labfleet::system::System,
    db_name: Option<String>,
    _dir: tempfile::TempDir,
}

/// Settings every test starts from: short intervals so recovery happens within a test.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings {
        bind: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        admin_token: Some(SecretString::from(TOKEN)),
        secret_key: Some(SecretString::from(hex::encode(rand::random::<[u8; 32]>()))),
        queue_prefix: format!("it-{}", hex_id()),
        queue_expires_ms: Some(120_000),
        ..Settings::default()
    };
    s.retry.initial_delay_ms = 50;
    s.retry.max_delay_ms = 500;
    s.scheduler.sweep_interval_ms = 200;
    s.scheduler.unpublished_grace_ms = 300;
    // The last-resort heal for a lost message, short enough to act within a test.
    s.scheduler.stale_message_ms = 5_000;
    // A dead leader is replaced within 1.5 s; periodic Proxmox work only where a test asks.
    s.scheduler.lease_ms = 1_500;
    s.scheduler.inventory_sync_interval_ms = 0;
    s.scheduler.idle_sweep_interval_ms = 0;
    s.scheduler.reconcile_interval_ms = 0;
    s.worker.lease_secs = 3;
    s.worker.shutdown_grace_secs = 2;
    s.database.acquire_timeout_ms = 1_500;
    s
}

/// Polls `condition` every 25 ms until it yields a value and returns that value; panics with
/// `what` and the last thing seen once `within` has passed. The one way tests wait: on a
/// condition, with a deadline. An absence is proven by waiting on a positive sign that the
/// component ran (its tick record moved on, its job finished), then looking.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn hex_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Starts the system on `backend` with settings adjusted by `tweak`.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    let mut db_name = None;
    if backend == Backend::Real {
        let name = fresh_pg_database().await;
        settings.database_url = Some(pg_url(&name));
        settings.amqp_url = Some(AMQP_URL.into());
        db_name = Some(name);
    }
    tweak(&mut settings);
    let database_url = settings.effective_database_url();
    // The same wiring as `labfleet serve`: components from the settings, then the system on
    // them; the scheduler gets a stop of its own so a test can run replicas instead.
    let parts = labfleet::components::Components::build(settings.clone())
        .await
        .expect("components");
    let stop = CancellationToken::new();
    let stop_scheduler = stop.child_token();
    let system = labfleet::system::System::start_with_scheduler_stop(
        &parts,
        stop.clone(),
        stop_scheduler.clone(),
    )
    .await
    .expect("start the system");
    let addr = system.addr;
    let queue = parts.publisher.queue().clone();
    TestApp {
        addr,
        clusters: parts.clusters.clone(),
        backends: parts.backends.clone(),
        http: reqwest::Client::new(),
        store: parts.store.clone(),
        settings,
        queue,
        publisher: parts.publisher.clone(),
        database_url,
        stop,
        stop_scheduler,
        system,
        db_name,
        _dir: dir,
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with the admin token; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `POST /api/jobs` with a noop job; returns its id.
    pub async fn submit_noop(&self, args: Value) -> Uuid {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/jobs",
                Some(serde_json::json!({"kind": "noop", "args": args})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["job_id"]
            .as_str()
            .expect("job_id")
            .parse()
            .expect("uuid")
    }

    pub async fn job(&self, id: Uuid) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/jobs/{id}?children_limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the job until `done` holds for it, or panics after `within`.
    pub async fn wait_job(
        &self,
        id: Uuid,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let done = &done;
        eventually(
            within,
            "the job did not reach the expected state",
            || async move {
                let job = self.job(id).await;
                if done(&job) {
                    Ok(job)
                } else {
                    Err(format!("{job:#}"))
                }
            },
        )
        .await
    }

    /// `labfleet <subcommand>` as a child process on this system's database, broker, queue
    /// prefix and secret key (quiet, killed when dropped); add settings with `.env(…)`.
    pub fn labfleet_process(&self, subcommand: &str) -> tokio::process::Command {
        use secrecy::ExposeSecret;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_labfleet"));
        cmd.arg(subcommand)
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", AMQP_URL)
            .env("LABFLEET_QUEUE_PREFIX", &self.settings.queue_prefix)
            .env("LABFLEET_QUEUE_EXPIRES_MS", "120000")
            .env(
                "LABFLEET_SECRET_KEY",
                self.settings
                    .secret_key
                    .as_ref()
                    .expect("test settings have a secret key")
                    .expose_secret(),
            )
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Another scheduler replica on this system's parts, named `holder`.
    pub fn scheduler(&self, holder: &str) -> labfleet_scheduler::Scheduler {
        labfleet_scheduler::Scheduler::new(
            Arc::new(self.settings.clone()),
            self.store.clone(),
            self.publisher.clone(),
            self.clusters.clone(),
            self.backends.clone(),
        )
        .with_holder(holder)
    }

    /// Stops the scheduler the system started with (tests that run their own replicas).
    pub fn stop_own_scheduler(&self) {
        self.stop_scheduler.cancel();
    }

    pub async fn wait_status(&self, id: Uuid, status: &str, within: Duration) -> Value {
        self.wait_job(id, within, |j| j["status"] == status).await
    }

    /// Stops the system, checks that its queues are empty, and drops its database.
    pub async fn finish(self) {
        // Stop the sweeps (they may republish), let the worker drain what is left (duplicates
        // and messages of cancelled jobs are consumed and dropped), then stop and check that
        // nothing is left behind.
        self.stop_scheduler.cancel();
        if let Queue::Rabbit(q) = &self.queue {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut depth = 0;
                for family in labfleet_jobs::Family::ALL {
                    depth += q.depth(family).await.unwrap_or(0);
                }
                if depth == 0 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.stop.cancel();
        let _ = self.system.wait().await;
        // At-least-once delivery may leave duplicates of finished jobs (a message prefetched
        // when the worker stopped goes back to the queue). Anything left must be such a
        // duplicate: no message may stand for work still to do.
        if let Queue::Rabbit(q) = &self.queue {
            for family in labfleet_jobs::Family::ALL {
                for id in q.take_job_ids(family).await.unwrap_or_default() {
                    let status = self.store.get_row(id).await.map(|r| r.status);
                    let done = status
                        .as_deref()
                        .ok()
                        .and_then(labfleet_jobs::JobStatus::parse);
                    assert!(
                        done.is_some_and(labfleet_jobs::JobStatus::is_terminal),
                        "a message for unfinished job {id} ({status:?}) was left in the {family:?} queue"
                    );
                }
            }
        }
        drop(self.store);
        if let Some(name) = self.db_name {
            drop_pg_database(&name).await;
        }
    }
}

pub fn pg_url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{db}")
}

async fn admin_connection() -> DatabaseConnection {
    let mut opts = ConnectOptions::new(PG_ADMIN_URL);
    opts.max_connections(1).sqlx_logging(false);
    Database::connect(opts)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432")
}

/// A new database copied from a migrated template (made once per schema version, under an
/// advisory lock so parallel test processes agree).
pub async fn fresh_pg_database() -> String {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    let template = TEMPLATE
        .get_or_init(|| async {
            use labfleet_migration::MigratorTrait;
            let names: Vec<String> = labfleet_migration::Migrator::migrations()
                .iter()
                .map(|m| m.name().to_string())
                .collect();
            let digest = names
                .join(",")
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            let name = format!("labfleet_it_tpl_{digest:08x}");
            let admin = admin_connection().await;
            admin
                .execute_unprepared("SELECT pg_advisory_lock(74616270)")
                .await
                .expect("lock");
            let exists = admin
                .query_one(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
                ))
                .await
                .expect("query")
                .is_some();
            if !exists {
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create template");
                let tpl = Database::connect(pg_url(&name))
                    .await
                    .expect("connect template");
                db::migrate(&tpl).await.expect("migrate template");
                tpl.close().await.expect("close template");
            }
            admin
                .execute_unprepared("SELECT pg_advisory_unlock(74616270)")
                .await
                .expect("unlock");
            name
        })
        .await;
    let name = format!("labfleet_it_{}", hex_id());
    let admin = admin_connection().await;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create test database");
    name
}

pub async fn drop_pg_database(name: &str) {
    let admin = admin_connection().await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

/// Runs `f` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$body($crate::harness::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq_postgres() {
                super::$body($crate::harness::Backend::Real).await
            }
        }
    };
}

/// Every log line the test process writes (all levels from debug), so tests can prove that no
/// secret is ever logged. Installed once per test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string()
}

fn log_buffer() -> &'static std::sync::Mutex<Vec<u8>> {
    static BUFFER: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    BUFFER.get_or_init(Default::default)
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (idempotent).
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,lapin=info,amq_protocol=info,h2=info,hyper=info,hyper_util=info,rustls=info,tokio_util=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// A simulated Proxmox cluster over HTTPS (self-signed), in this process, on port 0.
pub async fn spawn_sim() -> (labfleet_sim::SimHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = labfleet_sim::SimConfig::for_tests(dir.path());
    config.plain_http = false;
    let sim = labfleet_sim::start(config).await.expect("simulator");
    (sim, dir)
}

/// The port of a simulator's URL.
pub fn sim_port(sim: &labfleet_sim::SimHandle) -> u16 {
    sim.url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in url")
}
