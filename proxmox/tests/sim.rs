//! The client against the simulator (`labfleet-sim`): token and ticket auth, a wrong secret,
//! verify_ssl on/off and a pinned fingerprint against its self-signed HTTPS, a linked clone
//! round trip with `wait_task`. Each test starts its own simulator on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use labfleet_proxmox::*;
use labfleet_sim::{SimConfig, SimHandle};

/// A data directory removed when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "labfleet-proxmox-sim-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sim(https: bool) -> (SimHandle, DataDir) {
    let dir = DataDir::new();
    let mut cfg = SimConfig::for_tests(&dir.0);
    cfg.plain_http = !https;
    cfg.nodes = 2;
    let handle = labfleet_sim::start(cfg).await.unwrap();
    (handle, dir)
}

fn token(h: &SimHandle) -> Credentials {
    Credentials::token(&h.token_id, &h.token_secret)
}

fn client(h: &SimHandle, creds: Credentials) -> ProxmoxClient {
    ProxmoxClient::new(ClientConfig::new(&h.url, creds)).unwrap()
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn token_auth_reads_the_cluster() {
    let (h, _dir) = sim(false).await;
    let c = client(&h, token(&h));
    assert!(!c.version().await.unwrap().version.is_empty());
    let nodes = c.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(NodeInfo::is_online));
    let status = c.node_status(&nodes[0].node).await.unwrap();
    assert!(status.memory.total > 0);
    let resources = c.cluster_resources(Some(ResourceType::Vm)).await.unwrap();
    assert!(resources.iter().any(|r| r.template == Some(true)));
    let cluster = c.cluster_status().await.unwrap();
    assert!(cluster.iter().any(|e| e.kind == "node"));
    let storages = c
        .storage_list(&nodes[0].node, &StorageListParams::default())
        .await
        .unwrap();
    assert!(!storages.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn ticket_auth_with_csrf_makes_a_linked_clone_and_waits_for_it() {
    let (h, _dir) = sim(false).await;
    let c = client(&h, Credentials::password("root@pam", &h.root_password));
    c.login().await.unwrap();
    let template = c
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.template == Some(true))
        .expect("the simulator seeds a template");
    let node = template.node.clone().unwrap();
    let source = template.vmid.unwrap();
    let newid = c.next_id(None).await.unwrap();
    let upid = c
        .qemu_clone(
            &node,
            source,
            &CloneParams::linked(newid)
                .name("lab-client-test")
                .description("labfleet:test"),
        )
        .await
        .unwrap();
    assert_eq!(upid.node, node);
    assert_eq!(upid.task_type, "qmclone");
    assert_eq!(
        upid.id,
        source.to_string(),
        "a qmclone UPID names the source"
    );
    let done = c.wait_task(&upid, WAIT).await.unwrap();
    assert!(!done.is_running());
    let config = c.qemu_config(&node, newid, false, None).await.unwrap();
    assert_eq!(config.name().as_deref(), Some("lab-client-test"));
    assert_eq!(
        config.lock(),
        None,
        "the clone lock is gone when the task ends"
    );
    assert!(!c.task_log(&upid, 0, 50).await.unwrap().lines.is_empty());

    let del = c
        .qemu_delete(&node, newid, &DestroyParams::default())
        .await
        .unwrap();
    c.wait_task(&del, WAIT).await.unwrap();
    let gone = c.qemu_config(&node, newid, false, None).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(!gone.is_transient(), "{gone}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_a_clear_error_that_echoes_no_secret() {
    let (h, _dir) = sim(false).await;
    let wrong = "00000000-dead-beef-0000-000000000000";
    for creds in [
        Credentials::token(&h.token_id, wrong),
        Credentials::password("root@pam", wrong),
    ] {
        let err = client(&h, creds).version().await.unwrap_err();
        assert!(matches!(err, ProxmoxError::AuthFailed { .. }), "{err:?}");
        assert!(!err.is_transient());
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("authentication"), "{shown}");
        assert!(!shown.contains(wrong), "{shown}");
        assert!(!shown.contains(&h.token_secret), "{shown}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn https_with_verify_ssl_fails_clearly_and_works_when_off_or_pinned() {
    let (h, _dir) = sim(true).await;
    assert!(h.url.starts_with("https://"));
    let strict = client(&h, token(&h));
    let err = strict.version().await.unwrap_err();
    assert!(matches!(err, ProxmoxError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("verify_ssl=false"), "{err}");

    let lax = ProxmoxClient::new(ClientConfig::new(&h.url, token(&h)).verify_ssl(false)).unwrap();
    lax.version().await.unwrap();

    let fp = h.cert_sha256_fingerprint.clone().unwrap();
    let pinned =
        ProxmoxClient::new(ClientConfig::new(&h.url, token(&h)).tls_fingerprint(fp)).unwrap();
    pinned.version().await.unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn a_missing_vm_is_a_permanent_error_naming_the_vm() {
    let (h, _dir) = sim(false).await;
    let c = client(&h, token(&h));
    let err = c.qemu_status("pve1", 4242).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("4242"), "{err}");
    assert!(err.is_not_found(), "{err}");
    h.shutdown().await;
}

async fn sim_with(faults: labfleet_sim::FaultConfig) -> (SimHandle, DataDir) {
    let dir = DataDir::new();
    let mut cfg = SimConfig::for_tests(&dir.0);
    cfg.nodes = 2;
    cfg.faults = faults;
    (labfleet_sim::start(cfg).await.unwrap(), dir)
}

#[tokio::test]
async fn injected_unavailability_is_transient() {
    let (h, _dir) = sim_with(labfleet_sim::FaultConfig {
        http_503: 1.0,
        ..Default::default()
    })
    .await;
    let err = client(&h, token(&h)).version().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.is_transient());
    h.shutdown().await;

    let (h, _dir) = sim_with(labfleet_sim::FaultConfig {
        drop_connection: 1.0,
        ..Default::default()
    })
    .await;
    let err = client(&h, token(&h)).version().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    h.shutdown().await;

    let (h, _dir) = sim_with(labfleet_sim::FaultConfig {
        node_offline: ["pve2".to_string()].into(),
        ..Default::default()
    })
    .await;
    let err = client(&h, token(&h)).node_status("pve2").await.unwrap_err();
    assert_eq!(err.status(), Some(595), "{err}");
    assert!(err.is_transient());
    h.shutdown().await;
}

#[tokio::test]
async fn an_injected_storage_lock_timeout_fails_the_clone_transiently() {
    let (h, _dir) = sim_with(labfleet_sim::FaultConfig {
        lock_timeout: 1.0,
        ..Default::default()
    })
    .await;
    let c = client(&h, token(&h));
    let template = c
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.template == Some(true))
        .unwrap();
    let node = template.node.unwrap();
    let newid = c.next_id(None).await.unwrap();
    let result = match c
        .qemu_clone(&node, template.vmid.unwrap(), &CloneParams::linked(newid))
        .await
    {
        Ok(upid) => c.wait_task(&upid, WAIT).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ProxmoxError::TaskFailed { .. } | ProxmoxError::Api { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(err.is_transient(), "{err}");
    h.shutdown().await;
}

#[tokio::test]
async fn ssh_runs_qm_on_the_simulated_node_over_a_pooled_connection() {
    use labfleet_proxmox::ssh::{SshAuth, SshConfig, SshPool, SshTarget};
    let dir = DataDir::new();
    let mut cfg = SimConfig::for_tests(&dir.0);
    cfg.nodes = 2;
    cfg.ssh = true;
    let h = labfleet_sim::start(cfg).await.unwrap();
    let node = &h.nodes[0];
    let addr = node.ssh_addr.expect("the simulator serves SSH");
    let pool = SshPool::new(SshConfig {
        user: "root".into(),
        auth: SshAuth::Password(h.ssh_password.clone().into()),
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let target = SshTarget {
        node: node.name.clone(),
        host: addr.ip().to_string(),
        port: addr.port(),
        host_key_fingerprint: None,
    };
    let out = pool
        .exec(&target, "qm list", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.exit_status, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("104"),
        "template 104 is listed on pve1: {out:?}"
    );
    let out = pool
        .exec(&target, "qm no-such-subcommand", Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(
        out.exit_status,
        Some(0),
        "an unknown command fails: {out:?}"
    );
    assert!(!out.stderr.is_empty(), "{out:?}");
    h.shutdown().await;
}
