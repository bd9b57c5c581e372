//! A cluster as the API shows it: every setting, never a secret, and which secrets are set.

use labfleet_entities::cluster;
use serde::Serialize;

/// One listed cluster (`id` is the cluster_id and `db_id` the row id, as in the older lab tool).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    pub id: String,
    pub db_id: i64,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub user: String,
    pub token_id: Option<String>,
    pub verify_ssl: bool,
    pub tls_fingerprint: Option<String>,
    pub ssh_user: String,
    pub ssh_port: i32,
    pub ssh_host_key_fingerprint: Option<String>,
    pub is_active: bool,
    pub is_default: bool,
    pub priority: i32,
    pub allow_vm_deployment: bool,
    pub allow_template_sync: bool,
    pub allow_iso_sync: bool,
    pub auto_shutdown_enabled: bool,
    pub default_storage: Option<String>,
    pub template_storage: Option<String>,
    pub description: Option<String>,
    pub vmid_range_start: i64,
    pub vmid_range_end: i64,
    /// Idle auto-shutdown CPU threshold (percent); absent: the scheduler's default.
    pub idle_cpu_percent: Option<f64>,
    /// Idle auto-shutdown window (minutes); absent: the scheduler's default.
    pub idle_minutes: Option<i32>,
    /// A password is stored.
    pub has_password: bool,
    /// An API token secret is stored.
    pub has_token_secret: bool,
    /// An SSH password is stored.
    pub has_ssh_password: bool,
    /// An SSH private key is stored.
    pub has_ssh_private_key: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<&cluster::Model> for ClusterView {
    fn from(c: &cluster::Model) -> Self {
        ClusterView {
            id: c.cluster_id.clone(),
            db_id: c.id,
            name: c.name.clone(),
            host: c.host.clone(),
            port: c.port,
            user: c.username.clone(),
            token_id: c.token_id.clone(),
            verify_ssl: c.verify_ssl,
            tls_fingerprint: c.tls_fingerprint.clone(),
            ssh_user: c.ssh_user.clone(),
            ssh_port: c.ssh_port,
            ssh_host_key_fingerprint: c.ssh_host_key_fingerprint.clone(),
            is_active: c.is_active,
            is_default: c.is_default,
            priority: c.priority,
            allow_vm_deployment: c.allow_vm_deployment,
            allow_template_sync: c.allow_template_sync,
            allow_iso_sync: c.allow_iso_sync,
            auto_shutdown_enabled: c.auto_shutdown_enabled,
            default_storage: c.default_storage.clone(),
            template_storage: c.template_storage.clone(),
            description: c.description.clone(),
            vmid_range_start: c.vmid_range_start,
            vmid_range_end: c.vmid_range_end,
            idle_cpu_percent: c.idle_cpu_percent,
            idle_minutes: c.idle_minutes,
            has_password: c.password_enc.is_some(),
            has_token_secret: c.token_secret_enc.is_some(),
            has_ssh_password: c.ssh_password_enc.is_some(),
            has_ssh_private_key: c.ssh_private_key_enc.is_some(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}
