//! One [`ProxmoxBackend`] per registered cluster per process, reused by every job: its client
//! keeps its HTTP connections and login ticket, its SSH pool its sessions, so building them per
//! job would log in once per VM. A backend is rebuilt when the cluster's row changes (new
//! credentials, host or TLS settings), which its `updated_at` tells.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use labfleet_clusters::{ClusterError, ClusterStore};
use labfleet_fleet::{BackendFactory, Connected, FactoryError};
use labfleet_proxmox::ssh::{SshAuth, SshConfig, SshPool};
use tokio::sync::Mutex;

use crate::{connection::client_for, ProxmoxBackend};

/// How the adapter paces its waits.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Longest gap between two polls of a task's status: whoever waits on a critical path (the
    /// last clone of a class) learns of the end sooner, for a few more polls.
    pub task_poll_max: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            task_poll_max: Duration::from_secs(2),
        }
    }
}

/// A backend and the `updated_at` of the row it was built from.
type Built = (DateTime<Utc>, Arc<ProxmoxBackend>);

/// The backends of the registered Proxmox clusters.
pub struct ProxmoxBackends {
    clusters: ClusterStore,
    tuning: Tuning,
    built: Mutex<HashMap<i64, Built>>,
}

impl ProxmoxBackends {
    /// Backends for the clusters of this registry.
    pub fn new(clusters: ClusterStore, tuning: Tuning) -> ProxmoxBackends {
        ProxmoxBackends {
            clusters,
            tuning,
            built: Mutex::default(),
        }
    }

    /// The cluster's row and its backend as the concrete type (for this crate's own callers and
    /// the binary's tools).
    pub async fn proxmox(
        &self,
        cluster_db_id: i64,
    ) -> Result<(labfleet_entities::cluster::Model, Arc<ProxmoxBackend>), FactoryError> {
        let row = self
            .clusters
            .get(cluster_db_id)
            .await
            .map_err(|e| match e {
                ClusterError::NotFound(_) => FactoryError::Gone(e.to_string()),
                ClusterError::Db(_) => FactoryError::Unavailable(e.to_string()),
                e => FactoryError::Unusable(e.to_string()),
            })?;
        let mut built = self.built.lock().await;
        if let Some((from, backend)) = built.get(&cluster_db_id) {
            if *from == row.updated_at {
                return Ok((row, backend.clone()));
            }
        }
        let unusable = |e: &dyn std::fmt::Display| {
            FactoryError::Unusable(format!("cluster {}: {e}", row.cluster_id))
        };
        let secrets = self.clusters.secrets_of(&row).map_err(|e| unusable(&e))?;
        let client = client_for(&row, &secrets)?;
        let auth = match (secrets.ssh_private_key, secrets.ssh_password) {
            (Some(pem), _) => Some(SshAuth::PrivateKey {
                pem,
                passphrase: None,
            }),
            (None, Some(password)) => Some(SshAuth::Password(password)),
            (None, None) => None,
        };
        let ssh = match auth {
            None => Err(format!(
                "SSH to cluster {}: no SSH password or private key is stored",
                row.cluster_id
            )),
            Some(auth) => SshPool::new(SshConfig {
                user: row.ssh_user.clone(),
                auth,
                connect_timeout: Duration::from_secs(10),
            })
            .map(Arc::new)
            .map_err(|e| format!("SSH to cluster {}: {e}", row.cluster_id)),
        };
        let port = u16::try_from(row.ssh_port).unwrap_or(22);
        let backend = Arc::new(ProxmoxBackend::new(client, self.tuning).with_ssh(
            ssh,
            port,
            row.ssh_host_key_fingerprint.clone(),
        ));
        built.insert(cluster_db_id, (row.updated_at, backend.clone()));
        Ok((row, backend))
    }
}

#[async_trait]
impl BackendFactory for ProxmoxBackends {
    async fn connect(&self, cluster_db_id: i64) -> Result<Connected, FactoryError> {
        let (cluster, backend) = self.proxmox(cluster_db_id).await?;
        Ok(Connected { cluster, backend })
    }
}
