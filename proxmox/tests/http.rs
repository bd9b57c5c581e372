//! HTTP behaviour against local fakes: error text (JSON `message`, reason phrase, `errors`),
//! ticket + CSRF, renewal and re-login, wrong secrets, TLS trust modes, task waiting.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use labfleet_proxmox::*;
use serde_json::json;
use support::{raw_response, self_signed_acceptor, FakePve, RawServer};

fn token_client(url: &str) -> ProxmoxClient {
    ProxmoxClient::new(ClientConfig::new(
        url,
        Credentials::token("root@pam!labfleet", "0b4c7e5e-secret"),
    ))
    .unwrap()
}

#[tokio::test]
async fn a_reason_phrase_is_the_message_when_the_body_has_none() {
    let srv = RawServer::start(
        raw_response(
            "500 can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout",
            r#"{"data":null}"#,
        ),
        None,
    )
    .await;
    let c = token_client(&format!("http://{}", srv.addr));
    let err = c.qemu_status("pve1", 203).await.unwrap_err();
    match &err {
        ProxmoxError::Api {
            status,
            message,
            ctx,
            ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(
                message,
                "can't lock file '/var/lock/qemu-server/lock-203.conf' - got timeout"
            );
            assert_eq!(ctx.vmid, Some(203));
            assert_eq!(ctx.node.as_deref(), Some("pve1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn the_json_message_wins_over_the_reason_phrase() {
    let srv = RawServer::start(
        raw_response(
            "500 Internal Server Error",
            r#"{"data":null,"message":"VM 100 not running\n"}"#,
        ),
        None,
    )
    .await;
    let c = token_client(&format!("http://{}", srv.addr));
    let err = c.qemu_reboot("pve1", 100, None).await.unwrap_err();
    assert_eq!(err.pve_message(), Some("VM 100 not running"));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn parameter_errors_are_kept_and_permanent() {
    let srv = RawServer::start(
        raw_response(
            "400 Parameter verification failed.",
            r#"{"data":null,"errors":{"vmid":"VM 218 already exists"}}"#,
        ),
        None,
    )
    .await;
    let c = token_client(&format!("http://{}", srv.addr));
    let err = c.next_id(Some(218)).await.unwrap_err();
    assert!(err.is_already_exists());
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("Parameter verification failed."), "{text}");
    assert!(text.contains("vmid: VM 218 already exists"), "{text}");
}

#[tokio::test]
async fn unavailable_and_refused_are_transient() {
    let srv = RawServer::start(raw_response("503 Service Unavailable", "{}"), None).await;
    let err = token_client(&format!("http://{}", srv.addr))
        .version()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_transient());

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = token_client(&format!("http://{closed}"))
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, ProxmoxError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn ticket_auth_sends_the_cookie_always_and_csrf_only_on_writes() {
    let fake = FakePve::start(None).await;
    let c = ProxmoxClient::new(ClientConfig::new(
        &fake.url,
        Credentials::password("root@pam", "pw"),
    ))
    .unwrap();
    c.version().await.unwrap();
    c.qemu_start("pve1", 100, &StartParams::default())
        .await
        .unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    let login = &reqs[0];
    assert_eq!(login.path, "/access/ticket");
    assert_eq!(login.method, "POST");
    assert!(login
        .params
        .contains(&("username".into(), "root@pam".into())));
    assert!(login.header("csrfpreventiontoken").is_none());
    let cookie = format!(
        "PVEAuthCookie={}",
        support::percent_decode(&reqs[1].header("cookie").unwrap()["PVEAuthCookie=".len()..])
    );
    assert_eq!(cookie, format!("PVEAuthCookie={}", support::TICKET));
    assert!(
        reqs[1].header("csrfpreventiontoken").is_none(),
        "GET must not carry CSRF"
    );
    assert_eq!(
        reqs[2].header("csrfpreventiontoken").as_deref(),
        Some(support::CSRF)
    );
    assert!(reqs[2].header("cookie").is_some());
    assert!(reqs.iter().all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn token_auth_sends_the_token_header_and_no_csrf() {
    let fake = FakePve::start(None).await;
    let c = token_client(&fake.url);
    c.qemu_start("pve1", 100, &StartParams::default())
        .await
        .unwrap();
    let r = &fake.requests()[0];
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("PVEAPIToken=root@pam!labfleet=0b4c7e5e-secret")
    );
    assert!(r.header("csrfpreventiontoken").is_none());
    assert!(r.header("cookie").is_none());
}

fn count(fake: &FakePve, path: &str) -> usize {
    fake.requests().iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn an_old_ticket_is_renewed_before_use() {
    let fake = FakePve::start(None).await;
    let mut cfg = ClientConfig::new(&fake.url, Credentials::password("root@pam", "pw"));
    let fresh = ProxmoxClient::new(cfg.clone()).unwrap();
    for _ in 0..3 {
        fresh.version().await.unwrap();
    }
    assert_eq!(
        count(&fake, "/access/ticket"),
        1,
        "a fresh ticket is reused"
    );
    cfg.ticket_renew_after = Duration::ZERO;
    let aging = ProxmoxClient::new(cfg).unwrap();
    for _ in 0..3 {
        aging.version().await.unwrap();
    }
    assert_eq!(
        count(&fake, "/access/ticket"),
        4,
        "an old ticket is renewed each time"
    );
}

#[tokio::test]
async fn a_refused_ticket_is_renewed_once_and_the_call_retried() {
    let refusals = Arc::new(AtomicUsize::new(0));
    let r2 = refusals.clone();
    let fake = FakePve::start(Some(Arc::new(move |r: &support::Recorded| {
        (r.path == "/version" && r2.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| (401, json!({"data": null})))
    })))
    .await;
    let c = ProxmoxClient::new(ClientConfig::new(
        &fake.url,
        Credentials::password("root@pam", "pw"),
    ))
    .unwrap();
    c.version().await.unwrap();
    assert_eq!(count(&fake, "/access/ticket"), 2);
    assert_eq!(count(&fake, "/version"), 2);
}

#[tokio::test]
async fn a_wrong_secret_gives_a_clear_error_without_the_secret() {
    let fake = FakePve::start(Some(Arc::new(|_: &support::Recorded| {
        Some((
            401,
            json!({"data": null, "message": "authentication failure"}),
        ))
    })))
    .await;
    let secret = "wrong-secret-5f1d";
    for creds in [
        Credentials::token("root@pam!labfleet", secret),
        Credentials::password("root@pam", secret),
    ] {
        let c = ProxmoxClient::new(ClientConfig::new(&fake.url, creds)).unwrap();
        let err = c.version().await.unwrap_err();
        assert!(matches!(err, ProxmoxError::AuthFailed { .. }), "{err:?}");
        assert!(!err.is_transient());
        let shown = format!("{err} {err:?} {c:?}");
        assert!(shown.contains("authentication"), "{shown}");
        assert!(shown.contains("root@pam"), "{shown}");
        assert!(!shown.contains(secret), "secret leaked: {shown}");
    }
    // Password: one login attempt, no loop; token: one request.
    assert_eq!(count(&fake, "/access/ticket"), 1);
    assert_eq!(count(&fake, "/version"), 1);
}

async fn tls_server() -> (RawServer, String, Fingerprint) {
    let (acceptor, der) = self_signed_acceptor();
    let srv = RawServer::start(
        raw_response(
            "200 OK",
            r#"{"data":{"version":"8.4.1","release":"8.4","repoid":"abc"}}"#,
        ),
        Some(acceptor),
    )
    .await;
    let url = format!("https://{}", srv.addr);
    (srv, url, Fingerprint::of_der(&der))
}

#[tokio::test]
async fn verify_ssl_rejects_a_self_signed_certificate_with_a_clear_hint() {
    let (_srv, url, _) = tls_server().await;
    let c = ProxmoxClient::new(ClientConfig::new(
        &url,
        Credentials::token("root@pam!t", "s"),
    ))
    .unwrap();
    let err = c.version().await.unwrap_err();
    assert!(matches!(err, ProxmoxError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("TLS certificate problem"), "{text}");
    assert!(text.contains("verify_ssl=false"), "{text}");
    assert!(text.contains("tls_fingerprint"), "{text}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn verify_ssl_off_accepts_a_self_signed_certificate() {
    let (_srv, url, _) = tls_server().await;
    let c = ProxmoxClient::new(
        ClientConfig::new(&url, Credentials::token("root@pam!t", "s")).verify_ssl(false),
    )
    .unwrap();
    assert_eq!(c.version().await.unwrap().version, "8.4.1");
}

#[tokio::test]
async fn a_pinned_fingerprint_is_trusted_and_a_wrong_one_refused() {
    let (_srv, url, fp) = tls_server().await;
    let pinned = ProxmoxClient::new(
        ClientConfig::new(&url, Credentials::token("root@pam!t", "s"))
            .tls_fingerprint(fp.to_string().replace(':', "").to_lowercase()),
    )
    .unwrap();
    assert_eq!(pinned.version().await.unwrap().release, "8.4");

    let wrong = ProxmoxClient::new(
        ClientConfig::new(&url, Credentials::token("root@pam!t", "s"))
            .verify_ssl(false)
            .tls_fingerprint("00:".repeat(31) + "00"),
    )
    .unwrap();
    let err = wrong.version().await.unwrap_err();
    assert!(matches!(err, ProxmoxError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("fingerprint mismatch"), "{err}");
    assert!(
        err.to_string().contains(&fp.to_string()),
        "shows the actual fingerprint: {err}"
    );
}

#[tokio::test]
async fn wait_task_polls_the_upid_node_until_the_task_fails() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p2 = polls.clone();
    let fake = FakePve::start(Some(Arc::new(move |r: &support::Recorded| {
        if !r.path.ends_with("/status") {
            return None;
        }
        let running = p2.fetch_add(1, Ordering::SeqCst) < 2;
        Some((200, if running {
            json!({"data": {"status": "running"}})
        } else {
            json!({"data": {"status": "stopped", "exitstatus":
                "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"}})
        }))
    })))
    .await;
    let c = token_client(&fake.url);
    let upid = Upid::parse("UPID:pve2:00001234:00005678:66DC5987:qmclone:9000:root@pam!labfleet:")
        .unwrap();
    let err = c
        .wait_task(&upid, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxmoxError::TaskFailed { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("pve-storage-local-lvm"));
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.path == format!("/nodes/pve2/tasks/{upid}/status")));
}

#[tokio::test]
async fn wait_task_gives_up_after_its_timeout() {
    let fake = FakePve::start(Some(Arc::new(|_: &support::Recorded| {
        Some((200, json!({"data": {"status": "running"}})))
    })))
    .await;
    let c = token_client(&fake.url);
    let upid = Upid::parse(&support::upid_for("pve1")).unwrap();
    let err = c
        .wait_task(&upid, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxmoxError::TaskTimeout { .. }), "{err:?}");
    assert!(fake.requests().len() >= 2, "polled more than once");
}
