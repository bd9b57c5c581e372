//! Typed PVE responses, read leniently: numbers may arrive as strings (`vmid`, `memory`, `cpus` on
//! some versions and endpoints), booleans as 0/1, and fields the schema calls required may be
//! missing on some versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Lenient deserializers for PVE's loosely typed numbers and booleans.
pub mod lenient {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    /// A JSON scalar PVE may use for a number or boolean.
    #[derive(Debug, Clone, PartialEq)]
    enum Scalar {
        Int(i128),
        Float(f64),
        Bool(bool),
        Null,
    }

    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number, a numeric string or a boolean")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
            Ok(Scalar::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar::Int(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar::Int(v.into()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar::Float(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            let t = v.trim();
            if t.is_empty() {
                return Ok(Scalar::Null);
            }
            if let Ok(i) = t.parse::<i128>() {
                return Ok(Scalar::Int(i));
            }
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Scalar::Float(f)),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
            Ok(Scalar::Null)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
            Ok(Scalar::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
    }

    fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }

    fn to_u64<E: de::Error>(s: Scalar) -> Result<Option<u64>, E> {
        match s {
            Scalar::Null => Ok(None),
            Scalar::Bool(b) => Ok(Some(u64::from(b))),
            Scalar::Int(i) => u64::try_from(i)
                .map(Some)
                .map_err(|_| E::custom(format!("{i} is not a non-negative integer"))),
            // Some counters come as floats ("mem": 1.5e9); truncation keeps them usable.
            Scalar::Float(f) if f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
            Scalar::Float(f) => Err(E::custom(format!("{f} is not a non-negative integer"))),
        }
    }

    fn to_f64(s: Scalar) -> Option<f64> {
        match s {
            Scalar::Null => None,
            Scalar::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Scalar::Int(i) => Some(i as f64),
            Scalar::Float(f) => Some(f),
        }
    }

    fn to_bool<E: de::Error>(s: Scalar) -> Result<Option<bool>, E> {
        match s {
            Scalar::Null => Ok(None),
            Scalar::Bool(b) => Ok(Some(b)),
            Scalar::Int(0) => Ok(Some(false)),
            Scalar::Int(1) => Ok(Some(true)),
            other => Err(E::custom(format!("{other:?} is not a boolean"))),
        }
    }

    /// `u64` from an integer, a float or a numeric string.
    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        to_u64(scalar(d)?)?.ok_or_else(|| de::Error::custom("missing number"))
    }

    /// Optional `u64` (null or empty string → None).
    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        to_u64(scalar(d)?)
    }

    /// `u32` (VM ids) from an integer or a numeric string.
    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = u64(d)?;
        u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} does not fit in u32")))
    }

    /// Optional `u32`.
    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match to_u64(scalar(d)?)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| de::Error::custom(format!("{v} does not fit in u32"))),
        }
    }

    /// `f64` from a number or a numeric string.
    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        to_f64(scalar(d)?).ok_or_else(|| de::Error::custom("missing number"))
    }

    /// Optional `f64`.
    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(to_f64(scalar(d)?))
    }

    /// Optional boolean from 0/1, "0"/"1" or true/false.
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        to_bool(scalar(d)?)
    }

    /// Boolean defaulting to false when absent or null.
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(to_bool(scalar(d)?)?.unwrap_or(false))
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionInfo {
    /// Package version, e.g. `8.4.1`.
    pub version: String,
    /// Release, e.g. `8.4`.
    pub release: String,
    /// Git commit of pve-manager.
    pub repoid: String,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// CPU load 0..1.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub cpu: Option<f64>,
    /// Number of CPUs.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Used memory in bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Total memory in bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Uptime in seconds.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// SHA-256 fingerprint of the node's certificate.
    pub ssl_fingerprint: Option<String>,
}

impl NodeInfo {
    /// Whether the node is online.
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

/// Memory figures of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MemoryUsage {
    /// Total bytes.
    #[serde(deserialize_with = "lenient::u64")]
    pub total: u64,
    /// Used bytes.
    #[serde(deserialize_with = "lenient::u64")]
    pub used: u64,
    /// Free bytes.
    #[serde(deserialize_with = "lenient::u64")]
    pub free: u64,
}

