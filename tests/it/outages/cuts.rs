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

    for id in [before, during] {
        let job = app
            .wait_status(id, "succeeded", Duration::from_secs(60))
            .await;
        assert!(job["progress"]["failed"] == 0, "{job:#}");
    }
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
