//! `labfleet jobs watch <id>`: the progress bar of `labfleet deploy` for any job, e.g. to pick a
//! deployment up again after Ctrl-C. A class job ends with its VM table.

use std::{process::ExitCode, time::Instant};

use clap::Subcommand;
use labfleet_jobs::JobStatus;
use uuid::Uuid;

use super::{
    deploy::{Finished, ServerArgs, EXIT_API_ERROR, EXIT_INTERRUPTED},
    watch::{watch, Units, Watched},
};
use crate::shutdown;

/// `labfleet jobs …`
#[derive(Subcommand)]
pub enum JobsCommand {
    /// Follows a job until it finishes; exits 0 if it succeeded, 1 if not, 2 on API errors.
    Watch {
        /// The job's id.
        id: Uuid,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs a `labfleet jobs` command.
pub async fn run(cmd: JobsCommand) -> ExitCode {
    let JobsCommand::Watch { id, server } = cmd;
    let client = match server.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let started = Instant::now();
    let stop = shutdown::on_signal();
    let outcome = async {
        let kind = client.job(id).await?.kind;
        match watch(&client, id, Units::of_kind(&kind), started, &stop).await? {
            Watched::Interrupted => Ok(ExitCode::from(EXIT_INTERRUPTED)),
            Watched::Finished(job) => match job.deployed_class() {
                Some(class_id) => Ok(Finished::read(&client, job, class_id, started)
                    .await?
                    .report()),
                None => {
                    match job.took() {
                        Some(took) => {
                            println!("job {id} {} in {:.1} s", job.status, took.as_secs_f64())
                        }
                        None => println!("job {id} {}", job.status),
                    }
                    if let Some(error) = &job.error {
                        println!("job error: {error}");
                    }
                    Ok(if job.status == JobStatus::Succeeded {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
            },
        }
    };
    outcome
        .await
        .unwrap_or_else(|e: super::client::ClientError| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_API_ERROR)
        })
}
