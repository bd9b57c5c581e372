use crate::common::*;

async fn login(s: &TestSim, password: &str) -> Resp {
    raw(
        &s.addr,
        "POST",
        "/api2/json/access/ticket",
        &[],
        Some((
            "application/x-www-form-urlencoded",
            form(&[("username", "root@pam"), ("password", password)]),
        )),
    )
    .await
}

#[tokio::test]
async fn ticket_without_csrf_token_is_refused_on_post() {
    let s = spawn_sim().await;
    let r = login(&s, &s.h.root_password).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ticket = r.data()["ticket"].as_str().unwrap().to_string();
    let csrf = r.data()["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ticket.starts_with("PVE:root@pam:"));
    let cookie = ("cookie", format!("PVEAuthCookie={ticket}"));
    // GET needs no CSRF token
    let g = raw(
        &s.addr,
        "GET",
        "/api2/json/version",
        std::slice::from_ref(&cookie),
        None,
    )
    .await;
    assert_eq!(g.status, 200);
    let body = Some((
        "application/x-www-form-urlencoded",
        form(&[("snapname", "s1")]),
    ));
    let p = raw(
        &s.addr,
        "POST",
        "/api2/json/nodes/pve1/qemu/105/snapshot",
        std::slice::from_ref(&cookie),
        body.clone(),
    )
    .await;
    assert_eq!(p.status, 401, "{p:?}");
    assert_eq!(p.reason, "Permission denied - invalid csrf token");
    let p = raw(
        &s.addr,
        "POST",
        "/api2/json/nodes/pve1/qemu/105/snapshot",
        &[cookie, ("csrfpreventiontoken", csrf)],
        body,
    )
    .await;
    // reaches the handler: templates cannot be snapshotted, which the task reports
    assert_eq!(p.status, 200, "{p:?}");
    s.h.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_get_401() {
    let s = spawn_sim().await;
    assert_eq!(login(&s, "wrong").await.status, 401);
    let r = raw(&s.addr, "GET", "/api2/json/nodes", &[], None).await;
    assert_eq!(r.status, 401);
    let bad = (
        "authorization",
        "PVEAPIToken=root@pam!labfleet=nope".to_string(),
    );
    assert_eq!(
        raw(&s.addr, "GET", "/api2/json/nodes", &[bad], None)
            .await
            .status,
        401
    );
    let forged = (
        "cookie",
        "PVEAuthCookie=PVE:root@pam:66DC5987::forged".to_string(),
    );
    assert_eq!(
        raw(&s.addr, "GET", "/api2/json/nodes", &[forged], None)
            .await
            .status,
        401
    );
    s.h.shutdown().await;
}

#[tokio::test]
async fn a_ticket_renews_with_itself_as_password_and_tokens_cannot_log_in() {
    let s = spawn_sim().await;
    let t = login(&s, &s.h.root_password).await.data()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let r = login(&s, &t).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.data()["ticket"], serde_json::Value::Null);
    assert_eq!(login(&s, &s.h.token_secret).await.status, 401);
    s.h.shutdown().await;
}

#[tokio::test]
async fn secrets_survive_a_restart() {
    let s = spawn_sim().await;
    let (pw, tok) = (s.h.root_password.clone(), s.h.token_secret.clone());
    let data = s.dir.0.join("data");
    s.h.shutdown().await;
    let h = labfleet_sim::start(labfleet_sim::SimConfig::for_tests(data))
        .await
        .unwrap();
    assert_eq!(h.root_password, pw);
    assert_eq!(h.token_secret, tok);
    h.shutdown().await;
    drop(s.dir);
}

#[tokio::test]
async fn expired_tickets_are_refused() {
    let s = spawn_sim_with(|c| c.ticket_lifetime = std::time::Duration::ZERO).await;
    let r = login(&s, &s.h.root_password).await;
    assert_eq!(r.status, 200);
    let ticket = r.data()["ticket"].as_str().unwrap().to_string();
    let g = raw(
        &s.addr,
        "GET",
        "/api2/json/version",
        &[("cookie", format!("PVEAuthCookie={ticket}"))],
        None,
    )
    .await;
    assert_eq!(g.status, 401, "{g:?}");
    s.h.shutdown().await;
}
