use crate::common::*;

#[tokio::test]
async fn invalid_parameters_get_400_with_errors_per_name() {
    let s = spawn_sim().await;
    let r = s
        .api(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[
                ("newid", "200"),
                ("full", "true"),
                ("name", "bad_name"),
                ("bogus", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let e = &r.body["errors"];
    assert_eq!(e["full"], "type check ('boolean') failed - got 'true'");
    assert!(e["name"].as_str().unwrap().contains("DNS"));
    assert!(e["bogus"]
        .as_str()
        .unwrap()
        .contains("not defined in schema"));
    let r = s
        .api(
            "POST",
            "/nodes/pve1/qemu/105/snapshot",
            &[("snapname", "1st")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["errors"]["snapname"]
        .as_str()
        .unwrap()
        .contains("invalid configuration ID"));
    s.h.shutdown().await;
}

#[tokio::test]
async fn json_bodies_may_use_true_and_false() {
    let s = spawn_sim().await;
    let r = raw(
        &s.addr,
        "POST",
        "/api2/json/nodes/pve1/qemu/104/clone",
        &[s.token()],
        Some((
            "application/json",
            serde_json::to_vec(&serde_json::json!({"newid": 300, "full": false})).unwrap(),
        )),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.wait_task(r.data().as_str().unwrap()).await.0, "OK");
    s.h.shutdown().await;
}

#[tokio::test]
async fn task_log_pages_and_reports_the_total() {
    let s = spawn_sim().await;
    let upid = s
        .start_task(
            "POST",
            "/nodes/pve1/qemu/104/clone",
            &[("newid", "150"), ("full", "1")],
        )
        .await;
    let (exit, all) = s.wait_task(&upid).await;
    assert_eq!(exit, "OK");
    let path = format!("/nodes/pve1/tasks/{}/log", upid.replace(':', "%3A"));
    let r = s.api("GET", &path, &[("start", "1"), ("limit", "2")]).await;
    assert_eq!(r.body["total"], serde_json::json!(all.len()));
    let page = r.data().as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["n"], 2);
    assert_eq!(page[0]["t"], all[1].as_str());
    let wrong_node = s.api("GET", &path.replacen("pve1", "pve2", 1), &[]).await;
    assert_eq!(wrong_node.status, 400);
    s.h.shutdown().await;
}

#[tokio::test]
async fn unknown_upid_is_no_such_task() {
    let s = spawn_sim().await;
    let upid = "UPID:pve1:00001234:01234567:66DC5987:qmclone:104:root@pam:";
    let r = s
        .api("GET", &format!("/nodes/pve1/tasks/{upid}/status"), &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"]["upid"], "no such task");
    s.h.shutdown().await;
}

#[tokio::test]
async fn nextid_reserves_nothing_and_checks_a_given_id() {
    let s = spawn_sim().await;
    let a = s.api("GET", "/cluster/nextid", &[]).await;
    let b = s.api("GET", "/cluster/nextid", &[]).await;
    assert_eq!(a.data(), b.data());
    assert_eq!(a.data(), "100");
    let r = s.api("GET", "/cluster/nextid", &[("vmid", "104")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"]["vmid"], "VM 104 already exists");
    // two callers racing on the same id: the second clone is refused
    let id = a.data().as_str().unwrap().to_string();
    let first = s
        .start_task("POST", "/nodes/pve1/qemu/104/clone", &[("newid", &id)])
        .await;
    let second = s
        .api("POST", "/nodes/pve1/qemu/104/clone", &[("newid", &id)])
        .await;
    let first_exit = s.wait_task(&first).await.0;
    assert_eq!(first_exit, "OK");
    if second.status == 200 {
        let (exit, _) = s.wait_task(second.data().as_str().unwrap()).await;
        assert!(
            exit.contains(&format!(
                "unable to create VM {id}: config file already exists"
            )) || exit.contains("got timeout"),
            "{exit}"
        );
    } else {
        assert_eq!(second.status, 500);
        assert_eq!(
            second.reason,
            format!("unable to create VM {id}: config file already exists")
        );
    }
    s.h.shutdown().await;
}
