//! `config_clone` (the default method, as in the older lab tool): one qcow2 overlay per template
//! disk, made over SSH with the template's base image as backing file and named the way PVE names
//! linked clones on file storages (`<tmpl>/base-<tmpl>-disk-N.qcow2/<new>/vm-<new>-disk-N.qcow2`,
//! see `docs/proxmox.md`, "Clones"), so PVE still refuses to delete a template its clones depend
//! on; then a VM created with a copy of the template's config pointing at the overlays, with
//! fresh MAC addresses, a fresh SMBIOS uuid and VM generation id, its name and our marker. No
//! storage lock is taken for the disks (only the new cloud-init drive is allocated), which is why
//! it scales.

use std::time::Duration;

use labfleet_fleet::{BackendError, GuestRef};
use labfleet_proxmox::{
    endpoints,
    ssh::{SshPool, SshTarget},
    CreateVmParams, Upid, VmSettings,
};
use rand::Rng;

use crate::{errors::classify, vmid, ProxmoxBackend};

/// Longest an SSH command may take (qemu-img create of an overlay is instant).
const SSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a config clone needs to know.
pub(crate) struct ConfigClone<'a> {
    pub backend: &'a ProxmoxBackend,
    pub template: &'a GuestRef,
    pub target: &'a GuestRef,
    pub name: &'a str,
    pub description: String,
}

impl ConfigClone<'_> {
    /// Makes the overlays and starts the create task.
    pub async fn create(&self) -> Result<Upid, BackendError> {
        let client = &self.backend.client;
        let tvmid = vmid(self.template)?;
        let newid = vmid(self.target)?;
        let config = client
            .qemu_config(&self.template.node, tvmid, false, None)
            .await
            .map_err(classify)?;
        let pool = self.backend.ssh()?;
        let target = self.ssh_target().await?;

        let mut settings = VmSettings {
            name: Some(self.name.to_string()),
            description: Some(self.description.clone()),
            ..Default::default()
        };
        let mut disk_index = 0;
        for (key, value) in config.0.iter() {
            let Some(value) = value
                .as_str()
                .map(str::to_string)
                .or_else(|| (!value.is_null()).then(|| value.to_string()))
            else {
                continue;
            };
            if SKIPPED.contains(&key.as_str()) || key.starts_with("unused") {
                continue;
            }
            // Read-only or unknown to create (`meta`, `vmstate`, …): Proxmox sets those itself.
            if endpoints::QEMU_CREATE.param(key).is_none() {
                tracing::debug!(key, "template config key not copied to the new VM");
                continue;
            }
            let copied = if is_disk_key(key) {
                let (volid, opts) = value.split_once(',').unwrap_or((value.as_str(), ""));
                let cdrom = opts.split(',').any(|o| o == "media=cdrom");
                if volid.contains("cloudinit") {
                    // Cloud-init drives are always made anew (PVE does the same on clone).
                    let storage = volid.split(':').next().unwrap_or_default();
                    format!("{storage}:cloudinit,media=cdrom")
                } else if cdrom || volid == "none" {
                    value.clone()
                } else {
                    let overlay = self
                        .make_overlay(&pool, &target, volid, newid, disk_index)
                        .await?;
                    disk_index += 1;
                    if opts.is_empty() {
                        overlay
                    } else {
                        format!("{overlay},{opts}")
                    }
                }
            } else if key.starts_with("net") {
                fresh_mac(&value)
            } else if key == "smbios1" {
                fresh_smbios_uuid(&value)
            } else if key == "vmgenid" {
                uuid::Uuid::new_v4().to_string()
            } else {
                value.clone()
            };
            settings.devices.insert(key.clone(), copied);
        }
        settings
            .devices
            .entry("smbios1".into())
            .or_insert_with(|| format!("uuid={}", uuid::Uuid::new_v4()));
        let params = CreateVmParams {
            vmid: newid,
            settings,
            ..Default::default()
        };
        client
            .qemu_create(&self.target.node, &params)
            .await
            .map_err(classify)
    }

    /// Creates the overlay of one template disk; returns its volume id.
    async fn make_overlay(
        &self,
        pool: &SshPool,
        target: &SshTarget,
        base_volid: &str,
        newid: u32,
        index: u32,
    ) -> Result<String, BackendError> {
        let Some((storage, base_name)) = base_volid.split_once(':') else {
            return Err(permanent(format!(
                "cannot read the template volume `{base_volid}`"
            )));
        };
        if !base_name.ends_with(".qcow2") {
            return Err(permanent(format!(
                "template volume `{base_volid}` is not a qcow2 file; use linked_clone"
            )));
        }
        let overlay_volid = format!("{storage}:{base_name}/{newid}/vm-{newid}-disk-{index}.qcow2");
        let base_path = self
            .run(pool, target, &format!("pvesm path {}", quote(base_volid)))
            .await?;
        let overlay_path = self
            .run(
                pool,
                target,
                &format!("pvesm path {}", quote(&overlay_volid)),
            )
            .await?;
        let dir = overlay_path
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        // Backing file relative to the overlay, as PVE writes it (`../104/base-104-disk-0.qcow2`).
        let base_file = base_path.rsplit('/').next().unwrap_or_default();
        let base_dir = base_path
            .rsplit_once('/')
            .and_then(|(d, _)| d.rsplit('/').next())
            .unwrap_or_default();
        let backing = format!("../{base_dir}/{base_file}");
        // `qemu-img create` overwrites whatever is there, and the file is where disk N of any VM
        // with our VMID on this storage lives (a VM that appeared on the VMID since it was
        // reserved): never write over an existing file.
        if self.exists(pool, target, &overlay_path).await? {
            return Err(BackendError::AlreadyExists(format!(
                "a disk already exists at {overlay_volid} on {}; it is left alone",
                target.node
            )));
        }
        self.run(pool, target, &format!("mkdir -p {}", quote(&dir)))
            .await?;
        self.run(
            pool,
            target,
            &format!(
                "qemu-img create -f qcow2 -F qcow2 -b {} {}",
                quote(&backing),
                quote(&overlay_path)
            ),
        )
        .await?;
        Ok(overlay_volid)
    }

    /// Whether `path` exists on the VM's node (`test -e`).
    async fn exists(
        &self,
        pool: &SshPool,
        target: &SshTarget,
        path: &str,
    ) -> Result<bool, BackendError> {
        let command = format!("test -e {}", quote(path));
        let out = pool
            .exec(target, &command, SSH_TIMEOUT)
            .await
            .map_err(ssh_error)?;
        match out.exit_status {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(permanent(format!(
                "`{command}` on {} failed: {}",
                target.node,
                out.stderr.trim()
            ))),
        }
    }

    /// Runs a command on the VM's node; its trimmed stdout, or an error with its stderr.
    async fn run(
        &self,
        pool: &SshPool,
        target: &SshTarget,
        command: &str,
    ) -> Result<String, BackendError> {
        let out = pool
            .exec(target, command, SSH_TIMEOUT)
            .await
            .map_err(ssh_error)?;
        if !out.success() {
            return Err(permanent(format!(
                "`{command}` on {} failed: {}",
                target.node,
                out.stderr.trim()
            )));
        }
        Ok(out.stdout.trim().to_string())
    }

    /// Where to reach the new VM's node over SSH (its cluster address).
    async fn ssh_target(&self) -> Result<SshTarget, BackendError> {
        let host = self.backend.node_ip(&self.target.node).await?;
        Ok(SshTarget {
            node: self.target.node.clone(),
            host,
            port: self.backend.ssh_port,
            host_key_fingerprint: self.backend.ssh_host_key_fingerprint.clone(),
        })
    }
}

