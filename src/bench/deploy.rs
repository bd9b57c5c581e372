//! `labfleet bench deploy`: a class deployment end to end (POST /api/classes → every VM made)
//! against the simulator with Proxmox-like latencies, compared with the simulator's
//! critical-path lower bound for the same workload (PVE's storage lock serializes every clone on
//! a storage, see `docs/proxmox.md`, "Locks") and with what a one-at-a-time loop — the approach of
//! the older lab tool labfleet replaces — needs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use labfleet_config::Settings;
use serde_json::{json, Value};

use super::{
    pipeline::Setup,
    scratch::{use_rabbit_postgres, ScratchPostgres},
};
use crate::{
    cli::deploy::Method,
    lab::{Lab, LabOptions},
};

/// Options of `labfleet bench deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// VMs in the class.
    #[arg(long, default_value_t = 20)]
    vms: u32,
    /// Simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How the VMs are made.
    #[arg(long, value_enum, default_value_t = Method::LinkedClone)]
    method: Method,
    /// The simulator's latency factor (1 = Proxmox-like latencies).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Make real qcow2 files in the simulator (`qemu-img` runs add unmodelled time inside the
    /// simulated storage lock, which the lower bound does not count).
    #[arg(long)]
    real_disks: bool,
    /// Where labfleet keeps its state: embedded (SQLite + in-process queue) or RabbitMQ +
    /// PostgreSQL (a scratch database).
    #[arg(long, value_enum, default_value_t = Setup::Embedded)]
    setup: Setup,
    /// PostgreSQL server (a scratch database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// RabbitMQ server.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
}

pub async fn run(args: DeployArgs, base: Settings) -> anyhow::Result<()> {
    let setups: &[Setup] = match args.setup {
        Setup::Both => &[Setup::Embedded, Setup::Rabbit],
        Setup::Embedded => &[Setup::Embedded],
        Setup::Rabbit => &[Setup::Rabbit],
    };
    for setup in setups {
        let dir = tempfile::tempdir()?;
        let mut settings = base.clone();
        settings.bind = "127.0.0.1:0".parse()?;
        settings.data_dir = dir.path().join("labfleet");
        settings.admin_token = None;
        let scratch = match setup {
            Setup::Rabbit => {
                let scratch = ScratchPostgres::create(&args.postgres_url).await?;
                use_rabbit_postgres(&mut settings, &scratch.url, &args.amqp_url);
                Some(scratch)
            }
            _ => {
                settings.database_url = None;
                settings.amqp_url = None;
                None
            }
        };
        let label = match setup {
            Setup::Rabbit => "RabbitMQ + PostgreSQL",
            _ => "embedded (SQLite + in-process queue)",
        };
        let result = measure(&args, settings, dir.path().join("sim"), label).await;
        if let Some(s) = scratch {
            s.drop_now().await;
        }
        result?;
    }
    Ok(())
}

async fn measure(
    args: &DeployArgs,
    settings: Settings,
    sim_dir: std::path::PathBuf,
    label: &str,
) -> anyhow::Result<()> {
    let lab = Lab::start(
        settings,
        LabOptions {
            nodes: args.nodes,
            time_scale: args.time_scale,
            sim_dir,
            real_disks: args.real_disks,
        },
    )
    .await?;
    let result = deploy_and_compare(args, &lab, label).await;
    lab.stop().await?;
    result
}

