use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn http_500_fires_at_the_configured_rate() {
    let s = spawn_sim().await;
    let r = s
        .control("PUT", "/_sim/faults", json!({"http_500": 0.25}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let n = 400;
    let mut fails = 0;
    for _ in 0..n {
        let r = s.api("GET", "/version", &[]).await;
        if r.status == 500 {
            assert_eq!(
                r.reason,
                "Can't connect to 127.0.0.1:85 (Connection refused)"
            );
            fails += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    let rate = fails as f64 / n as f64;
    assert!((0.17..0.33).contains(&rate), "rate {rate}");
    s.control("PUT", "/_sim/faults", json!({})).await;
    assert_eq!(s.api("GET", "/version", &[]).await.status, 200);
    s.h.shutdown().await;
}

#[tokio::test]
async fn same_seed_gives_the_same_fault_sequence() {
    async fn sequence(seed: u64) -> Vec<u16> {
        let s = spawn_sim_with(|c| {
            c.seed = seed;
            c.faults.http_503 = 0.5;
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(s.api("GET", "/version", &[]).await.status);
        }
        s.h.shutdown().await;
        out
    }
    let a = sequence(42).await;
    assert_eq!(a, sequence(42).await);
    assert!(a.contains(&503) && a.contains(&200));
}

#[tokio::test]
async fn dropped_connections_get_no_answer() {
    let s = spawn_sim_with(|c| c.faults.drop_connection = 1.0).await;
    let r = try_raw(&s.addr, "GET", "/api2/json/version", &[s.token()], None).await;
    assert!(r.is_err(), "{r:?}");
    s.h.shutdown().await;
}

#[tokio::test]
async fn offline_node_answers_595() {
    let s = spawn_sim_with(|c| {
        c.faults.node_offline.insert("pve2".into());
    })
    .await;
    let r = s.api("GET", "/nodes/pve2/qemu", &[]).await;
    assert_eq!(r.status, 595);
    assert_eq!(r.reason, "No route to host");
    assert_eq!(s.api("GET", "/nodes/pve1/qemu", &[]).await.status, 200);
    let nodes = s.api("GET", "/nodes", &[]).await;
    assert_eq!(nodes.data()[1]["status"], "offline");
    // one of three offline: still quorate; two of three: writes fail
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "305")])
            .await,
        "OK"
    );
    let r = s
        .control(
            "PUT",
            "/_sim/faults",
            json!({"node_offline": ["pve2", "pve3"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let w = s
        .api("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "306")])
        .await;
    assert_eq!(w.status, 500);
    assert_eq!(w.reason, "cluster not ready - no quorum?");
    assert_eq!(s.api("GET", "/nodes/pve1/qemu", &[]).await.status, 200);
    s.h.shutdown().await;
}

#[tokio::test]
async fn injected_lock_timeouts_fail_clones_with_the_real_text() {
    let s = spawn_sim_with(|c| c.faults.lock_timeout = 1.0).await;
    let exit = s
        .run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "300")])
        .await;
    assert_eq!(
        exit,
        "clone failed: cfs-lock 'storage-nfs-shared' error: got lock request timeout"
    );
    assert_eq!(s.config("pve1", 300).await.status, 500);
    s.h.shutdown().await;
}

#[tokio::test]
async fn full_storage_fails_allocation() {
    let s = spawn_sim_with(|c| {
        c.faults.storage_full.insert("local-lvm".into());
    })
    .await;
    let exit = s
        .run_task("POST", "/nodes/pve1/qemu/105/clone", &[("newid", "301")])
        .await;
    assert!(
        exit.starts_with("clone failed: lvcreate 'pve/vm-301-"),
        "{exit}"
    );
    assert!(exit.contains("insufficient free space"), "{exit}");
    s.h.shutdown().await;
}

#[tokio::test]
async fn guest_ignoring_acpi_fails_shutdown_unless_forced() {
    let s = spawn_sim_with(|c| {
        c.faults.ignore_acpi.insert(310);
    })
    .await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "310")])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/310/status/start", &[])
            .await,
        "OK"
    );
    let exit = s
        .run_task(
            "POST",
            "/nodes/pve1/qemu/310/status/shutdown",
            &[("timeout", "5")],
        )
        .await;
    assert_eq!(exit, "VM quit/powerdown failed - got timeout");
    let exit = s
        .run_task(
            "POST",
            "/nodes/pve1/qemu/310/status/shutdown",
            &[("timeout", "5"), ("forceStop", "1")],
        )
        .await;
    assert_eq!(exit, "OK");
    let cur = s
        .api("GET", "/nodes/pve1/qemu/310/status/current", &[])
        .await;
    assert_eq!(cur.data()["status"], "stopped");
    s.h.shutdown().await;
}

#[tokio::test]
async fn slow_responses_are_delayed() {
    let s = spawn_sim_with(|c| {
        c.faults.slow_response = 1.0;
        c.faults.slow_response_ms = 300;
    })
    .await;
    let t0 = std::time::Instant::now();
    assert_eq!(s.api("GET", "/version", &[]).await.status, 200);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
    s.h.shutdown().await;
}
