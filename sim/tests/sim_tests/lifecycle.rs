use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn cpu_load_shows_in_resources_status_and_rrddata() {
    let s = spawn_sim().await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "320")])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/320/status/start", &[])
            .await,
        "OK"
    );
    let r = s
        .control("PUT", "/_sim/vms/320/cpu", json!({"cpu": 0.73}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let res = s.api("GET", "/cluster/resources", &[("type", "vm")]).await;
    let vm = res
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmid"] == 320)
        .unwrap()
        .clone();
    assert_eq!(vm["cpu"], json!(0.73));
    assert_eq!(vm["status"], "running");
    assert_eq!(vm["node"], "pve1");
    let cur = s
        .api("GET", "/nodes/pve1/qemu/320/status/current", &[])
        .await;
    assert_eq!(cur.data()["cpu"], json!(0.73));
    let rrd = s
        .api(
            "GET",
            "/nodes/pve1/qemu/320/rrddata",
            &[("timeframe", "hour"), ("cf", "AVERAGE")],
        )
        .await;
    let samples = rrd.data().as_array().unwrap();
    assert_eq!(samples.last().unwrap()["cpu"], json!(0.73));
    let tmpl = res
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmid"] == 104)
        .unwrap()
        .clone();
    assert_eq!(tmpl["template"], json!(1));
    assert_eq!(tmpl["cpu"], json!(0.0));
    s.h.shutdown().await;
}

#[tokio::test]
async fn snapshots_create_list_rollback_delete() {
    let s = spawn_sim().await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "330")])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve1/qemu/330/snapshot",
            &[("snapname", "clean"), ("description", "fresh")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve1/qemu/330/snapshot",
            &[("snapname", "clean")]
        )
        .await,
        "snapshot name 'clean' already used"
    );
    let r = s
        .api("PUT", "/nodes/pve1/qemu/330/config", &[("cores", "8")])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = s.api("GET", "/nodes/pve1/qemu/330/snapshot", &[]).await;
    let names: Vec<_> = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["clean", "current"]);
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/330/snapshot/clean/rollback", &[])
            .await,
        "OK"
    );
    assert_eq!(s.config("pve1", 330).await.data()["cores"], json!(2));
    assert_eq!(
        s.run_task("DELETE", "/nodes/pve1/qemu/330/snapshot/clean", &[])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/330/snapshot/clean/rollback", &[])
            .await,
        "snapshot 'clean' does not exist"
    );
    let tmpl = s
        .run_task(
            "POST",
            "/nodes/pve1/qemu/104/snapshot",
            &[("snapname", "x1")],
        )
        .await;
    assert_eq!(tmpl, "you can't take a snapshot if it's a template");
    s.h.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_vms_and_power_state() {
    let s = spawn_sim().await;
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "340"), ("target", "pve3")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        s.run_task("POST", "/nodes/pve3/qemu/340/status/start", &[])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve3/qemu/340/snapshot",
            &[("snapname", "s1")]
        )
        .await,
        "OK"
    );
    let before = s.config("pve3", 340).await.body;
    let data = s.dir.0.join("data");
    let conf = std::fs::read_to_string(data.join("nodes/pve3/qemu-server/340.conf")).unwrap();
    assert!(conf.contains("\n[s1]\n"), "{conf}");
    s.h.shutdown().await;
    let h = labfleet_sim::start(labfleet_sim::SimConfig::for_tests(&data))
        .await
        .unwrap();
    let s2 = TestSim {
        addr: h.url.trim_start_matches("http://").to_string(),
        h,
        dir: s.dir,
    };
    assert_eq!(s2.config("pve3", 340).await.body, before);
    let cur = s2
        .api("GET", "/nodes/pve3/qemu/340/status/current", &[])
        .await;
    assert_eq!(cur.data()["status"], "running");
    let content = s2
        .api(
            "GET",
            "/nodes/pve3/storage/nfs-shared/content",
            &[("vmid", "340")],
        )
        .await;
    assert_eq!(content.data().as_array().unwrap().len(), 2, "{content:?}");
    // the template stays protected by its clone after the restart
    let exit = s2.run_task("DELETE", "/nodes/pve1/qemu/104", &[]).await;
    assert!(exit.contains("still in use by linked clones"), "{exit}");
    s2.h.shutdown().await;
}

#[tokio::test]
async fn stopping_a_task_interrupts_it() {
    let s = spawn_sim_with(|c| c.time_scale = 1.0).await;
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "350"), ("full", "1")],
        )
        .await;
    let r = s
        .api(
            "DELETE",
            &format!("/nodes/pve1/tasks/{}", upid.replace(':', "%3A")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let (exit, _) = s.wait_task(&upid).await;
    assert_eq!(exit, "clone failed: received interrupt");
    assert_eq!(s.config("pve1", 350).await.status, 500);
    s.h.shutdown().await;
}

#[tokio::test]
async fn lower_bound_of_a_linked_clone_workload_counts_storage_serialization() {
    let s = spawn_sim().await;
    let r = raw(
        &s.addr,
        "GET",
        "/_sim/lower-bound?linked_clones=20&template=104&nodes=pve1,pve2,pve3&time_scale=1",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let secs = r.data()["seconds"].as_f64().unwrap();
    // defaults: prepare 0.5 + 20 × (disk 0.15 + cloud-init 0.1) on nfs-shared + finish 0.5
    assert!((secs - 6.0).abs() < 1e-6, "{r:?}");
    assert_eq!(r.data()["bottleneck"], "storage nfs-shared");
    // 105 lives on pve1's local-lvm: same serialization, other storage
    let r = raw(
        &s.addr,
        "GET",
        "/_sim/lower-bound?linked_clones=2&template=105&time_scale=1",
        &[],
        None,
    )
    .await;
    assert_eq!(r.data()["bottleneck"], "storage pve1/local-lvm");
    // recorded operations
    raw(&s.addr, "DELETE", "/_sim/lower-bound", &[], None).await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "360")])
            .await,
        "OK"
    );
    let r = raw(&s.addr, "GET", "/_sim/lower-bound?time_scale=1", &[], None).await;
    assert_eq!(r.data()["ops"], json!(1));
    assert!(
        (r.data()["seconds"].as_f64().unwrap() - 1.25).abs() < 1e-6,
        "{r:?}"
    );
    s.h.shutdown().await;
}

