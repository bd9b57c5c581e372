use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn linked_clone_of_104_gets_pves_volume_names_and_a_fresh_identity() {
    let s = spawn_sim().await;
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[
                ("newid", "201"),
                ("name", "lab-01"),
                ("target", "pve2"),
                ("description", "labfleet:x"),
            ],
        )
        .await;
    let f: Vec<&str> = upid.split(':').collect();
    assert_eq!(
        (f[1], f[5], f[6], f[7]),
        ("pve1", "qmclone", "104", "root@pam!labfleet"),
        "{upid}"
    );
    let (exit, log) = s.wait_task(&upid).await;
    assert_eq!(exit, "OK", "{log:?}");
    assert_eq!(log.last().unwrap(), "TASK OK");
    let c = s.config("pve2", 201).await;
    assert_eq!(c.status, 200, "{c:?}");
    let d = c.data();
    assert_eq!(
        d["scsi0"].as_str().unwrap().split(',').next().unwrap(),
        "nfs-shared:104/base-104-disk-0.qcow2/201/vm-201-disk-0.qcow2"
    );
    assert!(d["ide2"]
        .as_str()
        .unwrap()
        .starts_with("nfs-shared:201/vm-201-cloudinit.qcow2"));
    assert_eq!(d["name"], "lab-01");
    assert_eq!(d["description"], "labfleet:x");
    assert!(
        d.get("template").is_none() && d.get("lock").is_none(),
        "{d}"
    );
    let t = s.config("pve1", 104).await;
    assert_ne!(d["net0"], t.data()["net0"]);
    assert_ne!(d["smbios1"], t.data()["smbios1"]);
    let content = s
        .api(
            "GET",
            "/nodes/pve2/storage/nfs-shared/content",
            &[("vmid", "201")],
        )
        .await;
    let vols = content.data().as_array().unwrap();
    assert!(
        vols.iter()
            .any(|v| v["parent"] == "104/base-104-disk-0.qcow2"),
        "{vols:?}"
    );
    s.h.shutdown().await;
}

#[tokio::test]
async fn linked_clone_with_storage_is_refused_synchronously() {
    let s = spawn_sim().await;
    let r = s
        .api(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "202"), ("storage", "local-lvm")],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "parameter 'storage' not allowed for linked clones"
    );
    assert_eq!(
        r.body["message"],
        "parameter 'storage' not allowed for linked clones"
    );
    s.h.shutdown().await;
}

#[tokio::test]
async fn local_template_cannot_be_cloned_to_another_node() {
    let s = spawn_sim().await;
    let r = s
        .api(
            "POST",
            "/nodes/pve1/qemu/105/clone",
            &[("newid", "203"), ("target", "pve3")],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "can't clone VM to node 'pve3' (VM uses local storage)"
    );
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/105/clone", &[("newid", "203")])
            .await,
        "OK"
    );
    let c = s.config("pve1", 203).await;
    assert!(
        c.data()["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-203-disk-0"),
        "{c:?}"
    );
    let exists = s
        .api("POST", "/nodes/pve1/qemu/105/clone", &[("newid", "203")])
        .await;
    assert_eq!(
        exists.reason,
        "unable to create VM 203: config file already exists"
    );
    s.h.shutdown().await;
}

#[tokio::test]
async fn vm_is_locked_while_cloning_and_start_fails_in_the_task() {
    let s = spawn_sim_with(|c| c.time_scale = 0.5).await;
    let upid = s
        .start_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "204")])
        .await;
    // wait until the temp config with `lock: clone` exists
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = s.config("pve1", 204).await;
        if c.status == 200 {
            assert_eq!(c.data()["lock"], "clone");
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = s
        .start_task("POST", "/nodes/pve1/qemu/204/status/start", &[])
        .await;
    assert_eq!(s.wait_task(&start).await.0, "VM is locked (clone)");
    let put = s
        .api("PUT", "/nodes/pve1/qemu/204/config", &[("cores", "4")])
        .await;
    assert_eq!(put.status, 500);
    assert_eq!(put.reason, "VM is locked (clone)");
    assert_eq!(s.wait_task(&upid).await.0, "OK");
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/204/status/start", &[])
            .await,
        "OK"
    );
    let cur = s
        .api("GET", "/nodes/pve1/qemu/204/status/current", &[])
        .await;
    assert_eq!(cur.data()["status"], "running");
    s.h.shutdown().await;
}

#[tokio::test]
async fn concurrent_clones_on_one_storage_serialize_and_late_ones_hit_the_lock_timeout() {
    // a linked clone of 104 needs 5.4 s (simulated) of nfs lock: disk 5.0 + cloud-init 0.4; with
    // PVE's 10 s acquire timeout only the first two or three of 30 parallel clones get through
    let s = spawn_sim_with(|c| {
        c.time_scale = 0.02;
        c.use_qemu_img = false;
        c.latencies.linked_clone_disk = 5.0;
        c.latencies.alloc = 0.4;
    })
    .await;
    let (ok, failed) = parallel_clones(&s, 104, 400).await;
    for exit in &failed {
        assert_eq!(
            exit,
            "clone failed: cfs-lock 'storage-nfs-shared' error: got lock request timeout"
        );
    }
    assert!(ok >= 1, "ok={ok}");
    assert!(failed.len() >= 5, "failed={}", failed.len());
    // the failed ones left nothing behind
    let list = s.api("GET", "/nodes/pve1/qemu", &[]).await;
    assert_eq!(list.data().as_array().unwrap().len(), 2 + ok);
    s.h.shutdown().await;
}

