//! The job pipeline benchmark: N no-op jobs submitted in batches (the way a class deploy fans out),
//! run by K worker processes, timed from the first submit until the last job succeeded. Runs over
//! RabbitMQ + PostgreSQL (a scratch database and queue prefix, removed afterwards) and over the
//! embedded default (SQLite + in-process queue).

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use labfleet_config::Settings;
use labfleet_jobs::{store::NewJob, JobSpec, JobStore, NoopArgs, Publisher};
use sea_orm::ConnectionTrait;

use super::scratch::{self, child_env, use_rabbit_postgres, ScratchPostgres};
use crate::components::Components;

/// Which setups to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Setup {
    /// RabbitMQ + PostgreSQL with separate worker processes.
    Rabbit,
    /// SQLite + in-process queue, worker in this process.
    Embedded,
    /// Both, one after the other.
    Both,
}

/// Options of `labfleet bench pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Worker processes (RabbitMQ setup).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Jobs created and published per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Setups to measure.
    #[arg(long, value_enum, default_value_t = Setup::Both)]
    setup: Setup,
    /// PostgreSQL server (a scratch database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// RabbitMQ server.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
}

/// Reference figures on this kind of machine, from the foundation issue: a Celery 5.7 worker with
/// acks_late, publish confirms and a PostgreSQL result backend.
const CELERY_JOBS_PER_SEC: f64 = 120.0;
const TARGET_JOBS_PER_SEC: f64 = 1_000.0;

pub async fn run(args: PipelineArgs, base: Settings) -> anyhow::Result<()> {
    if matches!(args.setup, Setup::Rabbit | Setup::Both) {
        let rate = rabbit_postgres(&args, base.clone()).await?;
        report("RabbitMQ + PostgreSQL", &args, args.workers, rate);
    }
    if matches!(args.setup, Setup::Embedded | Setup::Both) {
        let rate = embedded(&args, base).await?;
        report("embedded (SQLite + in-process queue)", &args, 1, rate);
    }
    Ok(())
}

fn report(name: &str, args: &PipelineArgs, workers: usize, (secs, rate): (f64, f64)) {
    println!(
        "pipeline [{name}]: {} noop jobs, {workers} worker process(es), batches of {}: {secs:.2} s, {rate:.0} jobs/s \
         ({:.2}x the 1,000 jobs/s target, {:.1}x Celery's ~120 jobs/s reference)",
        args.jobs,
        args.batch,
        rate / TARGET_JOBS_PER_SEC / workers as f64,
        rate / CELERY_JOBS_PER_SEC,
    );
}

async fn rabbit_postgres(
    args: &PipelineArgs,
    mut settings: Settings,
) -> anyhow::Result<(f64, f64)> {
    let scratch = ScratchPostgres::create(&args.postgres_url).await?;
    use_rabbit_postgres(&mut settings, &scratch.url, &args.amqp_url);
    let result = async {
        // The parts `labfleet serve` builds; the workers are separate processes.
        let parts = Components::build(settings.clone()).await?;
        let (store, publisher) = (parts.store.clone(), parts.publisher.clone());
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for _ in 0..args.workers {
            let child = tokio::process::Command::new(&exe)
                .arg("worker")
                .envs(child_env(&settings))
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            children.push(child);
        }
        let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
        let measured = drive(args, &store, &publisher, &pids).await;
        for mut child in children {
            let _ = child.kill().await;
        }
        measured
    }
    .await;
    scratch.drop_now().await;
    result
}

async fn embedded(args: &PipelineArgs, mut settings: Settings) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!(
        "labfleet-bench-{}",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    settings.database_url = None;
    settings.amqp_url = None;
    settings.data_dir = dir.clone();
    let result = async {
        // The parts `labfleet serve` builds, and its worker; no API or scheduler.
        let parts = Components::build(settings).await?;
        let (store, publisher) = (parts.store.clone(), parts.publisher.clone());
        let worker = parts.worker();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(worker.run_until_stopped(stop.clone().cancelled_owned()));
        let measured = drive(args, &store, &publisher, &[std::process::id()]).await;
        stop.cancel();
        let _ = task.await;
        measured
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Submits every job in batches and waits until all succeeded; returns (seconds, jobs/s).
/// Samples the resident memory of `pids` at 10 %, 50 % and 100 % of the jobs (the soak view).
async fn drive(
    args: &PipelineArgs,
    store: &JobStore,
    publisher: &Publisher,
    pids: &[u32],
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let submitter = {
        let publisher = publisher.clone();
        let (jobs, batch) = (args.jobs, args.batch.max(1));
        tokio::spawn(async move {
            let new = NewJob {
                spec: JobSpec::Noop(NoopArgs::default()),
                parent_id: None,
                created_by: "bench".into(),
                max_attempts: 3,
                class_id: None,
            };
            let mut left = jobs;
            while left > 0 {
                let n = left.min(batch);
                publisher.submit(&vec![new.clone(); n]).await?;
                left -= n;
            }
            anyhow::Ok(())
        })
    };
    let deadline = started + Duration::from_secs(600);
    let db = Arc::new(store.db().clone());
    let mut sampled = 0;
    loop {
        let done = db
            .query_one(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM jobs WHERE status = 'succeeded'",
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        for (mark, label) in [(10, "10%"), (50, "50%"), (100, "100%")] {
            if done as usize * 100 >= args.jobs * mark && sampled < mark {
                sampled = mark;
                let rss: Vec<String> = pids
                    .iter()
                    .filter_map(|p| scratch::rss_mib(*p))
                    .map(|m| format!("{m:.1} MiB"))
                    .collect();
                println!("  worker memory at {label} of the jobs: {}", rss.join(", "));
            }
        }
        if done as usize >= args.jobs {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {done} of {} jobs succeeded within 10 minutes",
                args.jobs
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    submitter.await??;
    let secs = started.elapsed().as_secs_f64();
    Ok((secs, args.jobs as f64 / secs))
}
