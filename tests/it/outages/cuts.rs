//! Broker and database outages in the middle of a run, through a proxy only this test uses.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::json;

use super::proxy::Proxy;
use crate::harness::{spawn_app_with, Backend};

const RABBIT: &str = "127.0.0.1:5672";
const POSTGRES: &str = "127.0.0.1:5432";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_no_job_and_workers_reconnect() {
    let proxy = Proxy::start(RABBIT.parse::<SocketAddr>().unwrap()).await;
    let amqp = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let app = spawn_app_with(Backend::Real, |s| s.amqp_url = Some(amqp)).await;
    let before = app
        .submit_noop(json!({"children": 20, "child": {"duration_ms": 50}}))
        .await;
    app.wait_job(before, Duration::from_secs(30), |j| {
        j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0
    })
    .await;

    proxy.cut();
    // Work accepted while the broker is unreachable is stored and answered with 202.
    let during = app.submit_noop(json!({"duration_ms": 1})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.restore();

    let job = app
        .wait_status(before, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(job["progress"]["succeeded"], 20, "{job:#}");
    app.wait_status(during, "succeeded", Duration::from_secs(60))
        .await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fast_and_loses_no_job() {
    let proxy = Proxy::start(POSTGRES.parse::<SocketAddr>().unwrap()).await;
    let app = spawn_app_with(Backend::Real, |s| {
        let direct = s.database_url.clone().unwrap();
        s.database_url = Some(direct.replace("127.0.0.1:5432", &proxy.addr.to_string()));
    })
    .await;
    let id = app
        .submit_noop(json!({"children": 30, "child": {"duration_ms": 100}}))
        .await;
    app.wait_job(id, Duration::from_secs(30), |j| {
        j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0
    })
    .await;

    proxy.cut();
    let asked = Instant::now();
    let (status, body) = app
        .call(reqwest::Method::GET, &format!("/api/jobs/{id}"), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "503 took {:?}",
        asked.elapsed()
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();

    let job = app
        .wait_status(id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(job["progress"]["succeeded"], 30);
    app.finish().await;
}

/// The API's answer while the database is cut in the middle of a class deployment: 503 within a
/// second for reads and for new work, and the deployment finishes once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_during_a_deploy_answers_503_within_a_second() {
    use crate::deploy::{class_body, Lab};
    let proxy = Proxy::start(POSTGRES.parse::<SocketAddr>().unwrap()).await;
    let through = proxy.addr.to_string();
    // Proxmox-like latencies: 30 linked clones queue on one storage for about 8 s.
    let lab = Lab::start_with_sim(
        Backend::Real,
        |s| {
            let direct = s.database_url.clone().unwrap();
            s.database_url = Some(direct.replace("127.0.0.1:5432", &through));
        },
        |sim| sim.time_scale = 1.0,
    )
    .await;
    let (class_id, job) = lab.deploy_until_first_vms("Outage 101", 30, 2).await;

    proxy.cut();
    let requests = [
        (reqwest::Method::GET, format!("/api/jobs/{job}"), None),
        (
            reqwest::Method::GET,
            format!("/api/classes/{class_id}"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/classes".to_string(),
            Some(class_body("During the outage", "linked_clone", 1)),
        ),
    ];
    for (method, path, body) in requests {
        let asked = Instant::now();
        let (status, answer) = lab.app.call(method.clone(), &path, body).await;
        let took = asked.elapsed();
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "unavailable", "{answer}");
        assert!(
            took < Duration::from_secs(1),
            "{method} {path}: 503 took {took:?}"
        );
    }
    proxy.restore();

    let done = lab.wait_finished(job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{:#}", done["progress"]);
    lab.check_every_vm_once(class_id, 30).await;
    lab.app.finish().await;
}
