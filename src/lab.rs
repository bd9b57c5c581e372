//! A whole labfleet in this process against a simulated Proxmox cluster: the simulator (HTTPS,
//! SSH on every node), the API, a worker and the scheduler, the simulated cluster registered and
//! its inventory synced. `labfleet demo` and `labfleet bench deploy` stand on it.

use std::path::PathBuf;

use anyhow::Context;
use labfleet_clusters::{inventory::SyncScope, ClusterInput};
use labfleet_config::Settings;
use labfleet_sim::{SimConfig, SimHandle};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::{components::Components, system::System};

/// The `cluster_id` the simulated cluster is registered under.
pub const SIM_CLUSTER: &str = "sim";

/// How to build the lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Simulated nodes.
    pub nodes: usize,
    /// The simulator's latency factor (1 = Proxmox-like, 0 = instant).
    pub time_scale: f64,
    /// Where the simulator keeps its state (its VMs survive a restart there).
    pub sim_dir: PathBuf,
    /// Real qcow2 files through `qemu-img` (when installed). Each `qemu-img` run happens inside
    /// the simulated storage lock on top of the modelled latency, so benchmarks that compare with
    /// the model's lower bound turn it off.
    pub real_disks: bool,
}

/// A running lab.
pub struct Lab {
    /// The simulated cluster.
    pub sim: SimHandle,
    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub api_url: String,
    /// An admin token for the API.
    pub admin_token: String,
    stop: CancellationToken,
    services: System,
    parts: Components,
}

impl Lab {
    /// Starts the simulator and labfleet on `settings`, registers and syncs the cluster.
    pub async fn start(mut settings: Settings, options: LabOptions) -> anyhow::Result<Lab> {
        let mut config = SimConfig::for_tests(&options.sim_dir);
        config.nodes = options.nodes;
        config.time_scale = options.time_scale;
        config.plain_http = false;
        config.ssh = true;
        config.use_qemu_img = config.use_qemu_img && options.real_disks;
        let sim = labfleet_sim::start(config)
            .await
            .context("cannot start the simulated cluster")?;
        let admin_token = match &settings.admin_token {
            Some(t) => t.expose_secret().to_string(),
            None => {
                let t = hex::encode(rand::random::<[u8; 24]>());
                settings.admin_token = Some(SecretString::from(t.clone()));
                t
            }
        };
        let parts = Components::build(settings).await?;
        let stop = CancellationToken::new();
        let services = System::start(&parts, stop.clone()).await?;
        let api_url = format!("http://{}", services.addr);
        let cluster_db_id = register(&parts, &sim).await?;
        let (cluster, backend) = parts.backends.proxmox(cluster_db_id).await?;
        parts
            .clusters
            .inventory()
            .sync(
                &cluster,
                backend.as_ref(),
                SyncScope {
                    templates: true,
                    isos: true,
                },
            )
            .await
            .context("cannot sync the simulated cluster's inventory")?;
        Ok(Lab {
            sim,
            api_url,
            admin_token,
            stop,
            services,
            parts,
        })
    }

    /// Stops labfleet, then the simulator.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.services.wait().await?;
        self.parts.close().await?;
        self.sim.shutdown().await;
        Ok(())
    }
}

/// Registers the simulator (or updates its registration: its port and secrets change with every
/// start) as cluster `SIM_CLUSTER`; returns its db_id.
pub(crate) async fn register(parts: &Components, sim: &SimHandle) -> anyhow::Result<i64> {
    let port = sim
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<i64>().ok())
        .context("the simulator's URL has no port")?;
    let ssh_port = sim.nodes.first().and_then(|n| n.ssh_addr).map(|a| a.port());
    let input = || ClusterInput {
        cluster_id: Some(SIM_CLUSTER.into()),
        name: Some("Simulated Proxmox VE".into()),
        host: Some("127.0.0.1".into()),
        port: Some(port),
        user: Some("root@pam".into()),
        token_id: Some(sim.token_id.clone()),
        token_secret: Some(SecretString::from(sim.token_secret.clone())),
        verify_ssl: Some(true),
        tls_fingerprint: sim.cert_sha256_fingerprint.clone(),
        ssh_user: Some("root".into()),
        ssh_port: ssh_port.map(i64::from),
        ssh_password: Some(SecretString::from(sim.ssh_password.clone())),
        vmid_range_start: Some(10_000),
        vmid_range_end: Some(19_999),
        ..Default::default()
    };
    let row = match parts.clusters.get_by_cluster_id(SIM_CLUSTER).await? {
        Some(existing) => parts.clusters.update(existing.id, input()).await?,
        None => parts.clusters.create(input()).await?,
    };
    Ok(row.id)
}
