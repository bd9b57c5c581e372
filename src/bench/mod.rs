//! `labfleet bench …`: benchmarks that print figures and ratios (never timed tests).

mod api;
mod deploy;
mod idle;
mod pipeline;
mod scratch;

use clap::Subcommand;
use labfleet_config::Settings;

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Jobs per second end to end (submit → succeeded) with no-op jobs.
    Pipeline(pipeline::PipelineArgs),
    /// Latency percentiles of the jobs API at a fixed request rate.
    Api(api::ApiArgs),
    /// A class deployment against the simulator, against its critical-path lower bound.
    Deploy(deploy::DeployArgs),
    /// The idle auto-shutdown sweep over many VMs: labfleet's time and Proxmox requests per sweep.
    IdleSweep(idle::IdleArgs),
}

/// Runs one benchmark.
pub async fn run(cmd: BenchCommand, settings: Settings) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline::run(args, settings).await,
        BenchCommand::Api(args) => api::run(args, settings).await,
        BenchCommand::Deploy(args) => deploy::run(args, settings).await,
        BenchCommand::IdleSweep(args) => idle::run(args, settings).await,
    }
}
