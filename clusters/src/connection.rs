//! Talking to a registered cluster: a Proxmox client built from its settings and decrypted
//! credentials (an API token when one is set, else the password), and the connection test.

use std::time::Duration;

use labfleet_entities::cluster;
use labfleet_proxmox::{ClientConfig, Credentials, ProxmoxClient, ProxmoxError};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::store::ClusterSecrets;

/// What a successful connection test found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionReport {
    /// Proxmox VE release (`8.4`), as the older lab tool showed it.
    pub version: String,
    /// Full package version (`8.4.1`).
    pub full_version: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Node names, sorted.
    pub node_names: Vec<String>,
}

/// Why a connection test failed; the text names the cause and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The cluster has no usable credentials.
    #[error("no credentials are stored for this cluster")]
    NoCredentials,
    /// Proxmox could not be reached or refused us.
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
    /// The test took too long.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
}

impl ConnectionError {
    /// A snake_case code for the API's error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectionError::NoCredentials => "cluster_no_credentials",
            ConnectionError::Proxmox(ProxmoxError::AuthFailed { .. }) => "cluster_auth_failed",
            ConnectionError::Proxmox(ProxmoxError::Tls { .. }) => "cluster_tls_error",
            ConnectionError::Proxmox(_) | ConnectionError::Timeout(..) => "cluster_unreachable",
        }
    }
}

/// A client for the cluster's API.
pub fn client_for(
    c: &cluster::Model,
    s: &ClusterSecrets,
) -> Result<ProxmoxClient, ConnectionError> {
    let credentials = match (&c.token_id, &s.token_secret, &s.password) {
        (Some(id), Some(secret), _) => {
            Credentials::token(id.clone(), secret.expose_secret().to_string())
        }
        (_, _, Some(password)) => {
            Credentials::password(c.username.clone(), password.expose_secret().to_string())
        }
        _ => return Err(ConnectionError::NoCredentials),
    };
    let mut config =
        ClientConfig::for_host(&c.host, c.port as u16, credentials).verify_ssl(c.verify_ssl);
    if let Some(fp) = &c.tls_fingerprint {
        config = config.tls_fingerprint(fp.clone());
    }
    Ok(ProxmoxClient::new(config)?)
}

/// How long the connection test may take in all. It is the one hypervisor call the API waits
/// for (the registry's "test" button shows its result), so it is bounded well below an HTTP
/// client's patience.
pub const CONNECTION_TEST_LIMIT: Duration = Duration::from_secs(10);

/// Logs in, reads the version and the nodes, within [`CONNECTION_TEST_LIMIT`].
pub async fn test_connection(
    c: &cluster::Model,
    s: &ClusterSecrets,
) -> Result<ConnectionReport, ConnectionError> {
    const LIMIT: Duration = CONNECTION_TEST_LIMIT;
    let client = client_for(c, s)?;
    let probe = async {
        let version = client.version().await?;
        let nodes = client.nodes().await?;
        Ok::<_, ProxmoxError>((version, nodes))
    };
    let (version, nodes) = tokio::time::timeout(LIMIT, probe)
        .await
        .map_err(|_| ConnectionError::Timeout(format!("{}:{}", c.host, c.port), LIMIT))??;
    let mut node_names: Vec<String> = nodes.into_iter().map(|n| n.node).collect();
    node_names.sort();
    Ok(ConnectionReport {
        version: if version.release.is_empty() {
            version.version.clone()
        } else {
            version.release
        },
        full_version: version.version,
        nodes: node_names.len(),
        node_names,
    })
}
