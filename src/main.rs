//! `labfleet`: one binary for every part of the system (API, worker, scheduler, migrations,
//! benchmarks) and its client commands.

mod bench;
mod cli;
mod components;
mod lab;
mod shutdown;
mod telemetry;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Deploys and runs classroom and lab VMs on Proxmox VE clusters.
#[derive(Parser)]
#[command(name = "labfleet", version, about)]
struct Cli {
    /// Settings file (TOML); the environment overrides it (`LABFLEET_<KEY>`, `LABFLEET_<SECTION>__<KEY>`,
    /// `DATABASE_URL`, `AMQP_URL`).
    #[arg(long, global = true, env = "LABFLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API, worker and scheduler in one process (the embedded default: SQLite, in-process queue).
    Serve,
    /// The HTTP API alone (needs AMQP_URL so separate workers get its jobs).
    Api,
    /// A worker alone (needs AMQP_URL and a shared DATABASE_URL).
    Worker,
    /// The scheduler alone.
    Scheduler,
    /// Brings the database schema up to date and exits.
    Migrate,
    /// Imports the legacy clusters.json once (re-running it changes nothing).
    ImportClusters {
        /// The legacy file: a JSON array of {id, name, host, port, user, password, verify_ssl,
        /// is_default, is_active}.
        file: PathBuf,
    },
    /// Users: create, list, disable.
    #[command(subcommand)]
    User(cli::access::UserCommand),
    /// API tokens: create (printed once on stdout), revoke.
    #[command(subcommand)]
    Token(cli::access::TokenCommand),
    /// A simulated Proxmox VE cluster (REST, SSH, qcow2 disks, locks, latencies, faults).
    Sim(labfleet_sim::SimArgs),
    /// Benchmarks that print figures and ratios.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    // One TLS crypto provider for the whole process: reqwest, lapin and russh may each pull in a
    // rustls backend, and rustls refuses to pick one when several are linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let settings = labfleet_jobs::Settings::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Bench(cmd) => {
                telemetry::init(&settings.log, true);
                bench::run(cmd, settings).await
            }
            command => {
                telemetry::init(&settings.log, false);
                match command {
                    Command::Serve => cli::serve::run(settings).await,
                    Command::Api => cli::services::api(settings).await,
                    Command::Worker => cli::services::worker(settings).await,
                    Command::Scheduler => cli::services::scheduler(settings).await,
                    Command::Migrate => cli::services::migrate(settings).await,
                    Command::ImportClusters { file } => {
                        cli::services::import_clusters(settings, &file).await
                    }
                    Command::User(cmd) => cli::access::user(settings, cmd).await,
                    Command::Token(cmd) => cli::access::token(settings, cmd).await,
                    Command::Sim(args) => labfleet_sim::run(args).await,
                    Command::Bench(_) => unreachable!("handled above"),
                }
            }
        }
    })
}
