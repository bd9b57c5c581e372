//! `labfleet`: one binary for every part of the system (API, worker, scheduler, migrations,
//! benchmarks) and its client commands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use labfleet::{bench, cli, telemetry};
use labfleet_config::Settings;

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
    /// Deploys a class on a running labfleet with a live progress bar, then prints its VMs.
    /// Exits 0 when every VM is ready, 1 when any failed, 2 when the request was refused.
    Deploy(cli::deploy::DeployArgs),
    /// Jobs on a running labfleet: watch one's progress.
    #[command(subcommand)]
    Jobs(cli::jobs::JobsCommand),
    /// The whole system and a simulated Proxmox cluster in one process: deploys a demo class
    /// with the progress bar, then keeps serving the API until Ctrl-C.
    Demo(cli::demo::DemoArgs),
    /// A simulated Proxmox VE cluster (REST, SSH, qcow2 disks, locks, latencies, faults).
    Sim(labfleet_sim::SimArgs),
    /// Benchmarks that print figures and ratios.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Command {
    /// Whether the command runs a part of the system and so reads the settings. The API's
    /// client commands and the simulator read none: a stray `LABFLEET_*` variable (meant for a
    /// server) must not stop them.
    fn reads_settings(&self) -> bool {
        !matches!(
            self,
            Command::Deploy(_) | Command::Jobs(_) | Command::Sim(_)
        )
    }

    /// Benchmarks print figures, and the client commands and the demo keep the terminal for the
    /// progress bar and the table: they log only warnings unless RUST_LOG asks for more.
    fn quiet(&self) -> bool {
        matches!(
            self,
            Command::Bench(_) | Command::Deploy(_) | Command::Jobs(_) | Command::Demo(_)
        )
    }
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process: reqwest, lapin and russh may each pull in a
    // rustls backend, and rustls refuses to pick one when several are linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line a user can act on: the error and its causes, never a backtrace (even with
            // RUST_BACKTRACE set; that is for panics).
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = if cli.command.reads_settings() {
        Settings::load(cli.config.as_deref())?
    } else {
        Settings::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let quiet = cli.command.quiet();
    runtime.block_on(async move {
        telemetry::init(&settings.log, quiet);
        let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Serve => done(cli::serve::run(settings).await),
            Command::Api => done(cli::services::api(settings).await),
            Command::Worker => done(cli::services::worker(settings).await),
            Command::Scheduler => done(cli::services::scheduler(settings).await),
            Command::Migrate => done(cli::services::migrate(settings).await),
            Command::ImportClusters { file } => {
                done(cli::services::import_clusters(settings, &file).await)
            }
            Command::User(cmd) => done(cli::access::user(settings, cmd).await),
            Command::Token(cmd) => done(cli::access::token(settings, cmd).await),
            Command::Deploy(args) => Ok(cli::deploy::run(args).await),
            Command::Jobs(cmd) => Ok(cli::jobs::run(cmd).await),
            Command::Demo(args) => cli::demo::run(args, settings).await,
            Command::Sim(args) => done(labfleet_sim::run(args).await),
            Command::Bench(cmd) => done(bench::run(cmd, settings).await),
        }
    })
}
