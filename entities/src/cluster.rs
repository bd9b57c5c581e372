//! A registered Proxmox VE cluster. Secret columns hold ciphertext only (see `labfleet-clusters`).

use sea_orm::entity::prelude::*;

/// One row of `clusters`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "clusters")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub cluster_id: String,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub username: String,
    pub password_enc: Option<String>,
    pub token_id: Option<String>,
    pub token_secret_enc: Option<String>,
    pub verify_ssl: bool,
    pub tls_fingerprint: Option<String>,
    pub ssh_user: String,
    pub ssh_port: i32,
    pub ssh_password_enc: Option<String>,
    pub ssh_private_key_enc: Option<String>,
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
    /// Idle auto-shutdown threshold (CPU percent) for this cluster's VMs; unset: the setting.
    pub idle_cpu_percent: Option<f64>,
    /// Idle auto-shutdown window in minutes for this cluster's VMs; unset: the setting.
    pub idle_minutes: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
