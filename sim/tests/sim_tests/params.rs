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