/// Config keys not copied: they describe the template itself, not a VM made from it.
const SKIPPED: [&str; 6] = [
    "template",
    "digest",
    "lock",
    "parent",
    "name",
    "description",
];

fn is_disk_key(key: &str) -> bool {
    ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
        .iter()
        .any(|p| {
            key.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// `virtio=BC:24:11:00:00:01,bridge=vmbr0` with a new random MAC (Proxmox's `BC:24:11` prefix,
/// as PVE itself assigns them).
fn fresh_mac(net: &str) -> String {
    let mut rng = rand::thread_rng();
    let mac = format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        rng.gen::<u8>(),
        rng.gen::<u8>(),
        rng.gen::<u8>()
    );
    let mut parts: Vec<String> = net.split(',').map(str::to_string).collect();
    if let Some(first) = parts.first_mut() {
        match first.split_once('=') {
            Some((model, _)) => *first = format!("{model}={mac}"),
            None => *first = format!("{first}={mac}"),
        }
    }
    parts.join(",")
}

/// `uuid=…,manufacturer=…` with a new uuid.
fn fresh_smbios_uuid(smbios: &str) -> String {
    let uuid = uuid::Uuid::new_v4();
    let mut parts: Vec<String> = smbios
        .split(',')
        .filter(|p| !p.starts_with("uuid="))
        .map(str::to_string)
        .collect();
    parts.insert(0, format!("uuid={uuid}"));
    parts.join(",")
}

/// Single-quotes a word for the remote shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn permanent(message: String) -> BackendError {
    BackendError::Permanent(message)
}

/// An SSH failure: connection trouble passes, a refused login or host key does not.
fn ssh_error(e: labfleet_proxmox::ssh::SshError) -> BackendError {
    if e.is_transient() {
        BackendError::Transient(e.to_string())
    } else {
        BackendError::Permanent(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_macs_keep_the_model_and_options() {
        let n = fresh_mac("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1");
        assert!(n.starts_with("virtio=BC:24:11:"), "{n}");
        assert!(n.ends_with(",bridge=vmbr0,firewall=1"), "{n}");
        assert_ne!(n, "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1");
    }

    #[test]
    fn smbios_gets_a_new_uuid_and_keeps_the_rest() {
        let s = fresh_smbios_uuid("uuid=0b5f1c1e-0000-0000-0000-000000000000,manufacturer=QEMU");
        assert!(s.starts_with("uuid="));
        assert!(!s.contains("0b5f1c1e-0000"));
        assert!(s.ends_with(",manufacturer=QEMU"));
    }

    #[test]
    fn disk_keys_are_recognised() {
        for k in [
            "scsi0",
            "virtio12",
            "sata1",
            "ide2",
            "efidisk0",
            "tpmstate0",
        ] {
            assert!(is_disk_key(k), "{k}");
        }
        for k in ["net0", "scsihw", "ide", "serial0"] {
            assert!(!is_disk_key(k), "{k}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
