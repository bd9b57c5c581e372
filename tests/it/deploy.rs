//! Class deployment end to end: `POST /api/classes` → `deploy_class` (plan: placement and VMID
//! reservations) → one `deploy_vm` per VM → the simulator, on real RabbitMQ + PostgreSQL and on
//! the embedded default. Checks what exists on the simulated cluster, not only what the API says.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::Duration,
};

use labfleet_fleet::Marker;
use labfleet_proxmox::{CloneParams, DestroyParams, ResourceType};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::harness::{spawn_app_with, Backend, TestApp};
use crate::inventory::{register, sync, SimApi};

/// A registered, synced simulated cluster (3 nodes, SSH on for config clones).
pub(crate) struct Lab {
    pub(crate) app: TestApp,
    /// The simulated cluster's row id.
    pub(crate) cluster_db_id: i64,
    _sim: labfleet_sim::SimHandle,
    pub(crate) api: SimApi,
    _dir: tempfile::TempDir,
}

impl Lab {
    pub(crate) async fn start(
        backend: Backend,
        tweak: impl FnOnce(&mut labfleet_config::Settings),
    ) -> Lab {
        Self::start_with_sim(backend, tweak, |_| {}).await
    }

    /// [`Lab::start`] with the simulator's configuration adjusted (latencies, faults).
    pub(crate) async fn start_with_sim(
        backend: Backend,
        tweak: impl FnOnce(&mut labfleet_config::Settings),
        sim_tweak: impl FnOnce(&mut labfleet_sim::SimConfig),
    ) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let mut config = labfleet_sim::SimConfig::for_tests(dir.path());
        config.plain_http = false;
        config.ssh = true;
        sim_tweak(&mut config);
        let sim = labfleet_sim::start(config).await.unwrap();
        let app = spawn_app_with(backend, tweak).await;
        let ssh_port = sim.nodes[0].ssh_addr.unwrap().port();
        let db_id = register(
            &app,
            &sim,
            json!({
                "ssh_user": "root", "ssh_port": ssh_port, "ssh_password": sim.ssh_password,
                "vmid_range_start": 10000, "vmid_range_end": 19999,
            }),
        )
        .await;
        sync(&app, db_id).await;
        let api = SimApi::new(&sim);
        Lab {
            app,
            cluster_db_id: db_id,
            _sim: sim,
            api,
            _dir: dir,
        }
    }

    /// `POST /api/classes`; returns (class_id, job_id).
    pub(crate) async fn create_class(&self, body: Value) -> (i64, Uuid) {
        let (status, resp) = self
            .app
            .call(Method::POST, "/api/classes", Some(body))
            .await;
        assert_eq!(status, 202, "{resp}");
        (
            resp["class_id"].as_i64().unwrap(),
            resp["job_id"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// Starts a linked-clone class of `count` VMs and waits until `first` of them exist, the
    /// deployment still running (so a fault injected next lands in its middle); returns
    /// (class_id, job_id).
    pub(crate) async fn deploy_until_first_vms(
        &self,
        name: &str,
        count: u32,
        first: i64,
    ) -> (i64, Uuid) {
        let (class_id, job) = self
            .create_class(class_body(name, "linked_clone", count))
            .await;
        let seen = self
            .app
            .wait_job(job, Duration::from_secs(60), |j| {
                j["progress"]["succeeded"].as_i64().unwrap_or(0) >= first
            })
            .await;
        assert_eq!(seen["status"], "running", "the deployment ended too soon");
        (class_id, job)
    }

    /// Checks that the class's `count` VMs each exist once with a VMID of their own, and that
    /// nothing else was made (no orphan, no duplicate).
    pub(crate) async fn check_every_vm_once(&self, class_id: i64, count: usize) {
        let vms = self.check_vms_exist(class_id, count).await;
        let vmids: BTreeSet<i64> = vms.iter().map(|v| v["vmid"].as_i64().unwrap()).collect();
        assert_eq!(vmids.len(), count, "a VMID is used twice");
        let clones: Vec<_> = self
            .guests()
            .await
            .into_iter()
            .filter(|(_, (_, _, template))| !template)
            .collect();
        assert_eq!(clones.len(), count, "orphans or duplicates: {clones:?}");
    }

    pub(crate) async fn wait_finished(&self, job: Uuid, within: Duration) -> Value {
        self.app
            .wait_job(job, within, |j| {
                matches!(
                    j["status"].as_str(),
                    Some("succeeded" | "failed" | "dead" | "cancelled")
                )
            })
            .await
    }

    /// Destroys a template on the simulator after the sync, so labfleet still believes in it.
    pub(crate) async fn remove_template_behind_our_back(&self, node: &str, vmid: u32) {
        let upid = self
            .api
            .client
            .qemu_delete(node, vmid, &DestroyParams::default())
            .await
            .unwrap();
        self.api.wait(upid).await;
    }

    /// Asks to retry the class's failed VMs; the API must take the request.
    pub(crate) async fn retry_failed(&self, class_id: i64) {
        let path = format!("/api/classes/{class_id}/retry-failed");
        let (status, body) = self.app.call(Method::POST, &path, None).await;
        assert_eq!(status, 202, "{body}");
    }

    pub(crate) async fn class(&self, id: i64) -> Value {
        let (status, body) = self
            .app
            .call(Method::GET, &format!("/api/classes/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Makes a VM that labfleet does not own: a linked clone of 104 made directly on the simulator.
    pub(crate) async fn foreign_vm(&self, vmid: u32, name: &str, node: &str) {
        let params = CloneParams::linked(vmid).name(name).target(node);
        let upid = self
            .api
            .client
            .qemu_clone("pve1", 104, &params)
            .await
            .unwrap();
        self.api.wait(upid).await;
    }

    /// Waits until no guest is locked (every clone task, stopped or not, has ended).
    async fn wait_until_no_guest_is_locked(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.qemu_resources().await.iter().all(|r| r.lock.is_none()) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "guests still locked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every QEMU guest on the simulator, as `/cluster/resources` lists it.
    pub(crate) async fn qemu_resources(&self) -> Vec<labfleet_proxmox::ClusterResource> {
        self.api
            .client
            .cluster_resources(Some(ResourceType::Vm))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "qemu")
            .collect()
    }

    /// Every QEMU guest on the simulator: vmid → (node, name, template).
    pub(crate) async fn guests(&self) -> BTreeMap<i64, (String, String, bool)> {
        self.qemu_resources()
            .await
            .into_iter()
            .map(|r| {
                (
                    i64::from(r.vmid.unwrap()),
                    (
                        r.node.unwrap_or_default(),
                        r.name.unwrap_or_default(),
                        r.template.unwrap_or(false),
                    ),
                )
            })
            .collect()
    }

    /// Checks that every VM of the class exists once on the simulator where the class says, with
    /// its name, our marker and a MAC of its own; returns the VMs.
    pub(crate) async fn check_vms_exist(&self, class_id: i64, count: usize) -> Vec<Value> {
        let class = self.class(class_id).await;
        let vms = class["vms"].as_array().unwrap().clone();
        assert_eq!(vms.len(), count, "{class:#}");
        assert_eq!(class["counts"]["ready"], count, "{class:#}");
        let guests = self.guests().await;
        let mut macs = HashSet::new();
        for vm in &vms {
            let vmid = vm["vmid"].as_i64().unwrap();
            let (node, name, _) = guests
                .get(&vmid)
                .unwrap_or_else(|| panic!("VM {vmid} is not on the cluster: {vm}"));
            assert_eq!(node, vm["node"].as_str().unwrap(), "{vm}");
            assert_eq!(name, vm["name"].as_str().unwrap(), "{vm}");
            let index = vm["index"].as_i64().unwrap();
            assert!(
                name.ends_with(&format!("-student-{index}-{vmid}")),
                "{name}"
            );
            let config = self
                .api
                .client
                .qemu_config(node, vmid as u32, false, None)
                .await
                .unwrap();
            let marker = Marker::parse(&config.get("description").unwrap_or_default());
            assert_eq!(
                marker,
                Some(Marker {
                    class_id,
                    class_vm_id: vm["id"].as_i64().unwrap()
                }),
                "VM {vmid} lacks our marker"
            );
            let net = config.get("net0").unwrap();
            let mac = net
                .split(',')
                .next()
                .unwrap()
                .split('=')
                .nth(1)
                .unwrap()
                .to_string();
            assert!(macs.insert(mac.clone()), "MAC {mac} is used twice");
        }
        vms
    }
}

pub(crate) fn class_body(name: &str, method: &str, count: u32) -> Value {
    json!({
        "name": name, "description": "Introductory lab", "template_id": 104,
        "pool_size": count, "deployment_method": method,
    })
}

fn nodes_of(vms: &[Value]) -> BTreeSet<String> {
    vms.iter()
        .map(|v| v["node"].as_str().unwrap().to_string())
        .collect()
}

async fn linked_clones_deploy_a_class(backend: Backend) {
    let lab = Lab::start(backend, |_| {}).await;
    let (class_id, job) = lab
        .create_class(class_body("Biology Lab 101", "linked_clone", 20))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["kind"], "deploy_class");
    assert_eq!(done["progress"]["total"], 20);
    assert_eq!(done["progress"]["succeeded"], 20);
    assert_eq!(done["progress"]["percent"], 100.0);
    let vms = lab.check_vms_exist(class_id, 20).await;
    assert_eq!(nodes_of(&vms).len(), 3, "spread over the three nodes");
    let vmids: BTreeSet<i64> = vms.iter().map(|v| v["vmid"].as_i64().unwrap()).collect();
    assert_eq!(vmids.len(), 20);
    assert!(
        vmids.iter().all(|v| (10000..=19999).contains(v)),
        "{vmids:?}"
    );
    assert!(vms[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("biology-lab-101-student-1-"));
    // Linked: an overlay named like PVE's linked clones, backed by the template's base image.
    for vm in &vms {
        let vmid = vm["vmid"].as_i64().unwrap();
        let config = lab
            .api
            .client
            .qemu_config(vm["node"].as_str().unwrap(), vmid as u32, false, None)
            .await
            .unwrap();
        let disk = config.get("scsi0").unwrap();
        assert!(
            disk.starts_with(&format!(
                "nfs-shared:104/base-104-disk-0.qcow2/{vmid}/vm-{vmid}-disk-0.qcow2"
            )),
            "{disk}"
        );
    }
    // The job list filters by class: the deploy job and its 20 children.
    let (status, list) = lab
        .app
        .call(
            Method::GET,
            &format!("/api/jobs?class={class_id}&limit=100"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 21, "{list:#}");
    // Proxmox tasks in flight per node, from the slots every worker shares: none left held.
    let metrics = lab
        .app
        .http
        .get(lab.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for node in ["pve1", "pve2", "pve3"] {
        let line = format!(
            "labfleet_proxmox_tasks_in_flight{{resource=\"node:{}:{node}\"}} 0",
            lab.cluster_db_id
        );
        assert!(metrics.contains(&line), "no `{line}` in {metrics}");
    }
    lab.app.finish().await;
}
both_backends!(
    linked_clones_deploy_a_class_on,
    linked_clones_deploy_a_class
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_config_clones_deploy_a_class() {
    let lab = Lab::start(Backend::Real, |_| {}).await;
    let (full_class, full_job) = lab
        .create_class(class_body("Chemistry Full", "full_clone", 20))
        .await;
    let (config_class, config_job) = lab
        .create_class(class_body("Chemistry Config", "config_clone", 20))
        .await;
    for job in [full_job, config_job] {
        let done = lab.wait_finished(job, Duration::from_secs(90)).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
    }
    let full = lab.check_vms_exist(full_class, 20).await;
    let config = lab.check_vms_exist(config_class, 20).await;
    assert_eq!(nodes_of(&full).len(), 3);
    assert_eq!(nodes_of(&config).len(), 3);
    for vm in &full {
        let vmid = vm["vmid"].as_i64().unwrap();
        let disk = lab
            .api
            .client
            .qemu_config(vm["node"].as_str().unwrap(), vmid as u32, false, None)
            .await
            .unwrap()
            .get("scsi0")
            .unwrap();
        assert!(
            disk.starts_with(&format!("nfs-shared:{vmid}/vm-{vmid}-disk-0.qcow2")),
            "a full clone has its own disk: {disk}"
        );
    }
    for vm in &config {
        let vmid = vm["vmid"].as_i64().unwrap();
        let cfg = lab
            .api
            .client
            .qemu_config(vm["node"].as_str().unwrap(), vmid as u32, false, None)
            .await
            .unwrap();
        let disk = cfg.get("scsi0").unwrap();
        assert!(
            disk.starts_with(&format!(
                "nfs-shared:104/base-104-disk-0.qcow2/{vmid}/vm-{vmid}-disk-0.qcow2"
            )),
            "a config clone's overlay is named like a linked clone's: {disk}"
        );
        let overlay = lab._dir.path().join(format!(
            "storage/shared/nfs-shared/images/{vmid}/vm-{vmid}-disk-0.qcow2"
        ));
        assert!(overlay.exists(), "{} missing", overlay.display());
        assert!(
            cfg.get("ide2").unwrap_or_default().contains("cloudinit"),
            "a cloud-init drive of its own"
        );
        assert_ne!(
            cfg.get("smbios1"),
            lab.api
                .client
                .qemu_config("pve1", 104, false, None)
                .await
                .unwrap()
                .get("smbios1"),
            "a fresh SMBIOS uuid"
        );
    }
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_follows_load_and_the_templates_storage() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    // Load: pve1 carries 2 guests, pve2 one, pve3 none (the templates do not count).
    for (vmid, node) in [(900, "pve1"), (901, "pve1"), (902, "pve2")] {
        lab.foreign_vm(vmid, &format!("other-{vmid}"), node).await;
    }
    let (class_id, job) = lab
        .create_class(class_body("Balanced", "linked_clone", 6))
        .await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(class_id, 6).await;
    let order: Vec<&str> = vms.iter().map(|v| v["node"].as_str().unwrap()).collect();
    assert_eq!(order, ["pve3", "pve2", "pve1", "pve3", "pve2", "pve1"]);

    // deployment_node puts every VM there.
    let mut body = class_body("Pinned", "linked_clone", 3);
    body["deployment_node"] = json!("pve2");
    let (pinned, job) = lab.create_class(body).await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(pinned, 3).await;
    assert_eq!(nodes_of(&vms), BTreeSet::from(["pve2".to_string()]));

    // Template 105 lives on pve1's local-lvm: its clones never leave pve1.
    let mut body = class_body("Local", "linked_clone", 4);
    body["template_id"] = json!(105);
    let (local, job) = lab.create_class(body).await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(local, 4).await;
    assert_eq!(nodes_of(&vms), BTreeSet::from(["pve1".to_string()]));
    let mut body = class_body("Local elsewhere", "linked_clone", 1);
    body["template_id"] = json!(105);
    body["deployment_node"] = json!("pve3");
    let (status, err) = lab.app.call(Method::POST, "/api/classes", Some(body)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["field"], "deployment_node");
    assert!(
        err["error"].as_str().unwrap().contains("local storage"),
        "{err}"
    );
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_classes_on_two_workers_never_share_a_vmid() {
    let lab = Lab::start(Backend::Real, |_| {}).await;
    // A second worker process's worth of consumers on the same database and broker.
    let (publisher, _marker) =
        labfleet_jobs::Publisher::start(lab.app.queue.clone(), lab.app.store.clone());
    let second = labfleet_worker::Worker::new(
        lab.app.store.clone(),
        publisher,
        lab.app.clusters.clone(),
        // Its own backends, as another process would have.
        labfleet::components::backends(&lab.app.settings, &lab.app.clusters),
        lab.app.settings.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let second = tokio::spawn(second.run_until_stopped(stop.clone().cancelled_owned()));
    let (a, b) = tokio::join!(
        lab.create_class(class_body("Physics A", "linked_clone", 20)),
        lab.create_class(class_body("Physics B", "linked_clone", 20)),
    );
    for (_, job) in [a, b] {
        let done = lab.wait_finished(job, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
    }
    let mut all = BTreeSet::new();
    for (class, _) in [a, b] {
        for vm in lab.check_vms_exist(class, 20).await {
            assert!(
                all.insert(vm["vmid"].as_i64().unwrap()),
                "VMID used twice: {vm}"
            );
        }
    }
    // No Proxmox lock error reached a job.
    let (_, jobs) = lab.app.call(Method::GET, "/api/jobs?limit=200", None).await;
    for j in jobs["jobs"].as_array().unwrap() {
        assert!(j["error"].is_null(), "{j}");
    }
    stop.cancel();
    second.await.unwrap();
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_lock_timeouts_and_http_500s_are_retried_until_every_vm_exists() {
    let lab = Lab::start(Backend::Real, |s| {
        s.retry.initial_delay_ms = 20;
        s.retry.max_delay_ms = 200;
    })
    .await;
    lab.api
        .set_faults(json!({"lock_timeout": 0.2, "http_500": 0.05}))
        .await;
    let (class_id, job) = lab
        .create_class(class_body("Faulty", "linked_clone", 20))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    lab.api.set_faults(json!({})).await;
    lab.check_vms_exist(class_id, 20).await;
    // Retries happened (else the faults were not injected), and none surfaced.
    let (_, children) = lab
        .app
        .call(
            Method::GET,
            &format!("/api/jobs?parent={job}&limit=100"),
            None,
        )
        .await;
    let attempts: i64 = children["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attempts"].as_i64().unwrap())
        .sum();
    assert!(
        attempts > 20,
        "no retries with 25% injected faults: {attempts}"
    );
    // Every labfleet guest belongs to the class: no orphan left by a failed attempt.
    let guests = lab.guests().await;
    let ours = guests.iter().filter(|(_, (_, _, t))| !t).count();
    assert_eq!(ours, 20, "{guests:?}");
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_class_requests_get_a_4xx_naming_the_field() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    let cases = [
        (json!({"pool_size": 0}), "pool_size"),
        (json!({"pool_size": 2001}), "pool_size"),
        (
            json!({"deployment_method": "teleport"}),
            "deployment_method",
        ),
        (json!({"template_id": 999}), "template_id"),
        (json!({"template_id": 5}), "template_id"),
        (json!({"deployment_node": "nope"}), "deployment_node"),
        (json!({"deployment_cluster": "nope"}), "deployment_cluster"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "!!!"}), "name"),
        (json!({"idle_cpu_percent": 0}), "idle_cpu_percent"),
        // 105 is raw on LVM-thin: no qcow2 overlays possible.
        (
            json!({"template_id": 105, "deployment_method": "config_clone"}),
            "deployment_method",
        ),
    ];
    for (patch, field) in cases {
        let mut body = class_body("Bad", "linked_clone", 2);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = lab
            .app
            .call(Method::POST, "/api/classes", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} → {err}");
        assert_eq!(err["ok"], false);
        assert_eq!(err["field"], field, "{body} → {err}");
    }
    let (status, err) = lab
        .app
        .call(
            Method::POST,
            "/api/classes",
            Some(json!({"name": "x", "template_id": 104, "pool_size": 1, "colour": "red"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("colour"), "{err}");
    let (status, err) = lab
        .app
        .call(
            Method::POST,
            "/api/classes",
            Some(json!({"name": "x", "template_id": "104", "pool_size": 1})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["field"], "template_id", "{err}");
    // A body that is not an object is named as such, not by our internal type's name.
    let (status, err) = lab
        .app
        .call(Method::POST, "/api/classes", Some(json!([])))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["error"], "the request body must be a JSON object, not an array",
        "{err}"
    );
    for path in ["/api/classes/abc", "/api/classes/0"] {
        let (status, err) = lab.app.call(Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {err}");
    }
    let (status, _) = lab.app.call(Method::GET, "/api/classes/424242", None).await;
    assert_eq!(status, 404);
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_removed_after_the_sync_fails_the_deployment_at_once() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    lab.remove_template_behind_our_back("pve1", 105).await;
    let mut body = class_body("Ghost", "linked_clone", 3);
    body["template_id"] = json!(105);
    let (class_id, job) = lab.create_class(body).await;
    let done = lab.wait_finished(job, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["attempts"], 1, "a missing template is not retried");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("template 105 does not exist"), "{error}");
    assert_eq!(lab.class(class_id).await["vms"], json!([]));
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_class() {
    let lab = Lab::start(Backend::Real, |_| {}).await;
    let body = class_body("Once", "linked_clone", 2);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let resp = lab
            .app
            .http
            .post(lab.app.url("/api/classes"))
            .bearer_auth(crate::harness::TOKEN)
            .header("Idempotency-Key", "class-once")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        answers.push(resp.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0]["class_id"], answers[1]["class_id"]);
    assert_eq!(answers[0]["job_id"], answers[1]["job_id"]);
    let mut other = body.clone();
    other["pool_size"] = json!(3);
    let resp = lab
        .app
        .http
        .post(lab.app.url("/api/classes"))
        .bearer_auth(crate::harness::TOKEN)
        .header("Idempotency-Key", "class-once")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let (_, list) = lab.app.call(Method::GET, "/api/classes", None).await;
    assert_eq!(list["classes"].as_array().unwrap().len(), 1, "{list}");
    let job: Uuid = answers[0]["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    lab.app.finish().await;
}

async fn resize_and_delete(backend: Backend) {
    let lab = Lab::start(backend, |_| {}).await;
    let (class_id, job) = lab
        .create_class(class_body("Shrinking", "linked_clone", 3))
        .await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );

    // Grow: two more VMs, indexes 4 and 5.
    let (status, resp) = lab
        .app
        .call(
            Method::PATCH,
            &format!("/api/classes/{class_id}"),
            Some(json!({"pool_size": 5})),
        )
        .await;
    assert_eq!(status, 202, "{resp}");
    let grow: Uuid = resp["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        lab.wait_finished(grow, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(class_id, 5).await;
    let indexes: Vec<i64> = vms.iter().map(|v| v["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5]);

    // Shrink: the highest-numbered go.
    let (status, resp) = lab
        .app
        .call(
            Method::PATCH,
            &format!("/api/classes/{class_id}"),
            Some(json!({"pool_size": 2})),
        )
        .await;
    assert_eq!(status, 202, "{resp}");
    let shrink: Uuid = resp["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        lab.wait_finished(shrink, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let kept = lab.check_vms_exist(class_id, 2).await;
    let gone: Vec<i64> = vms[2..]
        .iter()
        .map(|v| v["vmid"].as_i64().unwrap())
        .collect();
    let guests = lab.guests().await;
    for vmid in &gone {
        assert!(!guests.contains_key(vmid), "VM {vmid} should be destroyed");
    }

    // Delete: every VM goes, the class is gone from the list, VMIDs cool down before reuse.
    let (status, resp) = lab
        .app
        .call(Method::DELETE, &format!("/api/classes/{class_id}"), None)
        .await;
    assert_eq!(status, 202, "{resp}");
    let delete: Uuid = resp["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        lab.wait_finished(delete, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let guests = lab.guests().await;
    for vm in &kept {
        assert!(!guests.contains_key(&vm["vmid"].as_i64().unwrap()), "{vm}");
    }
    let (status, _) = lab
        .app
        .call(Method::GET, &format!("/api/classes/{class_id}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = lab.app.call(Method::GET, "/api/classes", None).await;
    assert_eq!(list["classes"], json!([]));
    // A new class does not get the freed VMIDs (cool-down).
    let (again, job) = lab
        .create_class(class_body("Next", "linked_clone", 5))
        .await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let fresh: BTreeSet<i64> = lab
        .check_vms_exist(again, 5)
        .await
        .iter()
        .map(|v| v["vmid"].as_i64().unwrap())
        .collect();
    let freed: BTreeSet<i64> = vms.iter().map(|v| v["vmid"].as_i64().unwrap()).collect();
    assert!(fresh.is_disjoint(&freed), "{fresh:?} reuses {freed:?}");
    lab.app.finish().await;
}
both_backends!(resize_and_delete_on, resize_and_delete);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_vm_on_a_reserved_vmid_is_left_alone() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    // Someone else's VM already sits on 10000, the first id of the range: the plan reads the
    // cluster before reserving and skips it.
    lab.foreign_vm(10000, "not-ours", "pve1").await;
    let (class_id, job) = lab
        .create_class(class_body("Careful", "linked_clone", 3))
        .await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(class_id, 3).await;
    assert!(vms.iter().all(|v| v["vmid"] != 10000), "{vms:?}");
    let guests = lab.guests().await;
    assert_eq!(guests[&10000].1, "not-ours");
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_deployment_and_leaves_no_half_made_vm() {
    let lab = Lab::start_with_sim(Backend::Real, |_| {}, |sim| sim.time_scale = 0.2).await;
    let (class_id, job) = lab
        .create_class(class_body("Cancelled", "linked_clone", 20))
        .await;
    lab.app
        .wait_job(job, Duration::from_secs(60), |j| {
            j["progress"]["succeeded"].as_i64().unwrap_or(0) >= 2
        })
        .await;
    let (status, body) = lab
        .app
        .call(Method::POST, &format!("/api/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The deploy job is cancelled at once; its running VM jobs stop at their next check.
    let done = lab
        .app
        .wait_job(job, Duration::from_secs(60), |j| {
            j["progress"]["running"] == 0 && j["progress"]["queued"] == 0
        })
        .await;
    assert_eq!(done["status"], "cancelled", "{done:#}");
    let progress = &done["progress"];
    assert!(progress["cancelled"].as_i64().unwrap() > 0, "{progress}");
    assert!(progress["succeeded"].as_i64().unwrap() < 20, "{progress}");
    // What the class shows as made exists; nothing else does (stopped clones leave nothing).
    let class = lab.class(class_id).await;
    let made: BTreeSet<i64> = class["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "created")
        .map(|v| v["vmid"].as_i64().unwrap())
        .collect();
    // Stopped clone tasks clean up as they end: wait for every task to have ended.
    lab.wait_until_no_guest_is_locked(Duration::from_secs(10))
        .await;
    let clones: BTreeSet<i64> = lab
        .guests()
        .await
        .into_iter()
        .filter(|(_, (_, _, template))| !template)
        .map(|(vmid, _)| vmid)
        .collect();
    assert_eq!(clones, made, "{class:#}");
    assert_eq!(
        class["counts"]["ready"].as_u64().unwrap() as usize,
        made.len()
    );
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_that_asks_for_it_gets_its_vms_running() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    let mut body = class_body("Running", "linked_clone", 3);
    body["start"] = json!(true);
    let (class_id, job) = lab.create_class(body).await;
    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(class_id, 3).await;
    for vm in &vms {
        assert_eq!(vm["state"], "running", "{vm}");
        let status = lab
            .api
            .client
            .qemu_status(
                vm["node"].as_str().unwrap(),
                vm["vmid"].as_i64().unwrap() as u32,
            )
            .await
            .unwrap();
        assert_eq!(status.status, "running", "{vm}");
    }
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_vm_that_appears_on_a_planned_vmid_gets_it_quarantined() {
    foreign_vm_on_a_planned_vmid("linked_clone").await;
}

/// A config clone writes its overlay over SSH before Proxmox hears of the VMID, at the path disk
/// 0 of any VM with that VMID has on the storage: it must leave a foreign VM's disk alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_clone_never_writes_over_the_disk_of_a_foreign_vm_on_its_vmid() {
    foreign_vm_on_a_planned_vmid("config_clone").await;
}

async fn foreign_vm_on_a_planned_vmid(method: &str) {
    use sea_orm::ConnectionTrait;
    // One storage slot, held by the test: the VM job waits with its VMID planned but unused.
    let lab = Lab::start(Backend::Real, |s| s.deploy.storage_concurrency = 1).await;
    let db = lab.app.store.db();
    let exec = |sql: &'static str| async move {
        db.execute(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            sql,
        ))
        .await
        .unwrap();
    };
    exec(
        "INSERT INTO resource_slots (resource, slot, holder, expires_at) \
         SELECT 'storage:' || id || ':nfs-shared', 0, 'test', now() + interval '1 minute' \
         FROM clusters",
    )
    .await;
    let (class_id, job) = lab.create_class(class_body("Contested", method, 1)).await;
    let planned = loop {
        let class = lab.class(class_id).await;
        if let Some(vmid) = class["vms"][0]["vmid"].as_i64() {
            break vmid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Someone else takes that VMID behind labfleet's back: a linked clone, its disk where a
    // config clone's overlay for the VMID would go.
    lab.foreign_vm(planned as u32, "intruder", "pve2").await;
    let intruder_disk = lab._dir.path().join(format!(
        "storage/shared/nfs-shared/images/{planned}/vm-{planned}-disk-0.qcow2"
    ));
    let disk_before = std::fs::read(&intruder_disk).expect("the intruder's disk");
    let written_before = std::fs::metadata(&intruder_disk)
        .unwrap()
        .modified()
        .unwrap();
    exec("UPDATE resource_slots SET holder = NULL, expires_at = NULL WHERE holder = 'test'").await;

    assert_eq!(
        lab.wait_finished(job, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let vms = lab.check_vms_exist(class_id, 1).await;
    assert_ne!(vms[0]["vmid"], planned, "{vms:?}");
    assert_eq!(
        lab.guests().await[&planned].1,
        "intruder",
        "the foreign VM is untouched"
    );
    let row = db
        .query_one(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT state FROM vmid_reservations WHERE vmid = $1",
            [planned.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "state").unwrap(), "quarantined");
    assert_eq!(
        std::fs::read(&intruder_disk).unwrap(),
        disk_before,
        "the foreign VM's disk was written over"
    );
    assert_eq!(
        std::fs::metadata(&intruder_disk)
            .unwrap()
            .modified()
            .unwrap(),
        written_before,
        "the foreign VM's disk was rewritten"
    );
    lab.app.finish().await;
}

/// A clone that we started but whose record was lost (an outage between Proxmox accepting the
/// clone and the row saying so) is still being made when the VM's job looks again. Proxmox keeps
/// a placeholder config without our marker until the copy ends, so the job must wait and then
/// adopt it, not call it foreign and clone again on another VMID (one VM made twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_of_ours_still_being_made_is_awaited_and_adopted_not_made_twice() {
    // Slow clones (about 3 s for a linked clone), so the retry looks while ours is copying.
    let lab = Lab::start_with_sim(Backend::Embedded, |_| {}, |sim| sim.time_scale = 4.0).await;
    // The first attempt fails for good: the template's storage is full.
    lab.api
        .set_faults(json!({"storage_full": ["nfs-shared"]}))
        .await;
    let (class_id, job) = lab
        .create_class(class_body("Lost record", "linked_clone", 1))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    lab.api.set_faults(json!({})).await;
    let vm = lab.class(class_id).await["vms"][0].clone();
    assert_eq!(vm["state"], "failed", "{vm}");
    let (vm_id, vmid) = (vm["id"].as_i64().unwrap(), vm["vmid"].as_i64().unwrap());

    // The clone "our earlier run" started: same VMID, name and marker as the worker sends.
    let marker = Marker {
        class_id,
        class_vm_id: vm_id,
    };
    let params = CloneParams::linked(vmid as u32)
        .name(vm["name"].as_str().unwrap())
        .description(marker.description(Some("Introductory lab")))
        .target(vm["node"].as_str().unwrap());
    let upid = lab
        .api
        .client
        .qemu_clone("pve1", 104, &params)
        .await
        .unwrap();
    lab.retry_failed(class_id).await;
    assert!(
        lab.qemu_resources()
            .await
            .iter()
            .any(|r| r.vmid == Some(vmid as u32) && r.lock.as_deref() == Some("clone")),
        "the clone ended before the retry looked; the test proves nothing"
    );
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    lab.api.wait(upid).await;
    let vm = lab.class(class_id).await["vms"][0].clone();
    assert_eq!(vm["vmid"], vmid, "the VM moved to another VMID: {vm}");
    assert_eq!(vm["state"], "created", "{vm}");
    let clones: Vec<i64> = lab
        .guests()
        .await
        .into_iter()
        .filter(|(_, (_, _, template))| !template)
        .map(|(vmid, _)| vmid)
        .collect();
    assert_eq!(clones, vec![vmid], "one VM, made once");
    lab.app.finish().await;
}

/// A VM that already runs when its deployment starts it (an earlier run started it, then lost
/// its record) is running, as asked: Proxmox says "already running" in the start task, and that
/// must not fail the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_vm_that_already_runs_counts_as_started() {
    use sea_orm::ConnectionTrait;
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    let (class_id, job) = lab
        .create_class(class_body("Started twice", "linked_clone", 1))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let vm = lab.class(class_id).await["vms"][0].clone();
    let (vmid, node) = (vm["vmid"].as_i64().unwrap(), vm["node"].as_str().unwrap());
    // It runs already, the class asks for running VMs, and its deploy job is to run again.
    let upid = lab
        .api
        .client
        .qemu_start(node, vmid as u32, &Default::default())
        .await
        .unwrap();
    lab.api.wait(upid).await;
    let db = lab.app.store.db();
    for (sql, value) in [
        (
            "UPDATE classes SET start_vms = true WHERE id = ?",
            sea_orm::Value::from(class_id),
        ),
        (
            "UPDATE jobs SET status = 'failed', error = 'test' WHERE parent_id = ?",
            job.into(),
        ),
        ("UPDATE jobs SET status = 'failed' WHERE id = ?", job.into()),
    ] {
        let changed = db
            .execute(sea_orm::Statement::from_sql_and_values(
                db.get_database_backend(),
                sql,
                [value],
            ))
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1, "{sql}");
    }
    lab.retry_failed(class_id).await;
    let done = lab
        .app
        .wait_job(job, Duration::from_secs(30), |j| {
            j["status"] == "succeeded" || j["status"] == "failed"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let vm = lab.class(class_id).await["vms"][0].clone();
    assert_eq!(vm["state"], "running", "{vm}");
    lab.app.finish().await;
}
