//! Storages of the simulated cluster: per node `local` (dir) and `local-lvm` (LVM-thin), plus the
//! shared NFS storage `nfs-shared`; volume naming, paths on disk and lock error texts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Storage id of the shared NFS storage.
pub const SHARED_NFS: &str = "nfs-shared";

/// The storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    LvmThin,
    Nfs,
}

/// A storage definition (like an entry of /etc/pve/storage.cfg).
#[derive(Debug, Clone, Copy)]
pub struct StorageDef {
    pub id: &'static str,
    pub kind: Kind,
    pub shared: bool,
    pub content: &'static str,
    pub total: u64,
}

impl StorageDef {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Dir => "dir",
            Kind::LvmThin => "lvmthin",
            Kind::Nfs => "nfs",
        }
    }

    /// File storages hold qcow2/raw files; thin pools hold raw volumes only.
    pub fn is_file(&self) -> bool {
        matches!(self.kind, Kind::Dir | Kind::Nfs)
    }

    /// The default image format on this storage.
    pub fn default_format(&self) -> &'static str {
        if self.is_file() {
            "qcow2"
        } else {
            "raw"
        }
    }

    /// The error text PVE gives when this storage's lock cannot be had within the acquire
    /// timeout: a cluster-file-system lock error for a shared storage, a flock timeout on
    /// `/var/lock/pve-manager/pve-storage-<id>` for a local one.
    pub fn lock_timeout_error(&self) -> String {
        if self.shared {
            format!(
                "cfs-lock 'storage-{}' error: got lock request timeout",
                self.id
            )
        } else {
            format!(
                "can't lock file '/var/lock/pve-manager/pve-storage-{}' - got timeout",
                self.id
            )
        }
    }
}

pub const STORAGES: [StorageDef; 3] = [
    StorageDef {
        id: "local",
        kind: Kind::Dir,
        shared: false,
        content: "backup,images,iso,snippets,vztmpl",
        total: 100 << 30,
    },
    StorageDef {
        id: "local-lvm",
        kind: Kind::LvmThin,
        shared: false,
        content: "images,rootdir",
        total: 500 << 30,
    },
    StorageDef {
        id: SHARED_NFS,
        kind: Kind::Nfs,
        shared: true,
        content: "images,iso,vztmpl",
        total: 2 << 40,
    },
];

pub fn def(id: &str) -> Option<&'static StorageDef> {
    STORAGES.iter().find(|s| s.id == id)
}

/// The key of a storage instance: the id for shared storages, `node/id` for local ones. One lock
/// and one volume list exist per key.
pub fn key(node: &str, id: &str) -> String {
    match def(id) {
        Some(d) if d.shared => id.to_string(),
        _ => format!("{node}/{id}"),
    }
}

/// The directory of a storage instance under the data dir.
pub fn root(data_dir: &Path, node: &str, id: &str) -> PathBuf {
    match def(id) {
        Some(d) if d.shared => data_dir.join("storage").join("shared").join(id),
        _ => data_dir.join("storage").join(node).join(id),
    }
}

/// The file of a volume (`volname` as in a volid after the `storage:`).
pub fn volume_path(data_dir: &Path, node: &str, id: &str, volname: &str) -> PathBuf {
    let root = root(data_dir, node, id);
    match def(id) {
        Some(d) if !d.is_file() => root.join(volname),
        _ => {
            if let Some(iso) = volname.strip_prefix("iso/") {
                return root.join("template").join("iso").join(iso);
            }
            // linked clones: "<tmpl>/base-…qcow2/<vmid>/vm-…qcow2" lives at images/<vmid>/vm-…
            let parts: Vec<&str> = volname.split('/').collect();
            let tail = if parts.len() >= 4 {
                parts[parts.len() - 2..].join("/")
            } else {
                volname.to_string()
            };
            root.join("images").join(tail)
        }
    }
}

/// A volume known to a storage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    /// Virtual size in bytes.
    pub size: u64,
    /// qcow2, raw or iso.
    pub format: String,
    /// Owner VM.
    pub vmid: Option<u32>,
    /// Base volume (volname) of a linked clone.
    pub parent: Option<String>,
    pub ctime: i64,
}

impl Volume {
    pub fn content(&self) -> &'static str {
        if self.format == "iso" {
            "iso"
        } else {
            "images"
        }
    }
}

/// The volname of the next disk of `vmid` on a storage: `vm-<vmid>-disk-N` (+ `.fmt` and
/// `<vmid>/` prefix on file storages).
pub fn disk_volname(def: &StorageDef, vmid: u32, n: usize, format: &str, base: bool) -> String {
    let prefix = if base { "base" } else { "vm" };
    if def.is_file() {
        format!("{vmid}/{prefix}-{vmid}-disk-{n}.{format}")
    } else {
        format!("{prefix}-{vmid}-disk-{n}")
    }
}

/// The volname of a cloud-init drive of `vmid`.
pub fn cloudinit_volname(def: &StorageDef, vmid: u32) -> String {
    if def.is_file() {
        format!("{vmid}/vm-{vmid}-cloudinit.qcow2")
    } else {
        format!("vm-{vmid}-cloudinit")
    }
}

/// The plain file name part of a volname (`104/base-104-disk-0.qcow2` → `base-104-disk-0.qcow2`).
pub fn file_name(volname: &str) -> &str {
    volname.rsplit('/').next().unwrap_or(volname)
}

/// The vmid a volname belongs to (`vm-201-disk-0`, `…/201/vm-201-disk-0.qcow2`).
pub fn volname_vmid(volname: &str) -> Option<u32> {
    let f = file_name(volname);
    let rest = f.strip_prefix("vm-").or_else(|| f.strip_prefix("base-"))?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_clone_volumes_live_in_the_clone_directory() {
        let p = volume_path(
            Path::new("/d"),
            "pve1",
            SHARED_NFS,
            "104/base-104-disk-0.qcow2/201/vm-201-disk-0.qcow2",
        );
        assert_eq!(
            p,
            Path::new("/d/storage/shared/nfs-shared/images/201/vm-201-disk-0.qcow2")
        );
        let p = volume_path(Path::new("/d"), "pve2", "local-lvm", "vm-105-disk-0");
        assert_eq!(p, Path::new("/d/storage/pve2/local-lvm/vm-105-disk-0"));
        assert_eq!(
            volname_vmid("104/base-104-disk-0.qcow2/201/vm-201-disk-0.qcow2"),
            Some(201)
        );
        assert_eq!(key("pve1", SHARED_NFS), "nfs-shared");
        assert_eq!(key("pve1", "local-lvm"), "pve1/local-lvm");
    }

    #[test]
    fn lock_errors_have_the_real_texts() {
        assert_eq!(
            def("local-lvm")
                .map(StorageDef::lock_timeout_error)
                .as_deref(),
            Some("can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout")
        );
        assert_eq!(
            def(SHARED_NFS)
                .map(StorageDef::lock_timeout_error)
                .as_deref(),
            Some("cfs-lock 'storage-nfs-shared' error: got lock request timeout")
        );
    }
}
