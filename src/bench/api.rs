//! The API latency benchmark: a `labfleet serve` child process, and an open-loop load at a fixed
//! rate (requests are sent on schedule whether or not earlier ones have answered, and latency is
//! measured from the scheduled time, so a stall is not hidden). Prints p50/p99 of
//! `GET /api/jobs/{id}` and `POST /api/jobs` against their targets.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use labfleet_config::Settings;
use serde_json::{json, Value};

use super::{
    pipeline::Setup,
    scratch::{child_env, use_rabbit_postgres, ScratchPostgres},
};

/// Options of `labfleet bench api`.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Requests per second of `GET /api/jobs/{id}`.
    #[arg(long, default_value_t = 1_000)]
    get_rate: u32,
    /// Requests per second of `POST /api/jobs`.
    #[arg(long, default_value_t = 200)]
    post_rate: u32,
    /// Seconds of load for each endpoint.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
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

pub async fn run(args: ApiArgs, base: Settings) -> anyhow::Result<()> {
    if matches!(args.setup, Setup::Rabbit | Setup::Both) {
        let scratch = ScratchPostgres::create(&args.postgres_url).await?;
        let mut settings = base.clone();
        use_rabbit_postgres(&mut settings, &scratch.url, &args.amqp_url);
        let result = measure("RabbitMQ + PostgreSQL", &args, settings).await;
        scratch.drop_now().await;
        result?;
    }
    if matches!(args.setup, Setup::Embedded | Setup::Both) {
        let mut settings = base;
        settings.database_url = None;
        settings.amqp_url = None;
        measure("embedded (SQLite + in-process queue)", &args, settings).await?;
    }
    Ok(())
}

async fn measure(name: &str, args: &ApiArgs, mut settings: Settings) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "labfleet-bench-api-{}",
        hex::encode(rand::random::<[u8; 4]>())
    ));
    settings.data_dir = dir.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = hex::encode(rand::random::<[u8; 16]>());
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .envs(child_env(&settings))
        .env("LABFLEET_BIND", format!("127.0.0.1:{port}"))
        .env("LABFLEET_ADMIN_TOKEN", &token)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start labfleet serve")?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()?;
    let result = async {
        wait_healthy(&client, &base).await?;
        let job: Value = client
            .post(format!("{base}/api/jobs"))
            .bearer_auth(&token)
            .json(&json!({"kind": "noop", "args": {"children": 10}}))
            .send()
            .await?
            .json()
            .await?;
        let id = job["job_id"].as_str().context("no job id")?.to_string();
        let get_url = format!("{base}/api/jobs/{id}");
        let get = load(&client, &token, args.get_rate, args.seconds, move |c, t| {
            c.get(&get_url).bearer_auth(t)
        })
        .await;
        report(name, "GET /api/jobs/{id}", args.get_rate, &get, 10.0);
        let post_url = format!("{base}/api/jobs");
        let post = load(
            &client,
            &token,
            args.post_rate,
            args.seconds,
            move |c, t| {
                c.post(&post_url)
                    .bearer_auth(t)
                    .json(&json!({"kind": "noop", "args": {}}))
            },
        )
        .await;
        report(name, "POST /api/jobs", args.post_rate, &post, 50.0);
        anyhow::Ok(())
    }
    .await;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("labfleet serve did not become ready within 30 s")
}

struct Samples {
    latencies_ms: Vec<f64>,
    errors: usize,
    elapsed: Duration,
}

/// Sends `rate` requests per second for `seconds`, each at its scheduled time.
async fn load(
    client: &reqwest::Client,
    token: &str,
    rate: u32,
    seconds: u64,
    make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Samples {
    let total = rate as u64 * seconds;
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let results = Arc::new(Mutex::new((Vec::with_capacity(total as usize), 0usize)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = started + gap * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let req = make(client, token);
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
            let ms = scheduled.elapsed().as_secs_f64() * 1_000.0;
            if let Ok(mut r) = results.lock() {
                if ok {
                    r.0.push(ms);
                } else {
                    r.1 += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let (mut latencies_ms, errors) = results.lock().map(|r| r.clone()).unwrap_or_default();
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Samples {
        latencies_ms,
        errors,
        elapsed,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(setup: &str, what: &str, rate: u32, s: &Samples, target_p99_ms: f64) {
    let p50 = percentile(&s.latencies_ms, 0.50);
    let p99 = percentile(&s.latencies_ms, 0.99);
    let max = s.latencies_ms.last().copied().unwrap_or(f64::NAN);
    let achieved = (s.latencies_ms.len() + s.errors) as f64 / s.elapsed.as_secs_f64();
    println!(
        "api [{setup}] {what} at {rate}/s (achieved {achieved:.0}/s): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms, \
         {} errors; p99 is {:.2}x the {target_p99_ms} ms target",
        s.errors,
        p99 / target_p99_ms
    );
}
