//! `labfleet deploy`: asks a running labfleet for a class (`POST /api/classes`), follows its
//! deploy job with a live progress bar and prints a table of the VMs it made. The exit status says
//! how it went, so scripts can rely on it: 0 every VM is ready, 1 some VM (or the job) failed, 2
//! the request was refused or the API could not be used, 130 interrupted (the deployment goes on).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use labfleet_jobs::JobStatus;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    client::{ApiClient, ClassDetail, ClientError, Job, NewClass},
    watch::{watch, Units, Watched},
};
use crate::shutdown;

/// Exit status when the request was refused or the API could not be used.
pub const EXIT_API_ERROR: u8 = 2;

/// Exit status when interrupted while waiting (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How the VMs are made (spelled as the API spells it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // the API's names: config_clone, linked_clone, full_clone
pub enum Method {
    /// qcow2 overlays over SSH + a created VM (needs the template on directory or NFS storage).
    ConfigClone,
    /// Proxmox linked clones.
    LinkedClone,
    /// Proxmox full clones.
    FullClone,
}

impl Method {
    /// The API's name for it.
    pub fn api_name(self) -> &'static str {
        match self {
            Method::ConfigClone => "config_clone",
            Method::LinkedClone => "linked_clone",
            Method::FullClone => "full_clone",
        }
    }
}

/// Where the API is and who calls it.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// labfleet's API.
    #[arg(long, env = "LABFLEET_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API token (teacher or admin).
    #[arg(long, env = "LABFLEET_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl ServerArgs {
    /// A client for this server, or the exit status for a server URL reqwest cannot use.
    pub fn client(&self) -> Result<ApiClient, ExitCode> {
        ApiClient::new(&self.server, &self.token).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_API_ERROR)
        })
    }
}

/// Options of `labfleet deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The class name; VM names start with its slug (`biology-101-student-1-10001`).
    #[arg(long)]
    name: String,
    /// Free text, also written into every VM's description.
    #[arg(long)]
    description: Option<String>,
    /// The template's Proxmox VMID.
    #[arg(long)]
    template: i64,
    /// How many VMs.
    #[arg(long)]
    count: u32,
    /// How the VMs are made (the server's default: config_clone).
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// Put every VM on this node (else least-loaded round-robin).
    #[arg(long)]
    node: Option<String>,
    /// The cluster's cluster_id (else the highest-priority cluster holding the template).
    #[arg(long)]
    cluster: Option<String>,
    /// Power the VMs on once cloned.
    #[arg(long)]
    start: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `labfleet deploy`.
pub async fn run(args: DeployArgs) -> ExitCode {
    let client = match args.server.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let class = NewClass {
        name: args.name,
        description: args.description,
        template_id: args.template,
        pool_size: args.count,
        deployment_method: args.method.map(Method::api_name),
        deployment_node: args.node,
        deployment_cluster: args.cluster,
        start: args.start,
    };
    let stop = shutdown::on_signal();
    match deploy(&client, &class, &stop).await {
        Ok(Deployment::Finished(finished)) => finished.report(),
        Ok(Deployment::Interrupted { job_id }) => {
            println!();
            println!("Stopped watching. The deployment continues on the server; follow it with");
            println!(
                "  {} jobs watch {job_id} --server {}",
                super::demo::own_command(),
                client.base()
            );
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_API_ERROR)
        }
    }
}

/// How a deployment went, as far as this client saw it.
pub enum Deployment {
    /// Its job finished.
    Finished(Box<Finished>),
    /// The user stopped waiting first.
    Interrupted {
        /// The class's deploy job.
        job_id: Uuid,
    },
}

/// A finished class job: the job, the class as it ended up and how long the wait took.
pub struct Finished {
    /// The job's final state.
    pub job: Job,
    /// The class and its VMs.
    pub class: ClassDetail,
    /// From the request to the job's end.
    pub wall: Duration,
}

