//! One Proxmox client and one SSH pool per cluster per process, reused by every job: a client
//! keeps its HTTP connections and its login ticket, a pool its SSH sessions, so building them per
//! job would log in once per VM. Both are rebuilt when the cluster's row changes (new
//! credentials, host or TLS settings).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use labfleet_entities::cluster;
use labfleet_proxmox::{
    ssh::{SshAuth, SshConfig, SshPool},
    ProxmoxClient,
};
use tokio::sync::Mutex;

use crate::{
    connection::{client_for, ConnectionError},
    store::{ClusterError, ClusterStore},
};

/// Something built from a cluster row, keyed by row id, with the row's `updated_at`.
type BuiltFrom<T> = Mutex<HashMap<i64, (DateTime<Utc>, T)>>;

/// Clients and SSH pools by cluster row id.
#[derive(Default)]
pub(crate) struct ClientCache {
    clients: BuiltFrom<ProxmoxClient>,
    ssh: BuiltFrom<Arc<SshPool>>,
}

/// Why no client could be had for a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The cluster row could not be read (or no longer exists).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster has no usable credentials or settings.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The cluster has no usable SSH credentials.
    #[error("SSH to cluster {0}: {1}")]
    Ssh(String, String),
}

impl ConnectError {
    /// True when trying again later may help (the database was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Cluster(ClusterError::Db(_)))
    }
}

impl ClusterStore {
    /// The cluster's row and a client for it, reused while the row is unchanged.
    pub async fn connect(
        &self,
        db_id: i64,
    ) -> Result<(cluster::Model, ProxmoxClient), ConnectError> {
        let row = self.get(db_id).await?;
        let mut clients = self.clients.clients.lock().await;
        if let Some((built_from, client)) = clients.get(&db_id) {
            if *built_from == row.updated_at {
                return Ok((row, client.clone()));
            }
        }
        let secrets = self.secrets_of(&row)?;
        let client = client_for(&row, &secrets)?;
        clients.insert(db_id, (row.updated_at, client.clone()));
        Ok((row, client))
    }

    /// The cluster's row and an SSH pool for its nodes (password or key auth from the row),
    /// reused while the row is unchanged.
    pub async fn ssh(&self, db_id: i64) -> Result<(cluster::Model, Arc<SshPool>), ConnectError> {
        let row = self.get(db_id).await?;
        let mut pools = self.clients.ssh.lock().await;
        if let Some((built_from, pool)) = pools.get(&db_id) {
            if *built_from == row.updated_at {
                return Ok((row, pool.clone()));
            }
        }
        let secrets = self.secrets_of(&row)?;
        let auth = match (secrets.ssh_private_key, secrets.ssh_password) {
            (Some(pem), _) => SshAuth::PrivateKey {
                pem,
                passphrase: None,
            },
            (None, Some(password)) => SshAuth::Password(password),
            (None, None) => {
                return Err(ConnectError::Ssh(
                    row.cluster_id.clone(),
                    "no SSH password or private key is stored".into(),
                ))
            }
        };
        let pool = SshPool::new(SshConfig {
            user: row.ssh_user.clone(),
            auth,
            connect_timeout: std::time::Duration::from_secs(10),
        })
        .map_err(|e| ConnectError::Ssh(row.cluster_id.clone(), e.to_string()))?;
        let pool = Arc::new(pool);
        pools.insert(db_id, (row.updated_at, pool.clone()));
        Ok((row, pool))
    }
}

/// Shared by every clone of a `ClusterStore`.
pub(crate) type SharedClientCache = Arc<ClientCache>;