/// CPU description of `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CpuInfo {
    /// Logical CPUs.
    #[serde(deserialize_with = "lenient::u64")]
    pub cpus: u64,
    /// Cores per socket.
    #[serde(deserialize_with = "lenient::u64")]
    pub cores: u64,
    /// Sockets.
    #[serde(deserialize_with = "lenient::u64")]
    pub sockets: u64,
    /// CPU model name.
    pub model: String,
}

/// `GET /nodes/{node}/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    /// CPU load 0..1.
    #[serde(deserialize_with = "lenient::f64")]
    pub cpu: f64,
    /// Memory.
    pub memory: MemoryUsage,
    /// Root filesystem.
    pub rootfs: MemoryUsage,
    /// CPU description.
    pub cpuinfo: CpuInfo,
    /// Load averages (PVE sends strings).
    #[serde(deserialize_with = "lenient_f64_vec")]
    pub loadavg: Vec<f64>,
    /// Uptime in seconds.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// `pve-manager/8.4.1/…`.
    pub pveversion: String,
}

fn lenient_f64_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    struct F(#[serde(deserialize_with = "lenient::f64")] f64);
    let v: Option<Vec<F>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|F(x)| x).collect())
}

/// Filter of `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// Guests (qemu and lxc).
    Vm,
    /// Storages per node.
    Storage,
    /// Nodes.
    Node,
    /// SDN zones.
    Sdn,
}

impl ResourceType {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Storage => "storage",
            ResourceType::Node => "node",
            ResourceType::Sdn => "sdn",
        }
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterResource {
    /// `qemu/100`, `node/pve1`, `storage/pve1/local`, …
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Node.
    pub node: Option<String>,
    /// Guest id.
    #[serde(deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
    /// Guest name.
    pub name: Option<String>,
    /// Status (`running`, `stopped`, `online`, `available`, …).
    pub status: Option<String>,
    /// Whether the guest is a template.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub template: Option<bool>,
    /// Config lock (`clone`, `backup`, …).
    pub lock: Option<String>,
    /// `;`-separated tags.
    pub tags: Option<String>,
    /// Pool.
    pub pool: Option<String>,
    /// CPU load 0..1 (share of `maxcpu`).
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub cpu: Option<f64>,
    /// CPUs.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub maxcpu: Option<f64>,
    /// Used memory bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Memory bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Used disk bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub disk: Option<u64>,
    /// Disk bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxdisk: Option<u64>,
    /// Uptime seconds.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// Storage id (storage entries).
    pub storage: Option<String>,
    /// Whether a storage is shared.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub shared: Option<bool>,
    /// Storage content types, comma-separated.
    pub content: Option<String>,
    /// Storage plugin type.
    pub plugintype: Option<String>,
    /// HA state.
    pub hastate: Option<String>,
}

/// One entry of `GET /cluster/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterStatusEntry {
    /// `cluster` or `node/<name>`.
    pub id: String,
    /// Cluster or node name.
    pub name: String,
    /// `cluster` or `node`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Node IP.
    pub ip: Option<String>,
    /// Whether this is the node that answered.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub local: Option<bool>,
    /// Whether the node is online.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub online: Option<bool>,
    /// Whether the cluster is quorate.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub quorate: Option<bool>,
    /// Node count (cluster entry).
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub nodes: Option<u64>,
    /// Corosync node id.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub nodeid: Option<u64>,
}

/// A guest in `GET /nodes/{node}/qemu`, `…/lxc` and `…/status/current`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GuestStatus {
    /// Guest id.
    #[serde(deserialize_with = "lenient::u32")]
    pub vmid: u32,
    /// Name.
    pub name: Option<String>,
    /// `running` or `stopped`.
    pub status: String,
    /// QMP status (`running`, `paused`, …), qemu only.
    pub qmpstatus: Option<String>,
    /// Whether it is a template.
    #[serde(deserialize_with = "lenient::bool")]
    pub template: bool,
    /// Config lock.
    pub lock: Option<String>,
    /// `;`-separated tags.
    pub tags: Option<String>,
    /// CPU load 0..1.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub cpu: Option<f64>,
    /// CPUs.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub cpus: Option<f64>,
    /// Used memory bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
    /// Memory bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Disk bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub maxdisk: Option<u64>,
    /// Uptime seconds.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// QEMU process id.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub pid: Option<u64>,
    /// Whether the guest agent is enabled (status/current).
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub agent: Option<bool>,
}

