//! Real restarts of the shared RabbitMQ and PostgreSQL servers. They disturb every other test, so
//! they are ignored in the parallel suite and run alone afterwards:
//! `cargo test --workspace --test it restarts -- --ignored --test-threads=1` (`.ci/run` does
//! this).

use std::time::Duration;

use serde_json::{json, Value};

use crate::deploy::Lab;
use crate::harness::{eventually, spawn_app, Backend};

fn run(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

fn restart_postgres() {
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &postgres_version(),
            "main",
            "restart",
        ],
    );
}

fn restart_rabbitmq() {
    run("rabbitmqctl", &["stop_app"]);
    run("rabbitmqctl", &["start_app"]);
}

/// A 100-VM linked-clone deploy on the simulator at Proxmox-like latencies (about 26 s, the clones
/// queueing on one shared storage), `restart` run once the first VMs exist: the job succeeds,
/// every VM exists once with its own VMID, and nothing else was made.
async fn deploy_through(restart: fn()) {
    let lab = Lab::start_with_sim(Backend::Real, |_| {}, |sim| sim.time_scale = 1.0).await;
    let (class_id, job) = lab.deploy_until_first_vms("Restart 101", 100, 3).await;
    restart();
    // The API may answer 503 while its connections heal: poll until it answers.
    let done: Value = eventually(
        Duration::from_secs(180),
        "the deploy did not finish",
        || {
            let lab = &lab;
            async move {
                let (code, body) = lab
                    .app
                    .call(reqwest::Method::GET, &format!("/api/jobs/{job}"), None)
                    .await;
                let finished = matches!(
                    body["status"].as_str(),
                    Some("succeeded" | "failed" | "dead" | "cancelled")
                );
                if code == 200 && finished {
                    Ok(body)
                } else {
                    Err(format!("{code} {}", body["progress"]))
                }
            }
        },
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{:#}", done["progress"]);
    assert_eq!(done["progress"]["succeeded"], 100);
    lab.check_every_vm_once(class_id, 100).await;
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ; run alone with --ignored"]
async fn a_real_broker_restart_during_a_deploy_leaves_every_vm_once() {
    deploy_through(restart_rabbitmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared PostgreSQL; run alone with --ignored"]
async fn a_real_database_restart_during_a_deploy_leaves_every_vm_once() {
    deploy_through(restart_postgres).await;
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
    let job = app
        .wait_status(parent, "succeeded", Duration::from_secs(90))
        .await;
    assert_eq!(job["progress"]["succeeded"], 50, "{job:#}");
    app.wait_status(during, "succeeded", Duration::from_secs(90))
        .await;
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
    restart_postgres();
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