async fn deploy_and_compare(args: &DeployArgs, lab: &Lab, label: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let sim = lab.sim.url.trim_end_matches('/').to_string();
    // Record only this deployment's Proxmox operations.
    http.delete(format!("{sim}/_sim/lower-bound"))
        .send()
        .await?;

    let started = Instant::now();
    let created: Value = http
        .post(format!("{}/api/classes", lab.api_url))
        .bearer_auth(&lab.admin_token)
        .json(&json!({
            "name": "bench", "template_id": 104, "pool_size": args.vms,
            "deployment_method": args.method.api_name(),
        }))
        .send()
        .await?
        .json()
        .await?;
    let job = created["job_id"]
        .as_str()
        .with_context(|| format!("class not accepted: {created}"))?
        .to_string();
    let class_id = created["class_id"].as_i64().unwrap_or_default();
    let finished = loop {
        let j: Value = http
            .get(format!("{}/api/jobs/{job}?children_limit=1", lab.api_url))
            .bearer_auth(&lab.admin_token)
            .send()
            .await?
            .json()
            .await?;
        if matches!(
            j["status"].as_str(),
            Some("succeeded" | "failed" | "dead" | "cancelled")
        ) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    if finished["status"] != "succeeded" {
        bail!("the deployment did not succeed: {finished:#}");
    }

    let detail: Value = http
        .get(format!(
            "{}/api/jobs/{job}?children_limit=1000",
            lab.api_url
        ))
        .bearer_auth(&lab.admin_token)
        .send()
        .await?
        .json()
        .await?;
    let timeline = Timeline::of(&detail);

    let class: Value = http
        .get(format!("{}/api/classes/{class_id}", lab.api_url))
        .bearer_auth(&lab.admin_token)
        .send()
        .await?
        .json()
        .await?;
    let nodes: Vec<String> = class["vms"]
        .as_array()
        .map(|vms| {
            vms.iter()
                .filter_map(|v| v["node"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let bound = |query: String| {
        let http = http.clone();
        let url = format!("{sim}/_sim/lower-bound{query}");
        async move {
            let v: Value = http.get(url).send().await?.json().await?;
            v["data"]["seconds"]
                .as_f64()
                .with_context(|| format!("no lower bound in {v}"))
        }
    };
    let recorded = bound(String::new()).await?;
    let kind = match args.method {
        // Full copies go where labfleet puts them without a cluster default storage: next to
        // template 104's disk, on `nfs-shared`; the bound is asked for that same workload.
        Method::FullClone => Some("full_clones"),
        Method::LinkedClone => Some("linked_clones"),
        // A config clone is not a Proxmox clone: only the recorded operations describe it.
        Method::ConfigClone => None,
    };
    let (workload, sequential) = match kind {
        Some(kind) => {
            let storage = if kind == "full_clones" {
                "&storage=nfs-shared"
            } else {
                ""
            };
            let all = bound(format!(
                "?{kind}={}&template=104&nodes={}{storage}",
                args.vms,
                nodes.join(",")
            ))
            .await?;
            let one = bound(format!("?{kind}=1&template=104{storage}")).await?;
            (all, Some(one * f64::from(args.vms)))
        }
        None => (recorded, None),
    };
    println!(
        "bench deploy: {} × {} over {} nodes, time scale {}, {label}",
        args.vms,
        args.method.api_name(),
        args.nodes,
        args.time_scale
    );
    println!("  wall time (POST /api/classes → every VM made)   {wall:>9.2} s");
    println!("  simulator's lower bound for this workload        {workload:>9.2} s");
    println!("  lower bound of the operations labfleet sent      {recorded:>9.2} s");
    println!(
        "  ratio wall / lower bound                         {:>9.3}   (target ≤ 1.15)",
        wall / workload
    );
    if let Some(t) = timeline {
        println!(
            "  where the time went: accepted → first VM job started {:.2} s, first → last VM \
             job finished {:.2} s, last VM job → deployment finished {:.2} s",
            t.dispatch, t.vms, t.finish
        );
    }
    if let Some(sequential) = sequential {
        println!("  one-at-a-time loop (older lab tool)              {sequential:>9.2} s");
        println!(
            "  speed-up over the loop                           {:>9.1}×",
            sequential / wall
        );
    }
    Ok(())
}

/// Where a deployment's wall time went, from its job and its children's timestamps.
struct Timeline {
    /// From the deploy job's creation to the first VM job's start (planning, fan-out).
    dispatch: f64,
    /// From the first VM job's start to the last one's end.
    vms: f64,
    /// From the last VM job's end to the deploy job's end.
    finish: f64,
}

impl Timeline {
    fn of(job: &Value) -> Option<Timeline> {
        let at = |v: &Value| {
            v.as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_micros() as f64 / 1e6)
        };
        let created = at(&job["created_at"])?;
        let finished = at(&job["finished_at"])?;
        let children = job["children"].as_array()?;
        let first = children
            .iter()
            .filter_map(|c| at(&c["started_at"]))
            .min_by(f64::total_cmp)?;
        let last = children
            .iter()
            .filter_map(|c| at(&c["finished_at"]))
            .max_by(f64::total_cmp)?;
        Some(Timeline {
            dispatch: first - created,
            vms: last - first,
            finish: finished - last,
        })
    }
}
