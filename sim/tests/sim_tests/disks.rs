use serde_json::Value;

use crate::common::*;

fn qemu_img_info(path: &std::path::Path) -> Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn linked_clone_is_a_qcow2_overlay_on_the_template_base() {
    let s = spawn_sim().await;
    if !labfleet_sim::SimConfig::for_tests("x").use_qemu_img {
        eprintln!("qemu-img not installed: checking the placeholder metadata instead");
    }
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "370")])
            .await,
        "OK"
    );
    assert_eq!(
        s.run_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "371"), ("full", "1")]
        )
        .await,
        "OK"
    );
    let nfs = s.dir.0.join("data/storage/shared/nfs-shared/images");
    let overlay = nfs.join("370/vm-370-disk-0.qcow2");
    let copy = nfs.join("371/vm-371-disk-0.qcow2");
    if labfleet_sim::SimConfig::for_tests("x").use_qemu_img {
        let info = qemu_img_info(&overlay);
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["backing-filename"], "../104/base-104-disk-0.qcow2");
        assert_eq!(info["virtual-size"], 2u64 << 30);
        let info = qemu_img_info(&copy);
        assert!(info.get("backing-filename").is_none(), "{info}");
        // snapshots are internal qcow2 snapshots
        assert_eq!(
            s.run_task(
                "POST",
                "/nodes/pve1/qemu/370/snapshot",
                &[("snapname", "snap1")]
            )
            .await,
            "OK"
        );
        let info = qemu_img_info(&overlay);
        assert_eq!(info["snapshots"][0]["name"], "snap1", "{info}");
        let base = qemu_img_info(&nfs.join("104/base-104-disk-0.qcow2"));
        assert_eq!(base["format"], "qcow2");
    } else {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(&overlay).unwrap()).unwrap();
        assert_eq!(meta["backing"], "../104/base-104-disk-0.qcow2");
        assert!(copy.exists());
    }
    s.h.shutdown().await;
}

#[tokio::test]
async fn without_qemu_img_disks_are_accounted_in_placeholders() {
    let s = spawn_sim_with(|c| c.use_qemu_img = false).await;
    assert_eq!(
        s.run_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", "372")])
            .await,
        "OK"
    );
    let p = s
        .dir
        .0
        .join("data/storage/shared/nfs-shared/images/372/vm-372-disk-0.qcow2");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(meta["backing"], "../104/base-104-disk-0.qcow2");
    assert_eq!(meta["size"], 2u64 << 30);
    s.h.shutdown().await;
}
