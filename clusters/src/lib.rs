//! The cluster registry: Proxmox VE clusters an admin registers, stored in the database and used
//! live (no restart). Secrets (password, API token secret, SSH password and key) are encrypted at
//! rest and never leave this crate in clear text except towards Proxmox itself.

pub mod import;
pub mod input;
pub mod inventory;
pub mod secrets;
pub mod store;
pub mod view;

pub use input::{ClusterInput, InputError};
pub use inventory::{sync_cluster, Inventory, InventoryFilter, SyncReport, SyncScope};
pub use secrets::{SecretBox, SecretKeyError};
pub use store::{ClusterError, ClusterStore};
pub use view::ClusterView;
