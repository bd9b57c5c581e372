//! Request parameters: structs whose serde names are the exact PVE parameter names.
//! They become form or query pairs in one place ([`to_pairs`]), where booleans become `0`/`1`
//! (PVE rejects `true`: "type check ('boolean') failed - got 'true'").

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};

/// Turns a parameter struct into name/value pairs; `None` fields are left out.
pub(crate) fn to_pairs<T: Serialize>(value: &T) -> Result<Vec<(String, String)>, String> {
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(map) = json else {
        return Err("parameters must serialize to an object".into());
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            other => return Err(format!("parameter '{k}' has a non-scalar value {other}")),
        };
        out.push((k, text));
    }
    Ok(out)
}

fn expose<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_str(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

/// `POST /nodes/{node}/qemu/{vmid}/clone`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CloneParams {
    /// VMID of the new VM (allocate it yourself; `nextid` is racy).
    pub newid: u32,
    /// Name of the new VM (DNS name: letters, digits, `-`, dots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description (also a good place for an ownership marker: clone has no `tags`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Full copy (`Some(true)`) or linked clone (`Some(false)`); PVE's default: linked for templates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
    /// Pool to add the VM to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Clone from this snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapname: Option<String>,
    /// Target storage (full clones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Target node (needs shared storage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Target format `raw`/`qcow2`/`vmdk` (full clones only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// I/O limit in KiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwlimit: Option<u64>,
}

impl CloneParams {
    /// A linked clone (`full=0`) to `newid`.
    pub fn linked(newid: u32) -> Self {
        CloneParams {
            newid,
            full: Some(false),
            ..Default::default()
        }
    }

    /// A full clone (`full=1`) to `newid`.
    pub fn full(newid: u32) -> Self {
        CloneParams {
            newid,
            full: Some(true),
            ..Default::default()
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Sets the target node.
    pub fn target(mut self, node: impl Into<String>) -> Self {
        self.target = Some(node.into());
        self
    }

    /// Sets the target storage (full clones).
    pub fn storage(mut self, storage: impl Into<String>) -> Self {
        self.storage = Some(storage.into());
        self
    }

    /// Sets the pool.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }
}

/// VM settings shared by create and config update. Devices (`net0`, `scsi0`, `ipconfig0`,
/// `efidisk0`, …) go in `devices` under their API names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmSettings {
    /// Name (DNS name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `;`-separated tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Memory in MiB (a string: PVE 9 accepts `current=N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Balloon target in MiB (0 disables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon: Option<u64>,
    /// Cores per socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Hotplugged vCPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// CPU type (`host`, `x86-64-v2-AES`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// CPU limit (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpulimit: Option<f64>,
    /// CPU weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuunits: Option<u32>,
    /// NUMA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa: Option<bool>,
    /// Guest OS type (`l26`, `win11`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    /// SCSI controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scsihw: Option<String>,
    /// Guest agent property string (`1`, `enabled=1,fstrim_cloned_disks=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Boot order (`order=scsi0;net0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// `seabios` or `ovmf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<String>,
    /// Machine type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Display.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vga: Option<String>,
    /// KVM acceleration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm: Option<bool>,
    /// ACPI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi: Option<bool>,
    /// Start at boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    /// Protection against removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<bool>,
    /// Cloud-init user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciuser: Option<String>,
    /// Cloud-init password (sent, never printed).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    pub cipassword: Option<SecretString>,
    /// Cloud-init type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citype: Option<String>,
    /// Cloud-init package upgrade on first boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciupgrade: Option<bool>,
    /// SSH public keys, already URL-encoded as PVE requires (use [`VmSettings::ssh_keys`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sshkeys: Option<String>,
    /// Cloud-init DNS servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
    /// Cloud-init DNS search domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searchdomain: Option<String>,
    /// Devices and other keyed settings by API name (`net0`, `ipconfig0`, `scsi1`, `efidisk0`).
    #[serde(flatten)]
    pub devices: BTreeMap<String, String>,
}

impl VmSettings {
    /// Sets a device or indexed setting by API name, e.g. `("net0", "virtio,bridge=vmbr0")`.
    pub fn device(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.devices.insert(key.into(), value.into());
        self
    }

