//! `labfleet bench …`: benchmarks that print figures and ratios (never timed tests).

mod pipeline;

use clap::Subcommand;
use labfleet_jobs::Settings;

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Jobs per second end to end (submit → succeeded) with no-op jobs.
    Pipeline(pipeline::PipelineArgs),
}

/// Runs one benchmark.
pub async fn run(cmd: BenchCommand, settings: Settings) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline::run(args, settings).await,
    }
}
