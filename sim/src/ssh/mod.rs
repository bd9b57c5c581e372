//! Per-node SSH servers (russh): `root` with the cluster password or a key from
//! `<data_dir>/sim/authorized_keys`; runs `qm` (mapped onto the same API code, synchronous like
//! the real CLI), `qemu-img create/info` and `pvesm path`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Server as _, Session};
use russh::{Channel, ChannelId};
use sha2::{Digest, Sha256};

use crate::sim::Sim;

mod commands;

#[derive(Clone)]
struct NodeServer {
    sim: Arc<Sim>,
    node: String,
}

impl russh::server::Server for NodeServer {
    type Handler = NodeServer;
    fn new_client(&mut self, _: Option<SocketAddr>) -> Self::Handler {
        self.clone()
    }
}

fn authorized(sim: &Sim, key: &PublicKey) -> bool {
    let path = sim.data_dir.join("sim").join("authorized_keys");
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    text.lines()
        .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
        .any(|k| k.key_data() == key.key_data())
}

impl russh::server::Handler for NodeServer {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if user == "root" && password == self.sim.secrets.root_password {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user == "root" && authorized(&self.sim, key.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let handle = session.handle();
        let (sim, node) = (self.sim.clone(), self.node.clone());
        let cmd = String::from_utf8_lossy(data).into_owned();
        tokio::spawn(async move {
            let out = commands::run_command(&sim, &node, &cmd).await;
            if !out.stdout.is_empty() {
                let _ = handle
                    .data(channel, bytes::Bytes::from(out.stdout.into_bytes()))
                    .await;
            }
            if !out.stderr.is_empty() {
                let _ = handle
                    .extended_data(channel, 1, bytes::Bytes::from(out.stderr.into_bytes()))
                    .await;
            }
            let _ = handle.exit_status_request(channel, out.code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}

/// A stable per-node host key derived from the simulator's secret.
fn host_key(sim: &Sim, node: &str) -> PrivateKey {
    let seed: [u8; 32] =
        Sha256::digest(format!("ssh-host-key:{}:{node}", sim.secrets.ticket_key).as_bytes()).into();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// Starts the SSH server of one node; returns its port and task.
pub async fn serve(
    sim: Arc<Sim>,
    node: String,
    ip: IpAddr,
    port: u16,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(u16, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding {ip}:{port}"))?;
    let port = listener.local_addr()?.port();
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key(&sim, &node)],
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        nodelay: true,
        ..Default::default()
    });
    let mut server = NodeServer { sim, node };
    let join = tokio::spawn(async move {
        let running = server.run_on_socket(config, &listener);
        let handle = running.handle();
        tokio::select! {
            _ = running => {}
            _ = shutdown.changed() => handle.shutdown("simulator stopping".into()),
        }
    });
    Ok((port, join))
}
