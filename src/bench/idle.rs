//! `labfleet bench idle-sweep`: the idle auto-shutdown sweep over many VMs. The simulator gets
//! `--vms` running VMs over `--nodes` nodes, labfleet a class owning them all, and the sweep
//! runs `--sweeps` times: the first writes every VM's history (cold), the next ones are the steady
//! state (nothing changed, nothing written), and a last one with a zero idle window creates a
//! shutdown job for every VM. Printed per sweep: wall time, labfleet's own time (wall time minus
//! waiting for Proxmox), Proxmox requests. labfleet's targets: under 1 s of labfleet time for
//! 10,000 VMs over 20 nodes, about one request per cluster.
//!
//! The VMs are made directly on the simulator and their rows written directly: deploying 10,000
//! VMs is `bench deploy`'s business, not this one's. Uses `DATABASE_URL` when set (PostgreSQL),
//! the embedded SQLite file otherwise; no worker runs, so the shutdown jobs stay queued.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use clap::Args;
use futures::{stream, StreamExt};
use labfleet_clusters::ClusterInput;
use labfleet_config::Settings;
use labfleet_db::sql;
use labfleet_proxmox::{CreateVmParams, VmSettings};
use labfleet_sim::SimConfig;
use sea_orm::{ConnectionTrait, Value};

use crate::{components::Components, lab};

/// Options of `labfleet bench idle-sweep`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// Running VMs to sweep.
    #[arg(long, default_value_t = 10_000)]
    vms: u32,
    /// Simulated nodes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Steady-state sweeps after the first.
    #[arg(long, default_value_t = 5)]
    sweeps: u32,
}

