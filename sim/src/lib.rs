//! labfleet-sim: a simulated Proxmox VE cluster (REST API, tasks, locks, storages, SSH) that
//! labfleet is tested and benchmarked against. See `sim/README.md` for what it models.

mod api;
mod conf;
mod disks;
mod faults;
mod latency;
mod locks;
mod schema;
mod seed;
mod server;
mod sim;
mod ssh;
mod storage;
mod tasks;
mod tls;
mod volumes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

pub use faults::FaultConfig;
pub use latency::Latencies;

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes, named "pve1", "pve2", ...
    pub nodes: usize,
    /// REST API address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Where configs, disks, secrets and the certificate live.
    pub data_dir: PathBuf,
    /// 0.0 = no latency; 1.0 = Proxmox-like latencies.
    pub time_scale: f64,
    /// Serve plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Injected faults; the default injects none.
    pub faults: FaultConfig,
    /// Seed of the fault RNG, so fault sequences repeat.
    pub seed: u64,
    /// Skip seeding templates 104/105 and ISOs into a new data dir.
    pub empty: bool,
    /// Start an SSH server per node.
    pub ssh: bool,
    /// SSH port, the same on every node IP (127.0.0.11, .12, ...); 0 picks a free one.
    pub ssh_port: u16,
    /// Make real qcow2 files through `qemu-img` (default: true when it is on PATH).
    pub use_qemu_img: bool,
    /// Per-operation latencies at time scale 1.0.
    pub latencies: Latencies,
    /// Ticket lifetime (PVE: 2 h).
    pub ticket_lifetime: std::time::Duration,
    /// OpenSSH public keys accepted for `root` by the SSH servers (appended to
    /// `<data_dir>/sim/authorized_keys`, which is read at every login).
    pub ssh_authorized_keys: Vec<String>,
}

impl SimConfig {
    /// A config for tests: 3 nodes, loopback port 0, plain HTTP, time scale 0, no SSH.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes: 3,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            data_dir: data_dir.into(),
            time_scale: 0.0,
            plain_http: true,
            faults: FaultConfig::default(),
            seed: 1,
            empty: false,
            ssh: false,
            ssh_port: 0,
            use_qemu_img: disks::qemu_img_available(),
            latencies: Latencies::default(),
            ticket_lifetime: std::time::Duration::from_secs(7200),
            ssh_authorized_keys: Vec::new(),
        }
    }
}

/// A node of the simulated cluster.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Node name, e.g. "pve1".
    pub name: String,
    /// The node's own loopback address (127.0.0.11, .12, ...), shown in /cluster/status.
    pub ip: IpAddr,
    /// Where the node's SSH server listens, if SSH is on.
    pub ssh_addr: Option<SocketAddr>,
}

/// A running simulator.
pub struct SimHandle {
    /// Base URL without `/api2/json`, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    /// Password of `root@pam`.
    pub root_password: String,
    /// API token id, `root@pam!labfleet`.
    pub token_id: String,
    /// API token secret.
    pub token_secret: String,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// SHA-256 fingerprint of the HTTPS certificate ("AB:CD:..."), None with plain HTTP.
    pub cert_sha256_fingerprint: Option<String>,
    /// The `root` password accepted by the SSH servers (same as `root_password`).
    pub ssh_password: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    joins: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// The `Authorization` header value for the API token.
    pub fn token_header(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.token_secret)
    }

    /// Stops the servers and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for j in self.joins {
            let _ = j.await;
        }
    }
}

/// Starts a simulator; returns once it accepts connections.
pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
    anyhow::ensure!((1..=200).contains(&config.nodes), "nodes must be 1..=200");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let sim = Arc::new(sim::Sim::open(&config).await?);
    if !config.ssh_authorized_keys.is_empty() {
        use std::io::Write as _;
        let path = config.data_dir.join("sim").join("authorized_keys");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        for k in &config.ssh_authorized_keys {
            writeln!(f, "{}", k.trim())?;
        }
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut joins = Vec::new();

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let (acceptor, fingerprint) = if config.plain_http {
        (None, None)
    } else {
        let (acc, fp) = tls::acceptor(&config.data_dir, &sim.node_names())?;
        (Some(acc), Some(fp))
    };
    sim.set_fingerprint(fingerprint.clone());
    joins.push(tokio::spawn(server::serve(
        listener,
        acceptor,
        sim.clone(),
        rx.clone(),
    )));

    let mut nodes = Vec::new();
    let mut ssh_port = config.ssh_port;
    for (i, name) in sim.node_names().into_iter().enumerate() {
        let ip = sim::node_ip(i);
        let ssh_addr = if config.ssh {
            let (port, join) = ssh::serve(sim.clone(), name.clone(), ip, ssh_port, rx.clone())
                .await
                .with_context(|| format!("starting SSH for {name} on {ip}"))?;
            ssh_port = port;
            joins.push(join);
            Some(SocketAddr::new(ip, port))
        } else {
            None
        };
        nodes.push(SimNode { name, ip, ssh_addr });
    }
    let scheme = if config.plain_http { "http" } else { "https" };
    Ok(SimHandle {
        url: format!("{scheme}://{addr}"),
        root_password: sim.secrets.root_password.clone(),
        token_id: sim::TOKEN_ID.to_string(),
        token_secret: sim.secrets.token_secret.clone(),
        ssh_password: sim.secrets.root_password.clone(),
        nodes,
        cert_sha256_fingerprint: fingerprint,
        shutdown: tx,
        joins,
    })
}

