//! `labfleet demo`: the whole system in one process on the embedded default (SQLite and the
//! in-process queue in the data directory) against a simulated Proxmox cluster whose state lives
//! in `<data_dir>/sim`. It deploys a class with the same progress bar and table as `labfleet
//! deploy`, then keeps serving the API so it can be explored, until Ctrl-C or SIGTERM.
//!
//! Every run deploys a new class: "Demo class", then "Demo class 2", … The simulator keeps its
//! VMs between runs, so earlier demo classes are still there and a rerun must not be a no-op
//! (the progress bar is the point of the demo); a distinct name keeps the VM names of the runs
//! apart. Old demo classes can be removed with `DELETE /api/classes/{id}`.

use std::{io::ErrorKind, process::ExitCode};

use anyhow::Context;
use clap::Args;
use labfleet_clusters::secrets::{read_or_create_private, IfEmpty};
use labfleet_config::Settings;
use secrecy::SecretString;

use super::{
    client::{ApiClient, NewClass},
    deploy::{deploy, Deployment, Method},
};
use crate::{
    lab::{Lab, LabOptions},
    shutdown,
};

/// The simulator's template every demo class is cloned from.
const DEMO_TEMPLATE: i64 = 104;

/// The name of the first demo class; later runs add a number.
const DEMO_CLASS: &str = "Demo class";

/// Options of `labfleet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated Proxmox nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// VMs in the demo class.
    #[arg(long, default_value_t = 20)]
    count: u32,
    /// How the VMs are made.
    #[arg(long, value_enum, default_value_t = Method::LinkedClone)]
    method: Method,
    /// The simulator's latency factor: 1 = Proxmox-like, 0 = instant.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

/// The demo's admin token file in the data directory (like the secret key, it outlives a run).
const TOKEN_FILE: &str = "demo-admin.token";

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    if settings.admin_token.is_none() {
        // The same token at every start, so an exported LABFLEET_TOKEN keeps working.
        let path = settings.data_dir.join(TOKEN_FILE);
        let token = read_or_create_private(&path, IfEmpty::Replace, || {
            hex::encode(rand::random::<[u8; 24]>())
        })
        .with_context(|| format!("cannot keep the demo's admin token in {}", path.display()))?;
        settings.admin_token = Some(SecretString::from(token));
    }
    let stop = shutdown::on_signal();
    let bind = settings.bind;
    let options = LabOptions {
        nodes: args.nodes,
        time_scale: args.time_scale,
        sim_dir: settings.data_dir.join("sim"),
        // The demo shows real disk usage: linked clones as qcow2 overlays of the template.
        real_disks: true,
    };
    println!(
        "starting a simulated Proxmox VE cluster ({} nodes) and labfleet in {}",
        args.nodes,
        settings.data_dir.display()
    );
    let lab = Lab::start(settings, options).await.map_err(|e| {
        if caused_by_taken_address(&e) {
            anyhow::anyhow!(
                "{bind} is already in use (another labfleet?): stop it, or choose another address \
                 with LABFLEET_BIND=127.0.0.1:8081"
            )
        } else {
            e
        }
    })?;
    println!("labfleet API: {}", lab.api_url);
    println!("admin token:  {}", lab.admin_token);
    println!(
        "  export LABFLEET_SERVER={} LABFLEET_TOKEN={}",
        lab.api_url, lab.admin_token
    );

    let shown = show_deployment(&lab, &args, &stop).await;
    if let Err(e) = &shown {
        eprintln!("error: {e:#}");
    }
    if !stop.is_cancelled() {
        println!(
            "labfleet keeps serving on {} (try `{} deploy --template {DEMO_TEMPLATE} \
             --count 5 --method linked_clone --name mine`); Ctrl-C stops it",
            lab.api_url,
            own_command()
        );
        stop.cancelled().await;
    }
    println!("stopping");
    lab.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Deploys this run's demo class and prints its table (a failed VM is shown, not fatal: the
/// demo keeps serving either way).
async fn show_deployment(
    lab: &Lab,
    args: &DemoArgs,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let client = ApiClient::new(&lab.api_url, &lab.admin_token)?;
    let earlier = client
        .classes()
        .await?
        .iter()
        .filter(|c| c.name == DEMO_CLASS || c.name.starts_with(&format!("{DEMO_CLASS} ")))
        .count();
    let class = NewClass {
        name: class_name(earlier),
        description: Some("deployed by labfleet demo".into()),
        template_id: DEMO_TEMPLATE,
        pool_size: args.count,
        deployment_method: Some(args.method.api_name()),
        deployment_node: None,
        deployment_cluster: Some(crate::lab::SIM_CLUSTER.into()),
        start: false,
    };
    match deploy(&client, &class, stop).await? {
        Deployment::Finished(finished) => {
            finished.report();
        }
        Deployment::Interrupted { .. } => {}
    }
    Ok(())
}

/// The demo class's name when `earlier` demo classes exist.
fn class_name(earlier: usize) -> String {
    match earlier {
        0 => DEMO_CLASS.to_string(),
        n => format!("{DEMO_CLASS} {}", n + 1),
    }
}

/// How to run this program again from a shell: its file name (`labfleet`) when its directory is
/// on PATH (e.g. after `cargo install --path .`), else its full path (under `cargo run`,
/// `…/target/release/labfleet`).
pub(crate) fn own_command() -> String {
    match std::env::current_exe() {
        Ok(exe) => command_for(&exe, std::env::var_os("PATH").as_deref()),
        Err(_) => "labfleet".to_string(),
    }
}

/// [`own_command`] for the executable `exe` and the search path `path`.
fn command_for(exe: &std::path::Path, path: Option<&std::ffi::OsStr>) -> String {
    let on_path = exe.parent().is_some_and(|dir| {
        path.is_some_and(|path| {
            std::env::split_paths(path).any(|p| {
                p.as_path() == dir || std::fs::canonicalize(&p).is_ok_and(|c| c.as_path() == dir)
            })
        })
    });
    match exe.file_name() {
        Some(name) if on_path => name.to_string_lossy().into_owned(),
        _ => exe.display().to_string(),
    }
}

/// True when the error comes from binding an address another process holds.
fn caused_by_taken_address(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::AddrInUse)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_classes_are_numbered_from_the_second_run() {
        assert_eq!(class_name(0), "Demo class");
        assert_eq!(class_name(1), "Demo class 2");
        assert_eq!(class_name(4), "Demo class 5");
    }

    #[test]
    fn the_suggested_command_is_the_bare_name_only_when_on_path() {
        let exe = std::path::Path::new("/opt/lf/bin/labfleet");
        let path = std::ffi::OsString::from("/usr/bin:/opt/lf/bin");
        assert_eq!(command_for(exe, Some(&path)), "labfleet");
        let elsewhere = std::ffi::OsString::from("/usr/bin");
        assert_eq!(command_for(exe, Some(&elsewhere)), "/opt/lf/bin/labfleet");
        assert_eq!(command_for(exe, None), "/opt/lf/bin/labfleet");
    }

    #[test]
    fn a_taken_address_is_recognised_through_the_context_chain() {
        let taken = anyhow::Error::from(std::io::Error::from(ErrorKind::AddrInUse))
            .context("cannot listen on 127.0.0.1:8080");
        assert!(caused_by_taken_address(&taken));
        let other = anyhow::anyhow!("cannot open the database");
        assert!(!caused_by_taken_address(&other));
    }
}