impl GuestStatus {
    /// Whether the guest runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/config`: PVE's key/value config, values as PVE sent them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct VmConfig(pub BTreeMap<String, serde_json::Value>);

impl VmConfig {
    /// A value as text (numbers are formatted).
    pub fn get(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// A value as an integer (accepts numeric strings).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.trim().parse().ok()
    }

    /// VM name.
    pub fn name(&self) -> Option<String> {
        self.get("name")
    }

    /// Config digest for optimistic concurrency (`digest` parameter of updates).
    pub fn digest(&self) -> Option<String> {
        self.get("digest")
    }

    /// Config lock, if any.
    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }

    /// Whether the VM is a template.
    pub fn is_template(&self) -> bool {
        matches!(self.get("template").as_deref(), Some("1") | Some("true"))
    }

    /// Memory in MiB (`memory` is a plain number or, on PVE 9, `current=N,…`).
    pub fn memory_mib(&self) -> Option<u64> {
        let raw = self.get("memory")?;
        raw.split(',')
            .find_map(|p| {
                p.strip_prefix("current=")
                    .or(Some(p).filter(|p| !p.contains('=')))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    /// Disk entries (`scsi0` → `local-lvm:vm-100-disk-0,size=32G`), CD-ROMs and unused excluded.
    pub fn disks(&self) -> Vec<(String, String)> {
        self.0
            .keys()
            .filter(|k| crate::drive::is_drive_key(k))
            .filter_map(|k| Some((k.clone(), self.get(k)?)))
            .filter(|(_, v)| !v.contains("media=cdrom"))
            .collect()
    }

    /// Every drive (disks and CD-ROMs, `unusedN` excluded), parsed, in key order.
    pub fn drives(&self) -> Vec<crate::drive::Drive> {
        self.0
            .keys()
            .filter(|k| crate::drive::is_drive_key(k))
            .filter_map(|k| crate::drive::Drive::parse(k, &self.get(k)?))
            .collect()
    }

    /// Whether a cloud-init drive is attached.
    pub fn has_cloudinit(&self) -> bool {
        self.0
            .keys()
            .filter_map(|k| self.get(k))
            .any(|v| v.contains("cloudinit"))
    }
}

/// One entry of `GET /nodes/{node}/qemu/{vmid}/snapshot` (includes the pseudo-snapshot `current`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SnapshotInfo {
    /// Snapshot name (`current` is the live state).
    pub name: String,
    /// Description.
    pub description: String,
    /// Parent snapshot.
    pub parent: Option<String>,
    /// Creation time (epoch seconds).
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub snaptime: Option<u64>,
    /// Whether RAM state was saved.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub vmstate: Option<bool>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Present when stopped: `OK`, `WARNINGS: n` or the error text.
    pub exitstatus: Option<String>,
    /// The UPID.
    pub upid: String,
    /// Node.
    pub node: String,
    /// Task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Task id.
    pub id: String,
    /// User or token that started it.
    pub user: String,
    /// Start time (epoch seconds).
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub starttime: Option<u64>,
}

impl TaskStatus {
    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TaskLogLine {
    /// Line number (1-based).
    #[serde(deserialize_with = "lenient::u64")]
    pub n: u64,
    /// Text.
    pub t: String,
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StorageInfo {
    /// Storage id.
    pub storage: String,
    /// Plugin type (`dir`, `lvmthin`, `zfspool`, `rbd`, `nfs`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Content types, comma-separated.
    pub content: String,
    /// Whether it is active.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub active: Option<bool>,
    /// Whether it is enabled.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub enabled: Option<bool>,
    /// Whether it is shared between nodes.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub shared: Option<bool>,
    /// Size bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub total: Option<u64>,
    /// Used bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub used: Option<u64>,
    /// Available bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub avail: Option<u64>,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StorageContent {
    /// Volume id (`local:iso/debian.iso`).
    pub volid: String,
    /// Format (`iso`, `qcow2`, `raw`, …).
    pub format: String,
    /// Content type (`iso`, `images`, `vztmpl`, …), when PVE includes it.
    pub content: Option<String>,
    /// Size bytes.
    #[serde(deserialize_with = "lenient::u64")]
    pub size: u64,
    /// Used bytes.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub used: Option<u64>,
    /// Owner guest.
    #[serde(deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
    /// Creation time.
    #[serde(deserialize_with = "lenient::opt_u64")]
    pub ctime: Option<u64>,
    /// Base volume of a linked clone.
    pub parent: Option<String>,
}

/// One RRD sample of `GET /nodes/{node}/qemu/{vmid}/rrddata`; missing values stay `None`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RrdPoint {
    /// Epoch seconds.
    #[serde(deserialize_with = "lenient::u64")]
    pub time: u64,
    /// CPU load 0..1 (share of `maxcpu`).
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub cpu: Option<f64>,
    /// CPUs.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub maxcpu: Option<f64>,
    /// Used memory bytes.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub mem: Option<f64>,
    /// Memory bytes.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub maxmem: Option<f64>,
    /// Network in, bytes/s.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub netin: Option<f64>,
    /// Network out, bytes/s.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub netout: Option<f64>,
    /// Disk read, bytes/s.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub diskread: Option<f64>,
    /// Disk write, bytes/s.
    #[serde(deserialize_with = "lenient::opt_f64")]
    pub diskwrite: Option<f64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numbers_arrive_as_strings_floats_or_ints() {
        let g: GuestStatus = serde_json::from_value(serde_json::json!({
            "vmid": "105", "status": "running", "mem": "2147483648", "maxmem": 4294967296.0,
            "cpus": "2", "cpu": 0.25, "template": "1", "uptime": ""
        }))
        .unwrap();
        assert_eq!(g.vmid, 105);
        assert_eq!(g.mem, Some(2_147_483_648));
        assert_eq!(g.maxmem, Some(4_294_967_296));
        assert_eq!(g.cpus, Some(2.0));
        assert!(g.template);
        assert_eq!(g.uptime, None);
    }

    #[test]
    fn booleans_arrive_as_zero_one_or_json_booleans() {
        let r: ClusterResource = serde_json::from_value(serde_json::json!({
            "id": "storage/pve1/nfs", "type": "storage", "shared": 1, "template": false
        }))
        .unwrap();
        assert_eq!(r.shared, Some(true));
        assert_eq!(r.template, Some(false));
        assert!(serde_json::from_value::<ClusterResource>(
            serde_json::json!({"id": "x", "type": "qemu", "template": 7})
        )
        .is_err());
    }

    #[test]
    fn garbage_numbers_are_rejected() {
        assert!(serde_json::from_value::<GuestStatus>(
            serde_json::json!({"vmid": "abc", "status": "stopped"})
        )
        .is_err());
        assert!(serde_json::from_value::<GuestStatus>(
            serde_json::json!({"vmid": -4, "status": "stopped"})
        )
        .is_err());
    }

    #[test]
    fn node_status_reads_string_load_averages() {
        let s: NodeStatus = serde_json::from_value(serde_json::json!({
            "cpu": "0.5", "loadavg": ["0.10", "0.20", "0.30"],
            "memory": {"total": "100", "used": 50, "free": 50.0},
            "cpuinfo": {"cpus": 8, "cores": "4", "sockets": 2, "model": "x"}
        }))
        .unwrap();
        assert_eq!(s.loadavg, vec![0.1, 0.2, 0.3]);
        assert_eq!(s.memory.total, 100);
        assert_eq!(s.cpuinfo.cores, 4);
        assert_eq!(s.cpu, 0.5);
    }

    #[test]
    fn vm_config_reads_memory_disks_and_cloudinit() {
        let c: VmConfig = serde_json::from_value(serde_json::json!({
            "memory": "2048", "scsi0": "local-lvm:base-9000-disk-0,size=8G",
            "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom", "efidisk0": "local-lvm:x,size=4M",
            "scsihw": "virtio-scsi-pci", "unused0": "local-lvm:old", "template": 1
        }))
        .unwrap();
        assert_eq!(c.memory_mib(), Some(2048));
        let disks: Vec<String> = c.disks().into_iter().map(|(k, _)| k).collect();
        assert_eq!(disks, vec!["efidisk0", "scsi0"]);
        assert!(c.has_cloudinit());
        assert!(c.is_template());
        let pve9: VmConfig =
            serde_json::from_value(serde_json::json!({"memory": "current=4096"})).unwrap();
        assert_eq!(pve9.memory_mib(), Some(4096));
    }
}
