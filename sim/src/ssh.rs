//! Per-node SSH servers (russh) running `qm`, `qemu-img` and `pvesm` against the cluster state.

use std::net::IpAddr;
use std::sync::Arc;

use crate::sim::Sim;

/// Starts the SSH server of one node; returns its port and task.
pub async fn serve(
    _sim: Arc<Sim>,
    _node: String,
    _ip: IpAddr,
    _port: u16,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    anyhow::bail!("SSH is not implemented yet")
}