pub async fn run(args: IdleArgs, base: Settings) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = SimConfig::for_tests(dir.path().join("sim"));
    config.nodes = args.nodes;
    config.time_scale = 0.0;
    config.plain_http = false;
    config.use_qemu_img = false;
    let sim = labfleet_sim::start(config)
        .await
        .context("cannot start the simulated cluster")?;
    let mut settings = base;
    settings.data_dir = dir.path().join("labfleet");
    settings.amqp_url = None;
    // No shutdown before the last sweep.
    settings.scheduler.idle_window_secs = 365 * 24 * 3600;
    let parts = Components::build(settings.clone()).await?;
    let cluster_db_id = lab::register(&parts, &sim).await?;
    parts
        .clusters
        .update(
            cluster_db_id,
            ClusterInput {
                auto_shutdown_enabled: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let (_, backend) = parts.backends.proxmox(cluster_db_id).await?;
    let client = backend.client();

    let started = Instant::now();
    let nodes: Vec<String> = (1..=args.nodes).map(|i| format!("pve{i}")).collect();
    let made = stream::iter(0..args.vms)
        .map(|i| {
            let client = client.clone();
            let node = nodes[i as usize % nodes.len()].clone();
            async move {
                let vmid = 10_000 + i;
                let params = CreateVmParams {
                    vmid,
                    settings: VmSettings {
                        name: Some(format!("bench-student-{}-{vmid}", i + 1)),
                        ..Default::default()
                    },
                    start: Some(true),
                    ..Default::default()
                };
                let upid = client.qemu_create(&node, &params).await?;
                client
                    .wait_task(&upid, std::time::Duration::from_secs(60))
                    .await?;
                Ok::<_, labfleet_proxmox::ProxmoxError>((i, vmid, node))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut vms = Vec::with_capacity(made.len());
    for m in made {
        vms.push(m.context("cannot make a VM on the simulator")?);
    }
    println!(
        "made {} running VMs over {} nodes on the simulator in {:.1} s",
        vms.len(),
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    own_them(&parts, cluster_db_id, &vms).await?;

    let scheduler = labfleet_scheduler::Scheduler::new(
        Arc::new(settings.clone()),
        parts.store.clone(),
        parts.publisher.clone(),
        parts.clusters.clone(),
        parts.backends.clone(),
    );
    println!(
        "{:<14} {:>9} {:>11} {:>9} {:>7} {:>10}",
        "sweep", "wall s", "labfleet s", "requests", "VMs", "shutdowns"
    );
    let mut steady = Vec::new();
    for n in 0..=args.sweeps {
        let label = if n == 0 {
            "first (cold)".to_string()
        } else {
            format!("steady {n}")
        };
        let r = sweep(&scheduler, &label).await?;
        if n > 0 {
            steady.push(r);
        }
    }
    let mut last = settings.clone();
    last.scheduler.idle_window_secs = 0;
    let shutting = labfleet_scheduler::Scheduler::new(
        Arc::new(last),
        parts.store.clone(),
        parts.publisher.clone(),
        parts.clusters.clone(),
        parts.backends.clone(),
    );
    sweep(&shutting, "all idle").await?;
    if !steady.is_empty() {
        let own: Vec<f64> = steady.iter().map(|r| r.own_seconds).collect();
        let mean = own.iter().sum::<f64>() / own.len() as f64;
        let worst = own.iter().cloned().fold(0.0, f64::max);
        let requests = steady.iter().map(|r| r.requests).max().unwrap_or(0);
        let wall = steady.iter().map(|r| r.wall_seconds).fold(0.0, f64::max);
        println!(
            "steady state: labfleet time per sweep mean {mean:.3} s, worst {worst:.3} s = {worst:.2}x the 1 s target \
             (worst wall time, including the simulator answering and the JSON parse: {wall:.3} s); \
             {requests} Proxmox request(s) per sweep for 1 cluster"
        );
    }
    sim.shutdown().await;
    Ok(())
}

async fn sweep(
    scheduler: &labfleet_scheduler::Scheduler,
    label: &str,
) -> anyhow::Result<labfleet_scheduler::idle::IdleReport> {
    let t = Instant::now();
    let mut r = scheduler.idle_sweep_once().await?;
    r.wall_seconds = t.elapsed().as_secs_f64();
    println!(
        "{label:<14} {:>9.3} {:>11.3} {:>9} {:>7} {:>10}",
        r.wall_seconds, r.own_seconds, r.requests, r.vms, r.shutdowns
    );
    if !r.skipped.is_empty() {
        println!("  skipped: {}", r.skipped.join("; "));
    }
    Ok(r)
}

/// A class owning every VM (rows written directly, many per statement).
async fn own_them(
    parts: &Components,
    cluster_db_id: i64,
    vms: &[(u32, u32, String)],
) -> anyhow::Result<()> {
    let db = parts.store.db();
    let backend = db.get_database_backend();
    let now = chrono::Utc::now();
    let row = db
        .query_one(sql(
            backend,
            "INSERT INTO classes (name, slug, owner, cluster_db_id, template_vmid, method, start_vms, \
             pool_size, state, created_at, updated_at) \
             VALUES ('Idle bench', 'idle-bench', 'bench', ?, 104, 'linked_clone', true, ?, 'active', ?, ?) \
             RETURNING id",
            vec![cluster_db_id.into(), (vms.len() as i32).into(), now.into(), now.into()],
        ))
        .await?
        .context("no class id returned")?;
    let class_id: i64 = row.try_get("", "id")?;
    for chunk in vms.chunks(1_000) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, vmid, node) in chunk {
            rows.push("(?, ?, ?, ?, ?, ?, 'running', false, ?, ?)");
            values.extend([
                class_id.into(),
                (*i as i32 + 1).into(),
                cluster_db_id.into(),
                node.clone().into(),
                i64::from(*vmid).into(),
                format!("bench-student-{}-{vmid}", i + 1).into(),
                now.into(),
                now.into(),
            ]);
        }
        let text = format!(
            "INSERT INTO class_vms (class_id, idx, cluster_db_id, node, vmid, name, state, \
             keep_running, created_at, updated_at) VALUES {}",
            rows.join(", ")
        );
        db.execute(sql(backend, &text, values)).await?;
    }
    Ok(())
}
