//! A Proxmox client from a registered cluster's settings and decrypted credentials (an API token
//! when one is set, else the password), and the connection test.

use labfleet_clusters::store::ClusterSecrets;
use labfleet_entities::cluster;
use labfleet_fleet::{backend::ProbeError, backend::ProbeReport, FactoryError};
use labfleet_proxmox::{ClientConfig, Credentials, ProxmoxClient, ProxmoxError};
use secrecy::ExposeSecret;

/// A client for the cluster's API.
pub fn client_for(c: &cluster::Model, s: &ClusterSecrets) -> Result<ProxmoxClient, FactoryError> {
    let credentials = match (&c.token_id, &s.token_secret, &s.password) {
        (Some(id), Some(secret), _) => {
            Credentials::token(id.clone(), secret.expose_secret().to_string())
        }
        (_, _, Some(password)) => {
            Credentials::password(c.username.clone(), password.expose_secret().to_string())
        }
        _ => {
            return Err(FactoryError::NoCredentials(
                "no credentials are stored for this cluster".into(),
            ))
        }
    };
    let mut config =
        ClientConfig::for_host(&c.host, c.port as u16, credentials).verify_ssl(c.verify_ssl);
    if let Some(fp) = &c.tls_fingerprint {
        config = config.tls_fingerprint(fp.clone());
    }
    ProxmoxClient::new(config)
        .map_err(|e| FactoryError::Unusable(format!("cluster {}: {e}", c.cluster_id)))
}

/// Logs in (the first request does), reads the version and the nodes.
pub(crate) async fn probe(client: &ProxmoxClient) -> Result<ProbeReport, ProbeError> {
    let version = client.version().await.map_err(probe_error)?;
    let nodes = client.nodes().await.map_err(probe_error)?;
    let mut node_names: Vec<String> = nodes.into_iter().map(|n| n.node).collect();
    node_names.sort();
    Ok(ProbeReport {
        version: if version.release.is_empty() {
            version.version.clone()
        } else {
            version.release
        },
        full_version: version.version,
        node_names,
    })
}

fn probe_error(e: ProxmoxError) -> ProbeError {
    match e {
        ProxmoxError::AuthFailed { .. } => ProbeError::AuthFailed(e.to_string()),
        ProxmoxError::Tls { .. } => ProbeError::Tls(e.to_string()),
        e => ProbeError::Unreachable(e.to_string()),
    }
}
