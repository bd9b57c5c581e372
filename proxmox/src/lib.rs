//! labfleet's Proxmox VE client: a typed REST client (token or ticket auth, pinned or checked
//! TLS, classified errors, task waiting) and a pooled SSH executor for node-side commands.
//! It shares no code with the simulator: both read the real API independently.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod drive;
pub mod endpoints;
pub mod error;
pub mod params;
pub mod qemu;
pub mod ssh;
pub mod tasks;
pub mod tls;
pub mod types;

pub use auth::Credentials;
pub use client::{ClientConfig, ProxmoxClient};
pub use drive::Drive;
pub use error::{ProxmoxError, RequestContext};
pub use params::{
    CloneParams, ConfigUpdate, Consolidation, CreateVmParams, DestroyParams, ResizeParams,
    ShutdownParams, SnapshotParams, StartParams, StopParams, StorageListParams, Timeframe,
    VmSettings,
};
pub use tasks::{CopyProgress, TaskLog, Upid};
pub use tls::Fingerprint;
pub use types::*;
