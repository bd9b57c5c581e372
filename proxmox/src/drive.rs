//! A VM's drives as PVE writes them in its config: `scsi0: nfs:104/base-104-disk-0.qcow2,size=2G`,
//! `ide2: local:iso/debian.iso,media=cdrom`, `ide2: local-lvm:vm-104-cloudinit,media=cdrom`.
//! The value is a property string whose first, unnamed part (`file=`) is the volume, followed by
//! `key=value` options. Knowing which volumes a VM uses, and where they live, decides
//! whether a clone may leave the VM's node and whether a config clone is possible.

use std::collections::BTreeMap;

/// Config keys that hold a drive, each followed by its index (`scsi0`, `efidisk0`, …).
pub(crate) const DRIVE_PREFIXES: &[&str] =
    &["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"];

/// Whether `key` names a drive slot (`unused0` and `net0` do not).
pub(crate) fn is_drive_key(key: &str) -> bool {
    DRIVE_PREFIXES.iter().any(|p| {
        key.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// One drive of a VM config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// The config key (`scsi0`, `ide2`, `efidisk0`).
    pub key: String,
    /// The volume: a volume id `storage:volname`, an absolute path (pass-through), `none` (empty
    /// CD-ROM) or `cdrom` (the host's drive).
    pub volume: String,
    /// The named options (`size`, `format`, `media`, …).
    pub options: BTreeMap<String, String>,
}

impl Drive {
    /// Parses `value` of the config entry `key`; `None` when the value has no volume at all.
    pub fn parse(key: &str, value: &str) -> Option<Drive> {
        let mut volume = None;
        let mut options = BTreeMap::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("file", v)) => volume = Some(v.to_string()),
                // A volume id never holds `=`; a part with one is a named option.
                Some((k, v)) => {
                    options.insert(k.to_string(), v.to_string());
                }
                None if volume.is_none() => volume = Some(part.to_string()),
                None => {}
            }
        }
        Some(Drive {
            key: key.to_string(),
            volume: volume.filter(|v| !v.is_empty())?,
            options,
        })
    }

    /// Whether the drive is a CD-ROM (`media=cdrom`): an ISO, a cloud-init drive or empty.
    pub fn is_cdrom(&self) -> bool {
        self.options.get("media").is_some_and(|m| m == "cdrom")
    }

    /// Whether a storage volume backs the drive (not an empty or host CD-ROM, not a device path).
    pub fn is_volume(&self) -> bool {
        self.storage().is_some()
    }

    /// The storage id of a volume id (`nfs-shared` of `nfs-shared:104/…`).
    pub fn storage(&self) -> Option<&str> {
        if self.volume.starts_with('/') {
            return None;
        }
        self.volume.split_once(':').map(|(s, _)| s)
    }

    /// The volume name inside its storage (`104/base-104-disk-0.qcow2`, `iso/debian.iso`).
    pub fn volname(&self) -> Option<&str> {
        self.storage()?;
        self.volume.split_once(':').map(|(_, n)| n)
    }

    /// A cloud-init drive: PVE names its volume `vm-<vmid>-cloudinit[.<ext>]`.
    pub fn is_cloudinit(&self) -> bool {
        self.volname()
            .map(|n| n.rsplit('/').next().unwrap_or(n))
            .is_some_and(|f| f.contains("-cloudinit"))
    }

    /// An ISO image in a CD-ROM drive (a volume of content type `iso`: `<storage>:iso/<file>`).
    pub fn is_iso(&self) -> bool {
        self.is_cdrom()
            && !self.is_cloudinit()
            && self.volname().is_some_and(|n| n.starts_with("iso/"))
    }

    /// The image format: the `format=` option, else the file extension (`qcow2`, `raw`, `vmdk`).
    /// Block storages (LVM, ZFS, RBD) name volumes without an extension; then it is unknown
    /// here, and the caller, who knows the storage type, can tell.
    pub fn format(&self) -> Option<String> {
        if let Some(f) = self.options.get("format") {
            return Some(f.clone());
        }
        let file = self.volname()?.rsplit('/').next()?;
        let (_, ext) = file.rsplit_once('.')?;
        matches!(ext, "qcow2" | "raw" | "vmdk" | "iso").then(|| ext.to_string())
    }

    /// The `size=` option in bytes (`2G`, `4M`, `512`; binary units as in PVE).
    pub fn size_bytes(&self) -> Option<u64> {
        parse_disk_size(self.options.get("size")?)
    }
}

/// PVE's `DiskSize` (`\d+(\.\d+)?[KMGT]?`, no suffix = bytes).
pub fn parse_disk_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        b'T' | b't' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value * (1u64 << shift) as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_qcow2_disk_on_a_file_storage() {
        let d = Drive::parse(
            "scsi0",
            "nfs-shared:104/base-104-disk-0.qcow2,iothread=1,size=2G",
        )
        .unwrap();
        assert_eq!(d.storage(), Some("nfs-shared"));
        assert_eq!(d.volname(), Some("104/base-104-disk-0.qcow2"));
        assert_eq!(d.format().as_deref(), Some("qcow2"));
        assert_eq!(d.size_bytes(), Some(2 << 30));
        assert!(!d.is_cdrom() && !d.is_cloudinit() && !d.is_iso());
    }

    #[test]
    fn format_option_wins_and_block_volumes_have_none() {
        let d = Drive::parse("virtio0", "file=local:100/vm-100-disk-0.img,format=raw").unwrap();
        assert_eq!(d.format().as_deref(), Some("raw"));
        let lvm = Drive::parse("scsi0", "local-lvm:base-105-disk-0,size=512").unwrap();
        assert_eq!(lvm.format(), None);
        assert_eq!(lvm.size_bytes(), Some(512));
    }

    #[test]
    fn cdroms_cloudinit_iso_and_empty() {
        let ci = Drive::parse("ide2", "local-lvm:vm-105-cloudinit,media=cdrom").unwrap();
        assert!(ci.is_cdrom() && ci.is_cloudinit() && !ci.is_iso());
        let iso = Drive::parse("ide0", "local:iso/debian-12.iso,media=cdrom,size=631M").unwrap();
        assert!(iso.is_iso() && !iso.is_cloudinit());
        assert_eq!(iso.size_bytes(), Some(631 << 20));
        let empty = Drive::parse("ide2", "none,media=cdrom").unwrap();
        assert!(!empty.is_volume());
        let host = Drive::parse("ide2", "cdrom,media=cdrom").unwrap();
        assert!(!host.is_volume());
        let passthrough = Drive::parse("scsi1", "/dev/disk/by-id/ata-X,backup=0").unwrap();
        assert!(!passthrough.is_volume());
        assert_eq!(Drive::parse("scsi1", "size=1G"), None);
    }

    #[test]
    fn drive_keys() {
        for k in [
            "scsi0",
            "scsi30",
            "ide2",
            "efidisk0",
            "tpmstate0",
            "virtio15",
            "sata5",
        ] {
            assert!(is_drive_key(k), "{k}");
        }
        for k in ["unused0", "net0", "scsihw", "ide", "ipconfig0"] {
            assert!(!is_drive_key(k), "{k}");
        }
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_disk_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_disk_size("4M"), Some(4 << 20));
        assert_eq!(parse_disk_size("x"), None);
        assert_eq!(parse_disk_size("-1G"), None);
    }
}