    /// Sets `sshkeys`, URL-encoding the keys the way PVE expects (`%20` for spaces, `%0A` newlines).
    pub fn ssh_keys(mut self, keys: &str) -> Self {
        let mut enc = String::with_capacity(keys.len() * 2);
        for b in keys.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                enc.push(char::from(b));
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        self.sshkeys = Some(enc);
        self
    }
}

/// `POST /nodes/{node}/qemu`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateVmParams {
    /// VMID.
    pub vmid: u32,
    /// Settings and devices.
    #[serde(flatten)]
    pub settings: VmSettings,
    /// Pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Default storage for `import-from`/new volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Start after creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Create as template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<bool>,
}

/// `POST`/`PUT /nodes/{node}/qemu/{vmid}/config`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigUpdate {
    /// Settings and devices to set.
    #[serde(flatten)]
    pub settings: VmSettings,
    /// Settings to remove, comma-separated (`ide2,unused0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// Only apply if the config digest still matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
}

/// `DELETE /nodes/{node}/qemu/{vmid}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestroyParams {
    /// Remove from backup/replication/HA config too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge: Option<bool>,
    /// Also destroy unreferenced disks with this VMID.
    #[serde(
        rename = "destroy-unreferenced-disks",
        skip_serializing_if = "Option::is_none"
    )]
    pub destroy_unreferenced_disks: Option<bool>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
}

/// `POST …/status/start`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartParams {
    /// Seconds to wait for the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
}

/// `POST …/status/stop`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StopParams {
    /// Seconds to wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
    /// Keep storage volumes active.
    #[serde(rename = "keepActive", skip_serializing_if = "Option::is_none")]
    pub keep_active: Option<bool>,
    /// Abort running `qmshutdown` tasks first.
    #[serde(rename = "overrule-shutdown", skip_serializing_if = "Option::is_none")]
    pub overrule_shutdown: Option<bool>,
}

/// `POST …/status/shutdown`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShutdownParams {
    /// Stop the VM hard if it has not shut down after `timeout`.
    #[serde(rename = "forceStop", skip_serializing_if = "Option::is_none")]
    pub force_stop: Option<bool>,
    /// Seconds to wait (PVE default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Keep storage volumes active.
    #[serde(rename = "keepActive", skip_serializing_if = "Option::is_none")]
    pub keep_active: Option<bool>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
}

/// `POST …/snapshot`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotParams {
    /// Snapshot name (`^[a-z][a-z0-9_-]+$`, at most 40 characters).
    pub snapname: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Save RAM state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmstate: Option<bool>,
}

/// `PUT …/resize`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResizeParams {
    /// Disk key (`scsi0`).
    pub disk: String,
    /// New size (`32G`) or increment (`+8G`).
    pub size: String,
    /// Only apply if the config digest still matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Ignore locks (root@pam only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skiplock: Option<bool>,
}

/// `GET /nodes/{node}/storage` filters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageListParams {
    /// Only storages supporting this content type (`images`, `iso`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Only enabled storages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Only this storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Only storages shared with this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// RRD time frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timeframe {
    /// Last hour (1-minute steps).
    Hour,
    /// Last day.
    Day,
    /// Last week.
    Week,
    /// Last month.
    Month,
    /// Last year.
    Year,
}

/// RRD consolidation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Consolidation {
    /// Average over each step.
    #[serde(rename = "AVERAGE")]
    Average,
    /// Maximum over each step.
    #[serde(rename = "MAX")]
    Max,
}

#[derive(Serialize)]
pub(crate) struct RrdParams {
    pub timeframe: Timeframe,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cf: Option<Consolidation>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn booleans_become_zero_or_one_and_names_are_exact() {
        let p = to_pairs(&ShutdownParams {
            force_stop: Some(true),
            timeout: Some(30),
            keep_active: Some(false),
            skiplock: None,
        })
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("forceStop".to_string(), "1".to_string()),
                ("keepActive".to_string(), "0".to_string()),
                ("timeout".to_string(), "30".to_string()),
            ]
        );
    }

    #[test]
    fn devices_flatten_into_their_api_names_and_secrets_are_sent_not_printed() {
        let u = ConfigUpdate {
            settings: VmSettings {
                cipassword: Some(SecretString::from("hunter2")),
                ..Default::default()
            }
            .device("net0", "virtio,bridge=vmbr0")
            .ssh_keys("ssh-ed25519 AAAA x@y"),
            delete: Some("ide2".into()),
            ..Default::default()
        };
        let p = to_pairs(&u).unwrap();
        assert!(p.contains(&("net0".into(), "virtio,bridge=vmbr0".into())));
        assert!(p.contains(&("cipassword".into(), "hunter2".into())));
        assert!(p.contains(&("sshkeys".into(), "ssh-ed25519%20AAAA%20x%40y".into())));
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
