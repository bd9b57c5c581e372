//! `kill -9` of a worker process holding jobs: every job still ends exactly once.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::harness::{spawn_app_with, Backend};

fn spawn_worker(app: &crate::harness::TestApp) -> tokio::process::Child {
    app.labfleet_process("worker")
        .env("LABFLEET_WORKER__LEASE_SECS", "3")
        .env("LABFLEET_WORKER__CONCURRENCY__DIAG", "8")
        .env("LABFLEET_RETRY__INITIAL_DELAY_MS", "50")
        .spawn()
        .expect("start a worker process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_run_loses_and_doubles_nothing() {
    // The in-process worker takes no jobs: two worker processes do.
    let app = spawn_app_with(Backend::Real, |s| {
        s.worker.concurrency = labfleet_config::FamilyConcurrency {
            deploy: 0,
            vm: 0,
            power: 0,
            reset: 0,
            sync: 0,
            diag: 0,
        };
    })
    .await;
    let mut victim = spawn_worker(&app);
    let mut survivor = spawn_worker(&app);
    let parent = app
        .submit_noop(json!({"children": 100, "child": {"duration_ms": 300, "effect": true}}))
        .await;
    app.wait_job(parent, Duration::from_secs(60), |j| {
        j["progress"]["succeeded"].as_i64().unwrap_or(0) >= 10
    })
    .await;
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;

    let job = app
        .wait_status(parent, "succeeded", Duration::from_secs(90))
        .await;
    assert_eq!(job["progress"]["succeeded"], 100, "{:#}", job["progress"]);
    let children = job["children"].as_array().unwrap();
    assert!(
        children
            .iter()
            .any(|c| c["attempts"].as_i64().unwrap() >= 2),
        "some job held by the killed worker must have run again"
    );
    let row = app
        .store
        .db()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT COUNT(*) AS n, MAX(applications) AS most FROM noop_effects",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        100,
        "every effect applied"
    );
    assert_eq!(
        row.try_get::<i32>("", "most").unwrap(),
        1,
        "no effect applied twice"
    );
    survivor.start_kill().unwrap();
    let _ = survivor.wait().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_deploy_leaves_every_vm_exactly_once() {
    use crate::deploy::{class_body, Lab};
    // Deployments run only in the two worker processes (the in-process worker syncs the
    // inventory and nothing else); the simulator is slowed so the kill lands mid-deploy.
    let lab = Lab::start_with_sim(
        Backend::Real,
        |s| s.worker.concurrency.deploy = 0,
        |sim| sim.time_scale = 0.05,
    )
    .await;
    let mut victim = spawn_worker(&lab.app);
    let mut survivor = spawn_worker(&lab.app);
    let (class_id, job) = lab
        .create_class(class_body("Resilience 101", "linked_clone", 100))
        .await;
    lab.app
        .wait_job(job, Duration::from_secs(60), |j| {
            j["progress"]["succeeded"].as_i64().unwrap_or(0) >= 10
        })
        .await;
    victim.start_kill().expect("SIGKILL");
    let _ = victim.wait().await;

    let done = lab.wait_finished(job, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{:#}", done["progress"]);
    assert_eq!(done["progress"]["succeeded"], 100);
    let (_, children) = lab
        .app
        .call(
            reqwest::Method::GET,
            &format!("/api/jobs?parent={job}&limit=1000"),
            None,
        )
        .await;
    assert!(
        children["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["attempts"].as_i64().unwrap() >= 2),
        "some VM held by the killed worker must have been taken over"
    );
    // Every VM exactly once, on its own VMID, and nothing else: no orphan, no duplicate.
    lab.check_every_vm_once(class_id, 100).await;
    survivor.start_kill().unwrap();
    let _ = survivor.wait().await;
    lab.app.finish().await;
}
