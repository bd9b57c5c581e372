//! A template's volumes and what they allow: PVE lets a clone leave the template's node only if
//! every volume (disks, cloud-init drive, ISO) is on shared storage, and a config clone needs
//! every disk to be a qcow2 file on a file (directory or NFS) storage, because its overlays are
//! qcow2 files backed by the template's base image (`docs/proxmox.md`, "Clones").

use std::collections::HashMap;

use labfleet_entities::template::TemplateDisk;
use labfleet_fleet::backend::TemplateVolumes;
use labfleet_proxmox::Drive;

/// Storage types that hold volumes as files, where qcow2 overlays with backing files work.
const FILE_STORAGE_TYPES: &[&str] = &["dir", "nfs", "cifs", "glusterfs", "cephfs"];

/// Storage types that hold raw block volumes only (their volume names carry no extension).
const BLOCK_STORAGE_TYPES: &[&str] = &["lvm", "lvmthin", "zfspool", "rbd", "iscsi", "iscsidirect"];

/// What labfleet knows of a storage when it classifies a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageKind {
    /// PVE storage type (`nfs`, `lvmthin`, …).
    pub storage_type: String,
    /// Shared between nodes.
    pub shared: bool,
}

/// Classifies a template's `drives` against the cluster's storages (by storage id).
pub(crate) fn classify(
    drives: &[Drive],
    storages: &HashMap<String, StorageKind>,
) -> TemplateVolumes {
    // A host device (pass-through disk, the host's CD drive) ties the VM to its node.
    let host_device = drives.iter().any(|d| !d.is_volume() && d.volume != "none");
    let disks: Vec<TemplateDisk> = drives.iter().filter_map(|d| disk(d, storages)).collect();
    let data: Vec<&TemplateDisk> = disks.iter().filter(|d| !d.cloudinit && !d.iso).collect();
    TemplateVolumes {
        all_shared: !host_device && disks.iter().all(|d| d.shared),
        has_cloudinit: disks.iter().any(|d| d.cloudinit),
        qcow2_files: !data.is_empty()
            && data.iter().all(|d| {
                d.format.as_deref() == Some("qcow2")
                    && d.storage_type
                        .as_deref()
                        .is_some_and(|t| FILE_STORAGE_TYPES.contains(&t))
            }),
        disks,
    }
}

fn disk(d: &Drive, storages: &HashMap<String, StorageKind>) -> Option<TemplateDisk> {
    let storage = d.storage()?;
    let kind = storages.get(storage);
    let storage_type = kind.map(|k| k.storage_type.clone());
    let format = d.format().or_else(|| {
        storage_type
            .as_deref()
            .filter(|t| BLOCK_STORAGE_TYPES.contains(t))
            .map(|_| "raw".to_string())
    });
    Some(TemplateDisk {
        key: d.key.clone(),
        volid: d.volume.clone(),
        storage: storage.to_string(),
        storage_type,
        format,
        size: d.size_bytes().and_then(|s| i64::try_from(s).ok()),
        shared: kind.is_some_and(|k| k.shared),
        cloudinit: d.is_cloudinit(),
        iso: d.is_iso(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn storages() -> HashMap<String, StorageKind> {
        [
            ("nfs-shared", "nfs", true),
            ("local", "dir", false),
            ("local-lvm", "lvmthin", false),
            ("ceph", "rbd", true),
        ]
        .into_iter()
        .map(|(id, t, shared)| {
            (
                id.to_string(),
                StorageKind {
                    storage_type: t.into(),
                    shared,
                },
            )
        })
        .collect()
    }

    fn drives(list: &[(&str, &str)]) -> Vec<Drive> {
        list.iter()
            .map(|(k, v)| Drive::parse(k, v).unwrap())
            .collect()
    }

    #[test]
    fn qcow2_on_nfs_with_cloudinit_is_shared_and_config_clonable() {
        let v = classify(
            &drives(&[
                ("scsi0", "nfs-shared:104/base-104-disk-0.qcow2,size=2G"),
                ("ide2", "nfs-shared:104/vm-104-cloudinit.qcow2,media=cdrom"),
            ]),
            &storages(),
        );
        assert!(v.all_shared && v.has_cloudinit && v.qcow2_files);
        assert_eq!(v.disks.len(), 2);
        assert_eq!(v.disks[0].size, Some(2 << 30));
        assert_eq!(v.disks[0].storage_type.as_deref(), Some("nfs"));
        assert!(v.disks[1].cloudinit && !v.disks[1].iso);
    }

    #[test]
    fn raw_on_lvm_thin_is_local_and_not_config_clonable() {
        let v = classify(
            &drives(&[
                ("scsi0", "local-lvm:base-105-disk-0,size=2G"),
                ("ide2", "local-lvm:vm-105-cloudinit,media=cdrom"),
            ]),
            &storages(),
        );
        assert!(!v.all_shared && v.has_cloudinit && !v.qcow2_files);
        assert_eq!(v.disks[0].format.as_deref(), Some("raw"));
    }

    #[test]
    fn a_local_iso_keeps_a_shared_template_on_its_node() {
        let v = classify(
            &drives(&[
                ("scsi0", "ceph:base-110-disk-0,size=8G"),
                ("ide0", "local:iso/debian.iso,media=cdrom"),
            ]),
            &storages(),
        );
        assert!(!v.all_shared, "the ISO is on local storage");
        assert!(v.disks[1].iso);
        assert!(!v.qcow2_files, "rbd is not a file storage");
    }

    #[test]
    fn host_devices_pin_the_template_and_empty_cdroms_do_not() {
        let empty = classify(
            &drives(&[
                ("scsi0", "nfs-shared:1/base-1-disk-0.qcow2"),
                ("ide2", "none,media=cdrom"),
            ]),
            &storages(),
        );
        assert!(empty.all_shared && empty.qcow2_files);
        let host = classify(
            &drives(&[
                ("scsi0", "nfs-shared:1/base-1-disk-0.qcow2"),
                ("ide2", "cdrom,media=cdrom"),
            ]),
            &storages(),
        );
        assert!(!host.all_shared);
    }

    #[test]
    fn qcow2_on_a_dir_storage_but_raw_efidisk_is_not_config_clonable() {
        let v = classify(
            &drives(&[
                ("scsi0", "local:9/base-9-disk-0.qcow2"),
                ("efidisk0", "local:9/base-9-disk-1.raw,efitype=4m"),
            ]),
            &storages(),
        );
        assert!(!v.qcow2_files && !v.all_shared && !v.has_cloudinit);
        let none = classify(&[], &storages());
        assert!(!none.qcow2_files && none.all_shared);
    }
}