#[tokio::test]
async fn created_vm_becomes_a_template_that_clones_linked() {
    let s = spawn_sim().await;
    let exit = s
        .run_task(
            "POST",
            "/nodes/pve2/qemu",
            &[
                ("vmid", "800"),
                ("name", "golden"),
                ("scsi0", "local-lvm:4"),
                ("ide2", "local-lvm:cloudinit"),
                ("net0", "virtio,bridge=vmbr0"),
                ("memory", "1024"),
            ],
        )
        .await;
    assert_eq!(exit, "OK");
    let c = s.config("pve2", 800).await;
    assert_eq!(c.data()["scsi0"], "local-lvm:vm-800-disk-0,size=4G");
    assert!(c.data()["ide2"]
        .as_str()
        .unwrap()
        .starts_with("local-lvm:vm-800-cloudinit"));
    let dup = s.api("POST", "/nodes/pve2/qemu", &[("vmid", "800")]).await;
    assert_eq!(
        dup.reason,
        "unable to create VM 800: config file already exists"
    );
    assert_eq!(
        s.run_task(
            "PUT",
            "/nodes/pve2/qemu/800/resize",
            &[("disk", "scsi0"), ("size", "+1G")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        s.config("pve2", 800).await.data()["scsi0"],
        "local-lvm:vm-800-disk-0,size=5G"
    );
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve2/qemu/800/config",
            &[("cores", "4"), ("delete", "memory")],
        )
        .await;
    assert!(upid.contains(":qmconfig:800:"), "{upid}");
    assert_eq!(s.wait_task(&upid).await.0, "OK");
    let c = s.config("pve2", 800).await;
    assert_eq!(c.data()["cores"], json!(4));
    assert!(c.data().get("memory").is_none());
    assert_eq!(
        s.run_task("POST", "/nodes/pve2/qemu/800/template", &[])
            .await,
        "OK"
    );
    let c = s.config("pve2", 800).await;
    assert_eq!(c.data()["scsi0"], "local-lvm:base-800-disk-0,size=5G");
    assert_eq!(c.data()["template"], json!(1));
    let pool = s.api("POST", "/pools", &[("poolid", "class-a")]).await;
    assert_eq!(pool.status, 200, "{pool:?}");
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve2/qemu/800/clone",
            &[("newid", "801"), ("pool", "class-a")]
        )
        .await,
        "OK"
    );
    assert!(s.config("pve2", 801).await.data()["scsi0"]
        .as_str()
        .unwrap()
        .starts_with("local-lvm:vm-801-disk-0"));
    let pools = s.api("GET", "/pools", &[("poolid", "class-a")]).await;
    assert_eq!(pools.data()[0]["members"][0]["vmid"], json!(801));
    let start = s
        .run_task("POST", "/nodes/pve2/qemu/800/status/start", &[])
        .await;
    assert_eq!(start, "you can't start a vm if it's a template");
    s.h.shutdown().await;
}

#[tokio::test]
async fn parallel_clones_finish_no_earlier_than_the_lower_bound() {
    let s = spawn_sim_with(|c| {
        c.time_scale = 0.2;
        c.use_qemu_img = false;
    })
    .await;
    raw(&s.addr, "DELETE", "/_sim/lower-bound", &[], None).await;
    let t0 = std::time::Instant::now();
    let mut upids = Vec::new();
    for i in 0..20u32 {
        let id = (900 + i).to_string();
        let target = ["pve1", "pve2", "pve3"][i as usize % 3];
        upids.push(
            s.start_task(
                "POST",
                "/nodes/pve1/qemu/104/clone",
                &[("newid", &id), ("target", target)],
            )
            .await,
        );
    }
    for u in &upids {
        assert_eq!(s.wait_task(u).await.0, "OK");
    }
    let wall = t0.elapsed().as_secs_f64();
    let r = raw(&s.addr, "GET", "/_sim/lower-bound", &[], None).await;
    let bound = r.data()["seconds"].as_f64().unwrap();
    assert_eq!(r.data()["ops"], json!(20));
    // 0.2 × (0.5 + 20 × 0.25 + 0.5) = 1.2 s
    assert!((bound - 1.2).abs() < 0.05, "{r:?}");
    assert!(wall >= bound * 0.98, "wall {wall} < bound {bound}");
    assert!(wall < bound * 5.0, "wall {wall} vs bound {bound}");
    s.h.shutdown().await;
}
