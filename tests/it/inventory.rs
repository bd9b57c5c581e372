//! The inventory sync against the simulator: `POST /api/cluster-config/{db_id}/sync` runs a
//! `sync_cluster` job that stores nodes (with guest counts), storages, templates (with their
//! volumes and what they allow) and ISOs; removed templates are marked gone; the cluster's
//! toggles are honoured; an unreachable cluster is retried with the reason on the job.

use std::time::Duration;

use labfleet_jobs::{store::NewJob, JobSpec, SyncClusterArgs};
use labfleet_proxmox::{
    ClientConfig, CloneParams, Credentials, DestroyParams, ProxmoxClient, Upid,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::harness::{sim_port, spawn_app, spawn_app_with, spawn_sim, Backend, TestApp};

pub(crate) const CLUSTER: &str = "labsim";

/// Registers the simulator as cluster `CLUSTER` with its API token; returns the db_id.
pub(crate) async fn register(app: &TestApp, sim: &labfleet_sim::SimHandle, extra: Value) -> i64 {
    register_at(app, sim_port(sim), &sim.token_id, &sim.token_secret, extra).await
}

pub(crate) async fn register_at(
    app: &TestApp,
    port: u16,
    token_id: &str,
    secret: &str,
    extra: Value,
) -> i64 {
    let mut body = json!({
        "cluster_id": CLUSTER, "name": "Simulated lab", "host": "127.0.0.1", "port": port,
        "user": "root@pam", "token_id": token_id, "token_secret": secret, "verify_ssl": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, resp) = app
        .call(Method::POST, "/api/cluster-config", Some(body))
        .await;
    assert_eq!(status, 201, "{resp}");
    resp["cluster"]["db_id"].as_i64().unwrap()
}

/// `POST …/sync`; returns the job id after checking the 202 and its `Location`.
pub(crate) async fn start_sync(app: &TestApp, db_id: i64, body: Option<Value>) -> Uuid {
    let mut req = app
        .http
        .post(app.url(&format!("/api/cluster-config/{db_id}/sync")))
        .bearer_auth(crate::harness::TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/api/jobs/{id}"));
    id
}

/// Syncs and waits for success; returns the sync report.
pub(crate) async fn sync(app: &TestApp, db_id: i64) -> Value {
    let id = start_sync(app, db_id, None).await;
    let job = app
        .wait_job(id, Duration::from_secs(30), |j| {
            matches!(j["status"].as_str(), Some("succeeded" | "failed" | "dead"))
        })
        .await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["kind"], "sync_cluster");
    job["result"].clone()
}

async fn list(app: &TestApp, path: &str, key: &str) -> Vec<Value> {
    let (status, body) = app.call(Method::GET, path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    body[key].as_array().unwrap().clone()
}

fn by_vmid(templates: &[Value], vmid: i64) -> Option<&Value> {
    templates.iter().find(|t| t["vmid"] == vmid)
}

/// Speaks to the simulator's Proxmox API directly, as an operator would.
pub(crate) struct SimApi {
    pub(crate) client: ProxmoxClient,
    control: String,
}

impl SimApi {
    pub(crate) fn new(sim: &labfleet_sim::SimHandle) -> Self {
        let config = ClientConfig::new(
            sim.url.clone(),
            Credentials::token(sim.token_id.clone(), sim.token_secret.clone()),
        )
        .verify_ssl(false);
        SimApi {
            client: ProxmoxClient::new(config).unwrap(),
            control: format!("{}/_sim/faults", sim.url.trim_end_matches('/')),
        }
    }

    pub(crate) async fn wait(&self, upid: Upid) {
        self.client
            .wait_task(&upid, Duration::from_secs(20))
            .await
            .unwrap();
    }

    /// Sets the simulator's injected faults (its control endpoint, outside the PVE API).
    pub(crate) async fn set_faults(&self, faults: Value) {
        let resp = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .put(&self.control)
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// Sets a VM's simulated CPU load (0..1 of its cores).
    pub(crate) async fn set_cpu(&self, vmid: i64, cpu: f64) {
        let url = self
            .control
            .replace("/_sim/faults", &format!("/_sim/vms/{vmid}/cpu"));
        let resp = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .put(url)
            .json(&json!({ "cpu": cpu }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }
}

async fn inventory_follows_the_cluster(backend: Backend) {
    let app = spawn_app(backend).await;
    let (sim, _dir) = spawn_sim().await;
    let pve = SimApi::new(&sim);
    // One guest on pve2, so the placement load is visible: a linked clone of the shared 104.
    let clone = CloneParams {
        newid: 300,
        name: Some("guest-one".into()),
        target: Some("pve2".into()),
        ..Default::default()
    };
    pve.wait(pve.client.qemu_clone("pve1", 104, &clone).await.unwrap())
        .await;
    let db_id = register(&app, &sim, json!({})).await;

    let report = sync(&app, db_id).await;
    assert_eq!(report["cluster"], CLUSTER);
    assert_eq!(report["nodes"], 3, "{report}");
    assert_eq!(
        report["storages"], 9,
        "3 nodes x (local, local-lvm, nfs-shared): {report}"
    );
    assert_eq!(report["templates"]["added"], 2, "{report}");
    assert_eq!(report["isos"]["added"], 12, "{report}");

    let templates = list(
        &app,
        &format!("/api/templates?cluster={CLUSTER}"),
        "templates",
    )
    .await;
    assert_eq!(templates.len(), 2, "{templates:#?}");
    let t104 = by_vmid(&templates, 104).expect("104 listed");
    assert_eq!(t104["cluster"], CLUSTER);
    assert_eq!(t104["name"], "ubuntu-2404-cloud");
    assert_eq!(t104["node"], "pve1");
    assert_eq!(t104["all_shared"], true, "{t104:#}");
    assert_eq!(t104["has_cloudinit"], true);
    assert_eq!(t104["config_clone_ok"], true);
    assert_eq!(t104["gone"], false);
    let disks = t104["disks"].as_array().unwrap();
    let scsi0 = disks.iter().find(|d| d["key"] == "scsi0").unwrap();
    assert_eq!(scsi0["storage"], "nfs-shared");
    assert_eq!(scsi0["storage_type"], "nfs");
    assert_eq!(scsi0["format"], "qcow2");
    assert_eq!(scsi0["size"], 2i64 << 30);
    assert_eq!(scsi0["shared"], true);
    assert!(disks
        .iter()
        .any(|d| d["cloudinit"] == true && d["shared"] == true));
    let t105 = by_vmid(&templates, 105).expect("105 listed");
    assert_eq!(t105["node"], "pve1");
    assert_eq!(t105["all_shared"], false, "{t105:#}");
    assert_eq!(t105["config_clone_ok"], false);
    assert_eq!(t105["has_cloudinit"], true);
    let t105_disk = &t105["disks"][0];
    assert_eq!(
        (t105_disk["storage"].as_str(), t105_disk["format"].as_str()),
        (Some("local-lvm"), Some("raw")),
        "{t105:#}"
    );

    // Nodes and storages, as the deploy code reads them.
    let inventory = app.clusters.inventory();
    let nodes = inventory.nodes(db_id).await.unwrap();
    let summary: Vec<(&str, bool, i32)> = nodes
        .iter()
        .map(|n| (n.node.as_str(), n.online, n.guests))
        .collect();
    assert_eq!(
        summary,
        vec![("pve1", true, 0), ("pve2", true, 1), ("pve3", true, 0)],
        "templates are no load; the clone on pve2 is"
    );
    assert_eq!(nodes[0].ip.as_deref(), Some("127.0.0.11"));
    assert!(nodes
        .iter()
        .all(|n| n.cpus.is_some() && n.max_mem.is_some()));
    let storages = inventory.storages(db_id).await.unwrap();
    assert_eq!(storages.len(), 9);
    let nfs: Vec<_> = storages
        .iter()
        .filter(|s| s.storage == "nfs-shared")
        .collect();
    assert_eq!(nfs.len(), 3);
    assert!(nfs
        .iter()
        .all(|s| s.shared && s.storage_type == "nfs" && s.active));
    assert!(storages
        .iter()
        .any(|s| s.storage == "local-lvm" && s.storage_type == "lvmthin" && !s.shared));
    let row = inventory.template(db_id, 104).await.unwrap().unwrap();
    assert!(row.all_shared && row.qcow2_files && row.disk_list().len() == 2);

    // ISOs: those on the shared storage once (node ""), local ones per node.
    let isos = list(&app, &format!("/api/isos?cluster={CLUSTER}"), "isos").await;
    assert_eq!(isos.len(), 12, "{isos:#?}");
    let shared: Vec<_> = isos.iter().filter(|i| i["node"] == "").collect();
    assert_eq!(shared.len(), 3);
    assert!(shared
        .iter()
        .all(|i| i["shared"] == true && i["storage"] == "nfs-shared"));
    for node in ["pve1", "pve2", "pve3"] {
        assert_eq!(isos.iter().filter(|i| i["node"] == node).count(), 3);
    }
    let debian = isos
        .iter()
        .find(|i| i["volid"] == "local:iso/debian-12.7.0-amd64-netinst.iso" && i["node"] == "pve2")
        .expect("debian ISO on pve2");
    assert_eq!(debian["name"], "debian-12.7.0-amd64-netinst.iso");
    assert_eq!(debian["size"], 661_651_456);

    // An offline node cannot be looked at: its local ISOs are kept, not marked gone.
    pve.set_faults(json!({"node_offline": ["pve3"]})).await;
    let report = sync(&app, db_id).await;
    assert_eq!(report["offline_nodes"], json!(["pve3"]), "{report}");
    assert_eq!(report["isos"]["kept"], 3, "{report}");
    assert_eq!(report["isos"]["gone"], 0, "{report}");
    assert_eq!(list(&app, "/api/isos", "isos").await.len(), 12);
    let pve3 = inventory.nodes(db_id).await.unwrap().pop().unwrap();
    assert_eq!((pve3.node.as_str(), pve3.online), ("pve3", false));
    pve.set_faults(json!({})).await;

    // A template destroyed on the cluster is marked gone by the next sync, never deleted.
    let first_seen_105 = inventory
        .template(db_id, 105)
        .await
        .unwrap()
        .unwrap()
        .first_seen_at;
    let destroy = DestroyParams::default();
    pve.wait(pve.client.qemu_delete("pve1", 105, &destroy).await.unwrap())
        .await;
    let report = sync(&app, db_id).await;
    assert_eq!(report["templates"]["gone"], 1, "{report}");
    assert_eq!(report["templates"]["added"], 0, "{report}");
    let templates = list(&app, "/api/templates", "templates").await;
    assert_eq!(templates.len(), 1, "{templates:#?}");
    assert_eq!(templates[0]["vmid"], 104);
    let all = list(&app, "/api/templates?include_gone=true", "templates").await;
    let gone = by_vmid(&all, 105).expect("105 kept");
    assert_eq!(gone["gone"], true);
    assert!(gone["gone_at"].is_string(), "{gone:#}");
    let row = inventory.template(db_id, 105).await.unwrap().unwrap();
    assert!(row.gone && row.gone_at.is_some());

    // A template with that VMID again (now a clone of 104 on NFS): back, with its new volumes.
    let clone = CloneParams {
        newid: 105,
        name: Some("debian-reborn".into()),
        ..Default::default()
    };
    pve.wait(pve.client.qemu_clone("pve1", 104, &clone).await.unwrap())
        .await;
    pve.wait(pve.client.qemu_template("pve1", 105, None).await.unwrap())
        .await;
    let report = sync(&app, db_id).await;
    assert_eq!(report["templates"]["updated"], 1, "{report}");
    let row = inventory.template(db_id, 105).await.unwrap().unwrap();
    assert!(!row.gone && row.gone_at.is_none(), "{row:?}");
    assert_eq!(row.name, "debian-reborn");
    assert!(row.all_shared, "its volumes are on nfs-shared now: {row:?}");
    assert_eq!(row.first_seen_at, first_seen_105, "first_seen_at is kept");

    sim.shutdown().await;
    app.finish().await;
}
both_backends!(
    inventory_follows_the_cluster_on,
    inventory_follows_the_cluster
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggles_decide_what_is_synced() {
    let app = spawn_app(Backend::Embedded).await;
    let (sim, _dir) = spawn_sim().await;
    let db_id = register(
        &app,
        &sim,
        json!({"allow_template_sync": false, "allow_iso_sync": false}),
    )
    .await;
    let report = sync(&app, db_id).await;
    assert!(
        report["templates_skipped"]
            .as_str()
            .unwrap()
            .contains("allow_template_sync"),
        "{report}"
    );
    assert!(report["isos_skipped"]
        .as_str()
        .unwrap()
        .contains("allow_iso_sync"));
    assert!(report["templates"].is_null() && report["isos"].is_null());
    assert!(list(&app, "/api/templates", "templates").await.is_empty());
    assert!(list(&app, "/api/isos", "isos").await.is_empty());
    // Nodes and storages are refreshed whatever the toggles say.
    assert_eq!(
        app.clusters.inventory().nodes(db_id).await.unwrap().len(),
        3
    );
    assert_eq!(
        app.clusters
            .inventory()
            .storages(db_id)
            .await
            .unwrap()
            .len(),
        9
    );

    let (status, resp) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{db_id}"),
            Some(json!({"allow_template_sync": true})),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let report = sync(&app, db_id).await;
    assert_eq!(report["templates"]["added"], 2, "{report}");
    assert!(report["isos"].is_null(), "ISO sync is still off: {report}");
    assert_eq!(list(&app, "/api/templates", "templates").await.len(), 2);
    assert!(list(&app, "/api/isos", "isos").await.is_empty());

    // A sync may also be asked for one part only.
    let (status, resp) = app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{db_id}"),
            Some(json!({"allow_iso_sync": true})),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let id = start_sync(&app, db_id, Some(json!({"templates": false}))).await;
    let job = app
        .wait_status(id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["result"]["templates_skipped"], "not requested");
    assert_eq!(job["result"]["isos"]["added"], 12, "{job:#}");
    sim.shutdown().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_retried_with_the_reason_recorded() {
    let app = spawn_app_with(Backend::Real, |s| s.retry.max_attempts = 3).await;
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "never-shown-3f9a1c";
    let db_id = register_at(&app, port, "root@pam!labfleet", secret, json!({})).await;
    let id = start_sync(&app, db_id, None).await;
    let job = app.wait_status(id, "dead", Duration::from_secs(30)).await;
    assert_eq!(
        job["attempts"], 3,
        "transient: every attempt was made: {job:#}"
    );
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("cannot connect"), "{error}");
    assert!(error.contains(CLUSTER), "{error}");
    let retried = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "retrying")
        .count();
    assert_eq!(retried, 2, "{job:#}");
    assert!(!job.to_string().contains(secret));
    assert!(app
        .clusters
        .inventory()
        .nodes(db_id)
        .await
        .unwrap()
        .is_empty());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_answers() {
    let app = spawn_app(Backend::Embedded).await;
    let (sim, _dir) = spawn_sim().await;
    let db_id = register(&app, &sim, json!({})).await;

    let (status, body) = app
        .call(Method::POST, "/api/cluster-config/999999/sync", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = app
        .call(Method::POST, "/api/cluster-config/abc/sync", None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("db_id")),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/cluster-config/{db_id}/sync"),
            Some(json!({"isos": "yes"})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("isos")),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/cluster-config/{db_id}/sync"),
            Some(json!({"everything": true})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("everything")),
        "{body}"
    );

    for path in ["/api/templates?cluster=nope", "/api/isos?cluster=nope"] {
        let (status, body) = app.call(Method::GET, path, None).await;
        assert_eq!(status, 404, "{body}");
        assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    }
    let (status, body) = app
        .call(Method::GET, "/api/templates?include_gone=maybe", None)
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("include_gone")),
        "{body}"
    );
    let (status, body) = app.call(Method::GET, "/api/isos?node=pve1", None).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("node")),
        "{body}"
    );
    let status = app
        .http
        .get(app.url("/api/templates"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);

    // The same Idempotency-Key gives the same job; another cluster with it is a conflict.
    let post = |key: &'static str, id: i64| {
        app.http
            .post(app.url(&format!("/api/cluster-config/{id}/sync")))
            .bearer_auth(crate::harness::TOKEN)
            .header("Idempotency-Key", key)
            .send()
    };
    let first: Value = post("sync-once", db_id)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = post("sync-once", db_id)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["job_id"], again["job_id"]);
    let other = register_at(
        &app,
        sim_port(&sim),
        &sim.token_id,
        &sim.token_secret,
        json!({"cluster_id": "labsim2"}),
    )
    .await;
    let conflict = post("sync-once", other).await.unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    let id: Uuid = first["job_id"].as_str().unwrap().parse().unwrap();
    app.wait_status(id, "succeeded", Duration::from_secs(30))
        .await;
    sim.shutdown().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_of_a_cluster_that_is_gone_fails_at_once() {
    let app = spawn_app(Backend::Embedded).await;
    // Stored without a publish: the recovery sweep publishes it, as after a crash.
    let ids = app
        .store
        .create(&[NewJob {
            spec: JobSpec::SyncCluster(SyncClusterArgs {
                cluster_db_id: 424242,
                templates: true,
                isos: true,
            }),
            parent_id: None,
            created_by: "admin".into(),
            max_attempts: 5,
            class_id: None,
        }])
        .await
        .unwrap();
    let job = app
        .wait_status(ids[0], "failed", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 1, "permanent: no retry: {job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("no longer exists"),
        "{job:#}"
    );
    app.finish().await;
}
