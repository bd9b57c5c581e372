//! The scheduler: one leader among replicas (a dead one replaced, a stopped one handing over at
//! once), each tick's effects once, the periodic inventory sync with its toggles and unreachable
//! clusters, idle auto-shutdown (only idle, managed, unflagged VMs of clusters that want it,
//! history kept across a restart) and reconciliation (missing VMs, orphans, foreign VMs).

use std::time::{Duration, Instant};

use labfleet_proxmox::CloneParams;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::deploy::{class_body, Lab};
use crate::harness::{eventually, Backend, TestApp};

async fn scalar_rows(app: &TestApp, sql: &str) -> Vec<sea_orm::QueryResult> {
    let db = app.store.db();
    db.query_all(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
}

async fn status(app: &TestApp) -> Value {
    let (code, body) = app.call(Method::GET, "/api/scheduler", None).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn tick<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tick {name}: {status}"))
}

async fn wait_for_leader(app: &TestApp, not: Option<&str>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let s = status(app).await;
        if let Some(l) = s["leader"].as_str() {
            if Some(l) != not {
                return l.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no new leader in time: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the scheduler has made at least `n` sync jobs.
async fn wait_for_syncs(app: &TestApp, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let made = scheduled_syncs(app).await.len();
        if made >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {made} of {n} scheduled syncs in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often the named tick has run, by its record.
async fn runs(app: &TestApp, name: &str) -> i64 {
    tick(&status(app).await, name)["runs"].as_i64().unwrap_or(0)
}

/// Waits until the named tick's record shows at least `more` runs after `since`; returns the
/// count. A run that began before `since` may be among them, so callers that need a run started
/// after some change ask for one more.
async fn await_runs(app: &TestApp, name: &str, since: i64, more: i64, within: Duration) -> i64 {
    eventually(
        within,
        &format!("{name} did not run {more} more times"),
        || async move {
            let n = runs(app, name).await;
            if n >= since + more {
                Ok(n)
            } else {
                Err(format!("{n} runs"))
            }
        },
    )
    .await
}

/// A replica running in a task, stoppable cleanly or killed.
struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn replica(app: &TestApp, holder: &str) -> Replica {
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        app.scheduler(holder)
            .run_until_stopped(stop.clone().cancelled_owned()),
    );
    Replica { stop, task }
}

/// The sync jobs the scheduler made, oldest first, with their creation times.
async fn scheduled_syncs(app: &TestApp) -> Vec<chrono::DateTime<chrono::Utc>> {
    scalar_rows(
        app,
        "SELECT created_at FROM jobs WHERE kind = 'sync_cluster' AND created_by = 'scheduler' \
         ORDER BY created_at",
    )
    .await
    .into_iter()
    .map(|r| r.try_get("", "created_at").unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_each_tick_once_and_a_dead_leader_is_replaced() {
    let lab = Lab::start(Backend::Real, |s| {
        s.scheduler.inventory_sync_interval_ms = 800;
    })
    .await;
    let app = &lab.app;
    // Three replicas of our own (the system's scheduler steps aside).
    app.stop_own_scheduler();
    let mut replicas: Vec<(&str, Replica)> = ["a", "b", "c"]
        .into_iter()
        .map(|h| (h, replica(app, h)))
        .collect();
    wait_for_syncs(app, 5, Duration::from_secs(10)).await;
    let s = status(app).await;
    let syncs = scheduled_syncs(app).await;
    assert!(syncs.len() >= 4, "the tick ran too rarely: {syncs:?}");
    for pair in syncs.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 700, "two runs of one tick {gap} ms apart: {syncs:?}");
    }
    // A run makes at most one job (none when the previous sync still runs); one more run may
    // have started since the status was read.
    let runs = tick(&s, "inventory_sync")["runs"].as_i64().unwrap() as usize;
    assert!(
        syncs.len() <= runs + 1,
        "{runs} runs, {} jobs: {s}",
        syncs.len()
    );

    // Kill the leader without letting it release: another replica takes over within a lease.
    let leader = wait_for_leader(app, None, Duration::from_secs(2)).await;
    let killed = Instant::now();
    let at = replicas.iter().position(|(h, _)| *h == leader).unwrap();
    let (_, dead) = replicas.remove(at);
    dead.task.abort();
    let next = wait_for_leader(app, Some(&leader), Duration::from_secs(5)).await;
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "takeover took {:?}",
        killed.elapsed()
    );
    let before = scheduled_syncs(app).await.len();
    wait_for_syncs(app, before + 1, Duration::from_secs(5)).await;
    assert!(
        scheduled_syncs(app).await.len() > before,
        "the new leader {next} does not run the ticks"
    );

    // A clean stop hands over at once (the lease is released, not left to expire).
    let at = replicas.iter().position(|(h, _)| *h == next).unwrap();
    let (_, stopping) = replicas.remove(at);
    let stopped = Instant::now();
    stopping.stop.cancel();
    let _ = stopping.task.await;
    let third = wait_for_leader(app, Some(&next), Duration::from_secs(3)).await;
    assert!(
        stopped.elapsed() < Duration::from_millis(1_000),
        "{third} took {:?}",
        stopped.elapsed()
    );
    for (_, r) in replicas {
        r.stop.cancel();
        let _ = r.task.await;
    }
    let gaps = scheduled_syncs(app).await;
    for pair in gaps.windows(2) {
        assert!((pair[1] - pair[0]).num_milliseconds() >= 700, "{gaps:?}");
    }
    lab.app.finish().await;
}

fn spawn_scheduler_process(app: &TestApp) -> tokio::process::Child {
    app.labfleet_process("scheduler")
        .env("LABFLEET_SCHEDULER__LEASE_MS", "1500")
        .env("LABFLEET_SCHEDULER__INVENTORY_SYNC_INTERVAL_MS", "800")
        .env("LABFLEET_SCHEDULER__IDLE_SWEEP_INTERVAL_MS", "0")
        .env("LABFLEET_SCHEDULER__RECONCILE_INTERVAL_MS", "0")
        .spawn()
        .expect("start a scheduler process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_run_each_tick_once_and_survive_a_kill() {
    let lab = Lab::start(Backend::Real, |_| {}).await;
    let app = &lab.app;
    app.stop_own_scheduler();
    let mut first = spawn_scheduler_process(app);
    let mut second = spawn_scheduler_process(app);
    wait_for_syncs(app, 5, Duration::from_secs(15)).await;
    let syncs = scheduled_syncs(app).await;
    assert!(syncs.len() >= 4, "the tick ran too rarely: {syncs:?}");
    // The leader's name carries its process id: kill -9 that process.
    let leader = wait_for_leader(app, None, Duration::from_secs(2)).await;
    let pid_of = |c: &tokio::process::Child| format!("-{}-", c.id().unwrap());
    let (victim, survivor) = if leader.contains(&pid_of(&first)) {
        (&mut first, &mut second)
    } else {
        assert!(
            leader.contains(&pid_of(&second)),
            "leader {leader} is neither process"
        );
        (&mut second, &mut first)
    };
    victim.start_kill().unwrap();
    let _ = victim.wait().await;
    let killed = Instant::now();
    let next = wait_for_leader(app, Some(&leader), Duration::from_secs(5)).await;
    assert!(next.contains(&pid_of(survivor)), "{next}");
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "takeover took {:?}",
        killed.elapsed()
    );
    let before = scheduled_syncs(app).await.len();
    wait_for_syncs(app, before + 1, Duration::from_secs(5)).await;
    let syncs = scheduled_syncs(app).await;
    assert!(syncs.len() > before, "the survivor does not run the ticks");
    for pair in syncs.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 700, "two runs of one tick {gap} ms apart: {syncs:?}");
    }
    survivor.start_kill().unwrap();
    let _ = survivor.wait().await;
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_follows_the_toggles_and_skips_an_unreachable_cluster() {
    let lab = Lab::start(Backend::Embedded, |s| {
        s.scheduler.inventory_sync_interval_ms = 500;
    })
    .await;
    let app = &lab.app;
    // A template removed on the cluster is marked gone by a periodic sync.
    lab.remove_template_behind_our_back("pve1", 105).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = app
            .call(Method::GET, "/api/templates?include_gone=true", None)
            .await;
        let t105 = body["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["vmid"] == 105)
            .cloned()
            .unwrap();
        if t105["gone"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "105 not marked gone: {t105}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second cluster that does not answer is skipped with its reason.
    let (code, body) = app
        .call(
            Method::POST,
            "/api/cluster-config",
            Some(json!({
                "cluster_id": "dark", "name": "Unplugged", "host": "127.0.0.1", "port": 9,
                "user": "root@pam", "token_id": "root@pam!x", "token_secret": "s", "verify_ssl": false,
            })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(app).await;
        let t = tick(&s, "inventory_sync");
        if t["last_note"]
            .as_str()
            .is_some_and(|n| n.contains("dark: unreachable"))
        {
            assert!(t["last_error"].is_null(), "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "no skip recorded: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Toggles off: the cluster gets no more syncs.
    for db_id in [
        lab.cluster_db_id,
        body["cluster"]["db_id"].as_i64().unwrap(),
    ] {
        let (code, resp) = app
            .call(
                Method::PUT,
                &format!("/api/cluster-config/{db_id}"),
                Some(json!({"allow_template_sync": false, "allow_iso_sync": false})),
            )
            .await;
        assert_eq!(code, 200, "{resp}");
    }
    // Proven on the tick's record: two runs that began after the change, then two more, and
    // not one of them made a sync job.
    let toggled = runs(app, "inventory_sync").await;
    let settled = await_runs(app, "inventory_sync", toggled, 2, Duration::from_secs(10)).await;
    let before = scheduled_syncs(app).await.len();
    await_runs(app, "inventory_sync", settled, 2, Duration::from_secs(10)).await;
    assert_eq!(scheduled_syncs(app).await.len(), before);
    lab.app.finish().await;
}

/// Status of every QEMU guest: vmid → running.
async fn running(lab: &Lab) -> std::collections::BTreeMap<i64, bool> {
    lab.qemu_resources()
        .await
        .into_iter()
        .map(|r| {
            (
                i64::from(r.vmid.unwrap()),
                r.status.as_deref() == Some("running"),
            )
        })
        .collect()
}

async fn set_cluster(lab: &Lab, body: Value) -> Value {
    let (code, resp) = lab
        .app
        .call(
            Method::PUT,
            &format!("/api/cluster-config/{}", lab.cluster_db_id),
            Some(body),
        )
        .await;
    assert_eq!(code, 200, "{resp}");
    resp
}

/// Deploys a started class; returns its VMs (id, vmid).
async fn started_class(lab: &Lab, name: &str, count: usize) -> Vec<(i64, i64)> {
    let mut body = class_body(name, "linked_clone", count as u32);
    body["start"] = json!(true);
    let (class_id, job) = lab.create_class(body).await;
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    lab.class(class_id).await["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), v["vmid"].as_i64().unwrap()))
        .collect()
}

/// Waits until a sweep has recorded the class VM `id` idle.
async fn idle_since(app: &TestApp, id: i64, within: Duration) {
    eventually(within, "no idle history recorded", || async move {
        let rows = scalar_rows(
            app,
            &format!("SELECT idle_since FROM vm_activity WHERE class_vm_id = {id}"),
        )
        .await;
        let since: Option<chrono::DateTime<chrono::Utc>> =
            rows.first().and_then(|r| r.try_get("", "idle_since").ok());
        since.map(|_| ()).ok_or_else(|| "no idle_since".to_string())
    })
    .await
}

async fn wait_stopped(lab: &Lab, vmid: i64, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if running(lab).await.get(&vmid) == Some(&false) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "VM {vmid} still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn idle_shutdown_touches_only_idle_managed_vms(backend: Backend) {
    let lab = Lab::start(backend, |s| {
        s.scheduler.idle_sweep_interval_ms = 300;
        s.scheduler.idle_window_secs = 3;
        s.power.shutdown_timeout_secs = 2;
    })
    .await;
    let vms = started_class(&lab, "Idle lab", 3).await;
    let (idle, busy, flagged) = (vms[0], vms[1], vms[2]);
    let db = lab.app.store.db();
    db.execute(Statement::from_string(
        db.get_database_backend(),
        format!(
            "UPDATE class_vms SET keep_running = true WHERE id = {}",
            flagged.0
        ),
    ))
    .await
    .unwrap();
    // A VM labfleet does not manage, running and idle, in our VMID range.
    lab.foreign_vm(19_990, "someone-elses", "pve2").await;
    let upid = lab
        .api
        .client
        .qemu_start("pve2", 19_990, &Default::default())
        .await
        .unwrap();
    lab.api.wait(upid).await;
    // 8%: busy by the default threshold (5%), idle by this cluster's own (10%).
    for vmid in [idle.1, busy.1, flagged.1, 19_990] {
        lab.api.set_cpu(vmid, 0.08).await;
    }

    // Auto-shutdown off: nothing happens however long they idle. Twelve sweeps of 300 ms
    // outlast the 3 s window.
    let off = runs(&lab.app, "idle_sweep").await;
    await_runs(&lab.app, "idle_sweep", off, 12, Duration::from_secs(15)).await;
    let now = running(&lab).await;
    for vmid in [idle.1, busy.1, flagged.1, 19_990] {
        assert!(now[&vmid], "VM {vmid} stopped while auto-shutdown was off");
    }

    let resp = set_cluster(
        &lab,
        json!({ "auto_shutdown_enabled": true, "idle_cpu_percent": 10 }),
    )
    .await;
    assert_eq!(resp["cluster"]["idle_cpu_percent"], 10.0, "{resp}");
    let enabled = Instant::now();
    // The busy one becomes busy inside its window, once a sweep has recorded it idle.
    idle_since(&lab.app, busy.0, Duration::from_secs(5)).await;
    lab.api.set_cpu(busy.1, 0.6).await;
    wait_stopped(&lab, idle.1, Duration::from_secs(15)).await;
    assert!(
        enabled.elapsed() >= Duration::from_secs(3),
        "shut down before its window"
    );
    // Two sweeps that began after the shutdown, when the others had idled past the window too.
    let after = runs(&lab.app, "idle_sweep").await;
    await_runs(&lab.app, "idle_sweep", after, 3, Duration::from_secs(10)).await;
    let now = running(&lab).await;
    assert!(now[&busy.1], "a busy VM was shut down");
    assert!(now[&flagged.1], "a keep-running VM was shut down");
    assert!(now[&19_990], "an unmanaged VM was shut down");

    let (_, audit) = lab
        .app
        .call(Method::GET, "/api/audit?action=vm.auto_shutdown", None)
        .await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit:#}");
    assert_eq!(events[0]["target"], format!("vm:{}", idle.0));
    assert!(events[0]["detail"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("idle: CPU under 10%"));
    let jobs = scalar_rows(&lab.app, "SELECT status FROM jobs WHERE kind = 'vm_power'").await;
    assert_eq!(jobs.len(), 1);
    let s = status(&lab.app).await;
    assert!(tick(&s, "idle_sweep")["runs"].as_i64().unwrap() > 5, "{s}");
    lab.app.finish().await;
}

crate::both_backends!(idle_shutdown, idle_shutdown_touches_only_idle_managed_vms);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_restart_in_the_middle_of_an_idle_window_loses_no_history() {
    let lab = Lab::start(Backend::Embedded, |s| {
        s.scheduler.idle_sweep_interval_ms = 300;
        s.scheduler.idle_window_secs = 5;
        s.power.shutdown_timeout_secs = 2;
    })
    .await;
    set_cluster(&lab, json!({ "auto_shutdown_enabled": true })).await;
    let vms = started_class(&lab, "Restart lab", 1).await;
    let (id, vmid) = vms[0];
    lab.api.set_cpu(vmid, 0.0).await;
    // Wait until the idle stretch is recorded, and a few sweeps (about a second) beyond.
    idle_since(&lab.app, id, Duration::from_secs(5)).await;
    let idle_seen = Instant::now();
    let seen = runs(&lab.app, "idle_sweep").await;
    await_runs(&lab.app, "idle_sweep", seen, 3, Duration::from_secs(5)).await;
    lab.app.stop_own_scheduler();
    // Down until its lease is released and a second has passed since its last sweep began.
    eventually(
        Duration::from_secs(5),
        "the stopped scheduler kept running",
        || async {
            let s = status(&lab.app).await;
            let last: Option<chrono::DateTime<chrono::Utc>> = tick(&s, "idle_sweep")
                ["last_started_at"]
                .as_str()
                .and_then(|t| t.parse().ok());
            let quiet = last.is_some_and(|t| chrono::Utc::now() - t > chrono::Duration::seconds(1));
            if s["leader"].is_null() && quiet {
                Ok(())
            } else {
                Err(format!("{s}"))
            }
        },
    )
    .await;
    let second = replica(&lab.app, "after-restart");
    let restarted = Instant::now();
    let stopped = wait_stopped(&lab, vmid, Duration::from_secs(15)).await;
    // Counted from the first sighting (plus a sweep, a shutdown task), not from the restart.
    assert!(
        stopped < restarted + Duration::from_millis(4_500),
        "history lost: idle seen {:?} before the restart, stopped {:?} after it",
        restarted - idle_seen,
        stopped - restarted
    );
    second.stop.cancel();
    let _ = second.task.await;
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_marks_missing_vms_and_destroys_only_orphans_when_enabled() {
    let lab = Lab::start(Backend::Embedded, |_| {}).await;
    let (class_id, job) = lab
        .create_class(class_body("Recon lab", "linked_clone", 2))
        .await;
    let done = lab.wait_finished(job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let vms = lab.class(class_id).await["vms"].as_array().unwrap().clone();
    let gone = vms[0]["vmid"].as_i64().unwrap();
    let gone_node = vms[0]["node"].as_str().unwrap().to_string();
    let upid = lab
        .api
        .client
        .qemu_delete(&gone_node, gone as u32, &Default::default())
        .await
        .unwrap();
    lab.api.wait(upid).await;
    // An orphan: our marker, no row (a clone that landed after its class was deleted, say).
    let params = CloneParams::linked(15_000)
        .name("old-lab-student-1-15000")
        .target("pve1")
        .description("labfleet-managed: class=999 vm=9999");
    let upid = lab
        .api
        .client
        .qemu_clone("pve1", 104, &params)
        .await
        .unwrap();
    lab.api.wait(upid).await;
    lab.foreign_vm(15_001, "not-ours", "pve1").await;

    let report = lab.app.scheduler("r1").reconcile_once().await.unwrap();
    assert_eq!((report.missing, report.orphans), (1, 1), "{report:?}");
    let (code, view) = lab.app.call(Method::GET, "/api/reconcile", None).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["missing"].as_array().unwrap().len(), 1, "{view:#}");
    assert_eq!(view["missing"][0]["vmid"], gone);
    let orphans = view["orphans"].as_array().unwrap();
    let state_of = |vmid: i64| {
        orphans
            .iter()
            .find(|o| o["vmid"] == vmid)
            .map(|o| o["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of(15_000).as_deref(), Some("orphan"), "{view:#}");
    assert_eq!(state_of(15_001).as_deref(), Some("foreign"), "{view:#}");
    assert_eq!(lab.class(class_id).await["vms"][0]["state"], "missing");
    // Not enabled: a second pass reports again and destroys nothing.
    let report = lab.app.scheduler("r1").reconcile_once().await.unwrap();
    assert_eq!((report.orphans, report.destroys), (0, 0), "{report:?}");

    // Enabled with no grace: the orphan goes, the foreign VM stays.
    let mut settings = lab.app.settings.clone();
    settings.scheduler.reconcile_destroy_orphans = true;
    settings.scheduler.orphan_grace_secs = 0;
    let destroyer = labfleet_scheduler::Scheduler::new(
        std::sync::Arc::new(settings),
        lab.app.store.clone(),
        lab.app.publisher.clone(),
        lab.app.clusters.clone(),
        lab.app.backends.clone(),
    );
    let report = destroyer.reconcile_once().await.unwrap();
    assert_eq!(report.destroys, 1, "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.guests().await.contains_key(&15_000) {
        assert!(Instant::now() < deadline, "orphan not destroyed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lab.guests().await.contains_key(&15_001),
        "a foreign VM was destroyed"
    );
    // The destroy job forgets the orphan once its task has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (left, view) = loop {
        let (_, view) = lab.app.call(Method::GET, "/api/reconcile", None).await;
        let left: Vec<i64> = view["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["vmid"].as_i64().unwrap())
            .collect();
        if left.len() == 1 || Instant::now() > deadline {
            break (left, view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(left, vec![15_001], "{view:#}");
    lab.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_missed_sweeps_proxmox_history_confirms_before_a_shutdown() {
    let lab = Lab::start(Backend::Embedded, |s| {
        s.scheduler.idle_window_secs = 2;
    })
    .await;
    set_cluster(&lab, json!({ "auto_shutdown_enabled": true })).await;
    let vms = started_class(&lab, "Gap lab", 1).await;
    lab.api.set_cpu(vms[0].1, 0.0).await;
    // Sweeps run by hand here; the allowed gap between two is 3 s (three intervals, at least 1 s).
    let sweeper = lab.app.scheduler("by-hand");
    let first = sweeper.idle_sweep_once().await.unwrap();
    assert_eq!(
        (first.vms, first.requests, first.shutdowns),
        (1, 1, 0),
        "{first:?}"
    );
    // Until this cluster's last sweep is older than the allowed gap (by its own record).
    eventually(
        Duration::from_secs(10),
        "the sweep record did not age",
        || async {
            let rows = scalar_rows(
                &lab.app,
                "SELECT last_finished_at FROM scheduler_ticks WHERE name LIKE 'idle_sweep/%'",
            )
            .await;
            let last: Option<chrono::DateTime<chrono::Utc>> = rows
                .first()
                .and_then(|r| r.try_get("", "last_finished_at").ok());
            match last {
                Some(t) if chrono::Utc::now() - t > chrono::Duration::milliseconds(3_200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // Idle for longer than the window, but nobody looked in between: one rrddata read decides.
    let second = sweeper.idle_sweep_once().await.unwrap();
    assert_eq!((second.requests, second.shutdowns), (2, 1), "{second:?}");
    wait_stopped(&lab, vms[0].1, Duration::from_secs(15)).await;
    lab.app.finish().await;
}
