//! Real restarts of the shared RabbitMQ and PostgreSQL servers. They disturb every other test, so
//! they are ignored in the parallel suite and run alone afterwards:
//! `cargo test --test it restarts -- --ignored --test-threads=1` (`.ci/run` does this).

use std::time::Duration;

use serde_json::json;

use crate::harness::{spawn_app, Backend};

fn run(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
        .expect("a PostgreSQL cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ; run alone with --ignored"]
async fn a_real_broker_restart_loses_no_job() {
    let app = spawn_app(Backend::Real).await;
    let parent = app
        .submit_noop(json!({"children": 50, "child": {"duration_ms": 100}}))
        .await;
    app.wait_job(parent, Duration::from_secs(30), |j| {
        j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0
    })
    .await;
    run("rabbitmqctl", &["stop_app"]);
    let during = app.submit_noop(json!({})).await;
    run("rabbitmqctl", &["start_app"]);
    for id in [parent, during] {
        let job = app
            .wait_status(id, "succeeded", Duration::from_secs(90))
            .await;
        assert_eq!(job["progress"]["failed"], 0, "{job:#}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared PostgreSQL; run alone with --ignored"]
async fn a_real_database_restart_loses_no_job() {
    let app = spawn_app(Backend::Real).await;
    let parent = app
        .submit_noop(json!({"children": 50, "child": {"duration_ms": 100}}))
        .await;
    app.wait_job(parent, Duration::from_secs(30), |j| {
        j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0
    })
    .await;
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &postgres_version(),
            "main",
            "restart",
        ],
    );
    let job = app
        .wait_status(parent, "succeeded", Duration::from_secs(90))
        .await;
    assert_eq!(job["progress"]["succeeded"], 50, "{job:#}");
    // The API accepts work again.
    let after = app.submit_noop(json!({})).await;
    app.wait_status(after, "succeeded", Duration::from_secs(30))
        .await;
    app.finish().await;
}