/// Submits 30 clones of `template` at once (newid base..base+30); returns (#OK, failure texts).
async fn parallel_clones(s: &TestSim, template: u32, base: u32) -> (usize, Vec<String>) {
    let path = format!("/nodes/pve1/qemu/{template}/clone");
    let ids: Vec<String> = (0..30).map(|i| (base + i).to_string()).collect();
    let upids = futures::future::join_all(ids.iter().map(|id| {
        let path = &path;
        async move { s.start_task("POST", path, &[("newid", id.as_str())]).await }
    }))
    .await;
    let mut ok = 0;
    let mut failed = Vec::new();
    for u in &upids {
        let (exit, _) = s.wait_task(u).await;
        if exit == "OK" {
            ok += 1;
        } else {
            failed.push(exit);
        }
    }
    (ok, failed)
}

#[tokio::test]
async fn local_storage_lock_timeout_has_the_flock_text() {
    let s = spawn_sim_with(|c| {
        c.time_scale = 0.02;
        c.use_qemu_img = false;
        c.latencies.linked_clone_disk = 5.0;
        c.latencies.alloc = 0.4;
    })
    .await;
    let (ok, failed) = parallel_clones(&s, 105, 500).await;
    assert!(ok >= 1 && failed.len() >= 5, "ok={ok} failed={failed:?}");
    for exit in &failed {
        assert_eq!(
            exit,
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
        );
    }
    s.h.shutdown().await;
}

#[tokio::test]
async fn full_clone_copies_and_logs_progress() {
    let s = spawn_sim().await;
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "205"), ("full", "1"), ("storage", "local-lvm")],
        )
        .await;
    let (exit, log) = s.wait_task(&upid).await;
    assert_eq!(exit, "OK", "{log:?}");
    assert!(
        log.iter()
            .any(|l| l == "transferred 2.0 GiB of 2.0 GiB (100.00%)"),
        "{log:?}"
    );
    let c = s.config("pve1", 205).await;
    assert!(
        c.data()["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-205-disk-0"),
        "{c:?}"
    );
    assert_eq!(c.data()["name"], "Copy-of-VM-ubuntu-2404-cloud");
    s.h.shutdown().await;
}

#[tokio::test]
async fn template_with_linked_clones_cannot_be_destroyed() {
    let s = spawn_sim().await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "206")])
            .await,
        "OK"
    );
    let exit = s.run_task("DELETE", "/nodes/pve1/qemu/104", &[]).await;
    assert!(exit.contains("is still in use by linked clones"), "{exit}");
    assert_eq!(
        s.run_task("DELETE", "/nodes/pve1/qemu/206", &[]).await,
        "OK"
    );
    assert_eq!(s.config("pve1", 206).await.status, 500);
    assert_eq!(
        s.run_task("DELETE", "/nodes/pve1/qemu/104", &[]).await,
        "OK"
    );
    s.h.shutdown().await;
}

async fn wait_for_config(s: &TestSim, node: &str, vmid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.config(node, vmid).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "VM {vmid} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn template_config_change_waits_for_a_running_clone() {
    // scale 0.1: the clone holds the template's shared flock ~0.17 s; PUT config waits up to 1 s
    let s = spawn_sim_with(|c| {
        c.time_scale = 0.1;
        c.use_qemu_img = false;
    })
    .await;
    let upid = s
        .start_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "700")])
        .await;
    wait_for_config(&s, "pve1", 700).await;
    let r = s
        .api(
            "PUT",
            "/nodes/pve1/qemu/104/config",
            &[("description", "changed")],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.wait_task(&upid).await.0, "OK");
    assert_eq!(s.config("pve1", 104).await.data()["description"], "changed");
    s.h.shutdown().await;
}

#[tokio::test]
async fn template_config_change_times_out_behind_a_long_clone() {
    // scale 0.05: a full clone copies 2 GiB for 2 s; the template flock timeout is 0.5 s
    let s = spawn_sim_with(|c| {
        c.time_scale = 0.05;
        c.use_qemu_img = false;
        c.latencies.full_clone_per_gib = 20.0;
    })
    .await;
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "701"), ("full", "1")],
        )
        .await;
    wait_for_config(&s, "pve1", 701).await;
    let r = s
        .api(
            "PUT",
            "/nodes/pve1/qemu/104/config",
            &[("description", "changed")],
        )
        .await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(
        r.reason,
        "can't lock file '/var/lock/qemu-server/lock-104.conf' - got timeout"
    );
    assert_eq!(s.wait_task(&upid).await.0, "OK");
    s.h.shutdown().await;
}

#[tokio::test]
async fn linked_clone_of_a_plain_vm_is_refused_and_full_is_its_default() {
    let s = spawn_sim().await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/105/clone", &[("newid", "710")])
            .await,
        "OK"
    );
    let r = s
        .api(
            "POST",
            "/nodes/pve1/qemu/710/clone",
            &[("newid", "711"), ("full", "0")],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Linked clone feature is not supported for drive 'scsi0'"
    );
    let (exit, log) = s
        .wait_task(
            &s.start_task("POST", "/nodes/pve1/qemu/710/clone", &[("newid", "711")])
                .await,
        )
        .await;
    assert_eq!(exit, "OK");
    assert!(
        log.iter()
            .any(|l| l.starts_with("create full clone of drive scsi0")),
        "{log:?}"
    );
    s.h.shutdown().await;
}
