//! `labfleet import-clusters clusters.json`: the legacy file (a JSON array of `{id, name, host,
//! port, user, password, verify_ssl, is_default, is_active}`) imported once. A cluster whose id is
//! already registered is left alone, so running the import again changes nothing; bad entries are
//! reported by index and skipped.

use serde::Deserialize;
use serde_json::Value;

use crate::{
    input::ClusterInput,
    store::{ClusterError, ClusterStore},
};

/// One entry of the legacy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyCluster {
    id: String,
    name: Option<String>,
    host: String,
    port: Option<i64>,
    user: Option<String>,
    password: Option<secrecy::SecretString>,
    verify_ssl: Option<bool>,
    is_default: Option<bool>,
    is_active: Option<bool>,
}

/// What happened to each entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// cluster_ids created.
    pub imported: Vec<String>,
    /// cluster_ids already registered.
    pub unchanged: Vec<String>,
    /// `(index, reason)` of entries skipped.
    pub skipped: Vec<(usize, String)>,
}

/// Imports the legacy JSON text.
pub async fn import(store: &ClusterStore, json: &str) -> Result<ImportReport, ImportError> {
    let entries: Vec<Value> =
        serde_json::from_str(json).map_err(|e| ImportError::NotAList(e.to_string()))?;
    let mut report = ImportReport::default();
    for (index, entry) in entries.into_iter().enumerate() {
        let legacy: LegacyCluster = match serde_json::from_value(entry) {
            Ok(l) => l,
            Err(e) => {
                report.skipped.push((index, e.to_string()));
                continue;
            }
        };
        if store.get_by_cluster_id(&legacy.id).await?.is_some() {
            report.unchanged.push(legacy.id);
            continue;
        }
        let input = ClusterInput {
            name: Some(legacy.name.unwrap_or_else(|| legacy.id.clone())),
            cluster_id: Some(legacy.id.clone()),
            host: Some(legacy.host),
            port: Some(legacy.port.unwrap_or(8006)),
            user: Some(legacy.user.unwrap_or_else(|| "root@pam".into())),
            password: legacy.password,
            verify_ssl: Some(legacy.verify_ssl.unwrap_or(false)),
            is_default: Some(legacy.is_default.unwrap_or(false)),
            is_active: Some(legacy.is_active.unwrap_or(true)),
            ..Default::default()
        };
        match store.create(input).await {
            Ok(c) => report.imported.push(c.cluster_id),
            Err(ClusterError::Input(e)) => report.skipped.push((index, e.message)),
            Err(ClusterError::Conflict(msg)) => report.skipped.push((index, msg)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// The file could not be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a JSON array.
    #[error("the file is not a JSON array of clusters: {0}")]
    NotAList(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] ClusterError),
}
