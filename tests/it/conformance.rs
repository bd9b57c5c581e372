//! The backend conformance suite (`labfleet_fleet::backend::conformance`) run against the
//! Proxmox adapter on the simulator: a linked clone on the shared NFS storage (qcow2 files), a
//! linked clone on LVM-thin, and a config clone (qcow2 overlays over SSH).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use labfleet_backend_proxmox::{ProxmoxBackend, Tuning};
use labfleet_fleet::{
    backend::{
        conformance::{run_all, Arrange, Fixture, IDS_NEEDED},
        Source,
    },
    DeployMethod, GuestRef,
};
use labfleet_proxmox::{
    ssh::{SshAuth, SshConfig, SshPool},
    ClientConfig, Credentials, ProxmoxClient,
};
use serde_json::{json, Value};

/// The simulator's control endpoints: faults and time scale.
struct SimKnobs {
    base: String,
    http: reqwest::Client,
    /// The storage a failing make is arranged on.
    full_storage: &'static str,
}

impl SimKnobs {
    async fn put(&self, path: &str, body: Value) {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
    }
}

#[async_trait]
impl Arrange for SimKnobs {
    async fn fail_makes(&self, on: bool) {
        let full: Vec<&str> = if on { vec![self.full_storage] } else { vec![] };
        self.put("/_sim/faults", json!({ "storage_full": full }))
            .await;
    }

    async fn slow_makes(&self, on: bool) {
        let scale = if on { 5.0 } else { 0.0 };
        self.put("/_sim/time-scale", json!({ "time_scale": scale }))
            .await;
    }
}

async fn run(
    first_id: u32,
    template: (&str, i64),
    method: DeployMethod,
    node: &str,
    full_storage: &'static str,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = labfleet_sim::SimConfig::for_tests(dir.path());
    config.ssh = method == DeployMethod::ConfigClone;
    let sim = labfleet_sim::start(config).await.unwrap();
    let client = ProxmoxClient::new(
        ClientConfig::new(
            sim.url.clone(),
            Credentials::token(sim.token_id.clone(), sim.token_secret.clone()),
        )
        .verify_ssl(false),
    )
    .unwrap();
    let tuning = Tuning {
        task_poll_max: Duration::from_millis(100),
    };
    let mut backend = ProxmoxBackend::new(client, tuning);
    if let Some(addr) = sim.nodes[0].ssh_addr {
        let pool = SshPool::new(SshConfig {
            user: "root".into(),
            auth: SshAuth::Password(sim.ssh_password.clone().into()),
            connect_timeout: Duration::from_secs(10),
        })
        .map(Arc::new)
        .map_err(|e| e.to_string());
        backend = backend.with_ssh(pool, addr.port(), None);
    }
    let knobs = SimKnobs {
        base: sim.url.trim_end_matches('/').to_string(),
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap(),
        full_storage,
    };
    let fixture = Fixture {
        backend: &backend,
        arrange: &knobs,
        source: Source::Template {
            guest: GuestRef::numbered(template.0, template.1),
        },
        method,
        node: node.to_string(),
        storage: None,
        free_ids: (first_id..)
            .take(IDS_NEEDED)
            .map(|id| id.to_string())
            .collect(),
        budget: Duration::from_secs(30),
    };
    run_all(&fixture).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_linked_clones_on_a_shared_file_storage_keep_the_contract() {
    // Template 104: qcow2 on the shared NFS storage, cloned to another node.
    run(
        9001,
        ("pve1", 104),
        DeployMethod::LinkedClone,
        "pve2",
        "nfs-shared",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_linked_clones_on_lvm_thin_keep_the_contract() {
    // Template 105: raw on pve1's LVM-thin storage, clonable on pve1 only.
    run(
        9011,
        ("pve1", 105),
        DeployMethod::LinkedClone,
        "pve1",
        "local-lvm",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_config_clones_over_ssh_keep_the_contract() {
    // Overlays of template 104's disk, made over SSH; the cloud-init drive on the NFS storage.
    run(
        9021,
        ("pve1", 104),
        DeployMethod::ConfigClone,
        "pve3",
        "nfs-shared",
    )
    .await;
}
