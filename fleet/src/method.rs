//! The three ways to make a class's VMs: `config_clone` (the default), `linked_clone` and
//! `full_clone`.

use serde::{Deserialize, Serialize};

/// How a class's VMs are made from the template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployMethod {
    /// qcow2 overlays made over SSH plus a VM created with a copy of the template's config.
    ConfigClone,
    /// Proxmox linked clone (`full=0`): shares the template's base image.
    LinkedClone,
    /// Proxmox full clone (`full=1`): an independent copy of every disk.
    FullClone,
}

impl DeployMethod {
    /// Every method, in the order the API documents them.
    pub const ALL: [DeployMethod; 3] = [
        DeployMethod::ConfigClone,
        DeployMethod::LinkedClone,
        DeployMethod::FullClone,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployMethod::ConfigClone => "config_clone",
            DeployMethod::LinkedClone => "linked_clone",
            DeployMethod::FullClone => "full_clone",
        }
    }

    /// Parses a stored or API name.
    pub fn parse(s: &str) -> Option<DeployMethod> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}
