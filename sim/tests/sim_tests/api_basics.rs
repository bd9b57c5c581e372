use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn version_and_nodes_answer_with_the_data_envelope() {
    let s = spawn_sim().await;
    let r = s.api("GET", "/version", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["release"], "8.4");
    let r = s.api("GET", "/nodes", &[]).await;
    let nodes: Vec<_> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes, vec!["pve1", "pve2", "pve3"]);
    let r = s.api("GET", "/cluster/status", &[]).await;
    let ips: Vec<_> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["ip"].as_str())
        .collect();
    assert_eq!(ips, vec!["127.0.0.11", "127.0.0.12", "127.0.0.13"]);
    s.h.shutdown().await;
}

#[tokio::test]
async fn seeded_templates_exist_with_disk_and_nic() {
    let s = spawn_sim().await;
    let c = s.config("pve1", 104).await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(c.data()["template"], json!(1));
    assert!(c.data()["scsi0"]
        .as_str()
        .unwrap()
        .starts_with("nfs-shared:104/base-104-disk-0.qcow2"));
    assert!(c.data()["ide2"]
        .as_str()
        .unwrap()
        .starts_with("nfs-shared:104/vm-104-cloudinit.qcow2"));
    assert!(c.data()["net0"].as_str().unwrap().starts_with("virtio="));
    assert_eq!(c.data()["cores"], json!(2));
    let c = s.config("pve1", 105).await;
    assert!(c.data()["scsi0"]
        .as_str()
        .unwrap()
        .starts_with("local-lvm:base-105-disk-0"));
    let isos = s
        .api(
            "GET",
            "/nodes/pve2/storage/nfs-shared/content",
            &[("content", "iso")],
        )
        .await;
    assert!(isos.data().as_array().unwrap().len() >= 2, "{isos:?}");
    let missing = s.config("pve2", 104).await;
    assert_eq!(missing.status, 500);
    assert_eq!(
        missing.reason,
        "Configuration file 'nodes/pve2/qemu-server/104.conf' does not exist"
    );
    assert_eq!(missing.body["message"], missing.reason);
    s.h.shutdown().await;
}