/// Submits `class` and follows its deploy job with the progress bar until it ends or `stop`
/// fires.
pub async fn deploy(
    client: &ApiClient,
    class: &NewClass,
    stop: &CancellationToken,
) -> Result<Deployment, ClientError> {
    let started = Instant::now();
    let accepted = client.create_class(class).await?;
    println!(
        "class {} \"{}\" accepted: {} VM(s) from template {}, job {}",
        accepted.class_id, class.name, class.pool_size, class.template_id, accepted.job_id
    );
    let units = Units {
        noun: "VMs",
        expected: Some(u64::from(class.pool_size)),
    };
    match watch(client, accepted.job_id, units, started, stop).await? {
        Watched::Finished(job) => Ok(Deployment::Finished(Box::new(
            Finished::read(client, job, accepted.class_id, started).await?,
        ))),
        Watched::Interrupted => Ok(Deployment::Interrupted {
            job_id: accepted.job_id,
        }),
    }
}

impl Finished {
    /// Reads the class of a finished job.
    pub async fn read(
        client: &ApiClient,
        job: Job,
        class_id: i64,
        started: Instant,
    ) -> Result<Finished, ClientError> {
        // The job's own time, so a job watched after it finished shows how long it took, not
        // how long the watch did.
        let wall = job.took().unwrap_or_else(|| started.elapsed());
        let class = client.class(class_id).await?;
        Ok(Finished { job, class, wall })
    }

    /// True when the job succeeded and every VM of the class is ready.
    pub fn all_ready(&self) -> bool {
        let c = &self.class.counts;
        self.job.status == JobStatus::Succeeded && c.failed == 0 && c.ready == c.total
    }

    /// Prints the VM table and the outcome; returns the exit status (0 all ready, 1 otherwise).
    pub fn report(&self) -> ExitCode {
        print!("{}", vm_table(&self.class));
        let c = &self.class.counts;
        let secs = self.wall.as_secs_f64();
        println!(
            "class {} \"{}\": {} of {} VMs ready, {} failed, job {} {} in {secs:.1} s",
            self.class.class.id,
            self.class.class.name,
            c.ready,
            c.total,
            c.failed,
            self.job.id,
            self.job.status
        );
        if let Some(error) = &self.job.error {
            println!("job error: {error}");
        }
        if self.all_ready() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The class's VMs as an aligned text table (index, name, vmid, node, state, error).
pub fn vm_table(class: &ClassDetail) -> String {
    const HEADER: [&str; 6] = ["#", "NAME", "VMID", "NODE", "STATE", "ERROR"];
    let rows: Vec<[String; 6]> = class
        .vms
        .iter()
        .map(|vm| {
            [
                vm.index.to_string(),
                vm.name.clone(),
                vm.vmid.to_string(),
                vm.node.clone(),
                vm.state.clone(),
                vm.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // The last column is not padded: errors can be long.
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut table = line(HEADER);
    for row in &rows {
        table.push_str(&line(row.each_ref().map(String::as_str)));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::{ClassSummary, ClassVm, VmCounts};

    fn vm(index: i64, state: &str, error: Option<&str>) -> ClassVm {
        ClassVm {
            index,
            name: format!("bio-student-{index}-{}", 10000 + index),
            vmid: 10000 + index,
            node: "pve1".into(),
            state: state.into(),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_keeps_the_error_whole() {
        let class = ClassDetail {
            class: ClassSummary {
                id: 1,
                name: "Bio".into(),
            },
            counts: VmCounts::default(),
            vms: vec![
                vm(1, "created", None),
                vm(10, "failed", Some("clone failed: can't lock file")),
            ],
        };
        let table = vm_table(&class);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("#   NAME "), "{table}");
        assert_eq!(lines[1], "1   bio-student-1-10001   10001  pve1  created");
        assert_eq!(
            lines[2],
            "10  bio-student-10-10010  10010  pve1  failed   clone failed: can't lock file"
        );
    }
}