/// Every `(method, path)` under /api2/json the simulator implements (paths as in the schema).
pub fn handled_endpoints() -> &'static [(&'static str, &'static str)] {
    api::HANDLED
}

/// The vendored schema subset the simulator validates against (fixtures/pve-api-subset.json).
pub fn schema_fixture() -> &'static str {
    schema::FIXTURE
}

/// Command-line arguments of `labfleet sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Number of nodes (pve1, pve2, ...).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:8006")]
    pub bind: SocketAddr,
    /// Data directory (configs, disks, secrets); kept across restarts.
    #[arg(long, default_value = "./sim-data")]
    pub data_dir: PathBuf,
    /// Latency factor: 0 = none, 1 = Proxmox-like.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,
    /// A fault, e.g. lock_timeout=0.2, http_500=0.05, node_offline=pve2 (repeatable).
    #[arg(long = "fault", value_name = "KEY=VALUE")]
    pub faults: Vec<String>,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Do not seed templates and ISOs into a new data dir.
    #[arg(long)]
    pub empty: bool,
    /// SSH port on every node address (127.0.0.11, ...); 0 picks a free one.
    #[arg(long, default_value_t = 2222)]
    pub ssh_port: u16,
    /// Do not start the per-node SSH servers.
    #[arg(long)]
    pub no_ssh: bool,
    /// Do not call qemu-img even if it is installed (plain accounting instead of qcow2 files).
    #[arg(long)]
    pub no_qemu_img: bool,
}

impl SimArgs {
    /// Turns the arguments into a [`SimConfig`].
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let mut faults = FaultConfig::default();
        for f in &self.faults {
            faults.apply_kv(f).map_err(anyhow::Error::msg)?;
        }
        let mut cfg = SimConfig::for_tests(self.data_dir.clone());
        cfg.nodes = self.nodes;
        cfg.bind = self.bind;
        cfg.time_scale = self.time_scale;
        cfg.plain_http = self.plain_http;
        cfg.faults = faults;
        cfg.seed = self.seed;
        cfg.empty = self.empty;
        cfg.ssh = !self.no_ssh;
        cfg.ssh_port = self.ssh_port;
        cfg.use_qemu_img = !self.no_qemu_img && disks::qemu_img_available();
        Ok(cfg)
    }
}

/// Runs the simulator until Ctrl-C, printing how to reach it.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let handle = start(args.to_config()?).await?;
    println!("url: {}/api2/json", handle.url);
    println!("password: {}", handle.root_password);
    println!("token: {}={}", handle.token_id, handle.token_secret);
    if let Some(fp) = &handle.cert_sha256_fingerprint {
        println!("fingerprint: {fp}");
    }
    for n in &handle.nodes {
        match n.ssh_addr {
            Some(a) => println!("node {} ip {} ssh {}", n.name, n.ip, a),
            None => println!("node {} ip {}", n.name, n.ip),
        }
    }
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn command_line_becomes_a_config() {
        let cli = Cli::try_parse_from([
            "sim",
            "--nodes",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
            "--time-scale",
            "0.5",
            "--plain-http",
            "--fault",
            "lock_timeout=0.2",
            "--fault",
            "node_offline=pve2",
            "--seed",
            "9",
        ])
        .unwrap();
        let c = cli.sim.to_config().unwrap();
        assert_eq!(c.nodes, 2);
        assert_eq!(c.time_scale, 0.5);
        assert!(c.plain_http && c.ssh);
        assert_eq!(c.faults.lock_timeout, 0.2);
        assert!(c.faults.node_offline.contains("pve2"));
        assert_eq!(c.seed, 9);
        let bad = Cli::try_parse_from(["sim", "--fault", "nope=1"]).unwrap();
        assert!(bad.sim.to_config().is_err());
    }
}
