//! The cluster state: nodes, VMs (with write-through config files), volumes, pools, tasks,
//! secrets, time scale, and the storage step every disk operation goes through.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::conf::VmConf;
use crate::faults::Faults;
use crate::latency::{OpProfile, Phase};
use crate::locks::Locks;
use crate::storage::{self, Volume};
use crate::tasks::Task;
use crate::SimConfig;

/// The API token id every simulator has.
pub const TOKEN_ID: &str = "root@pam!labfleet";

/// The loopback address of node `i` (0-based): 127.0.0.11, .12, ...
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + (i as u8)))
}

/// Secrets kept in `<data_dir>/sim/secrets.json` so a restart keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub root_password: String,
    pub token_secret: String,
    pub ticket_key: String,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill(&mut b[..]);
    hex::encode(b)
}

fn uuid_like(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A VM as the cluster knows it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub vmid: u32,
    pub node: String,
    pub conf: VmConf,
    pub running: bool,
    pub started_at: i64,
    pub paused: bool,
    /// CPU load (0..1 of its cores) while running, set by `/_sim/vms/{vmid}/cpu`.
    pub cpu: f64,
    /// (unix time, cpu) changes, for rrddata.
    pub cpu_hist: Vec<(i64, f64)>,
}

impl Vm {
    pub fn new(vmid: u32, node: &str, conf: VmConf) -> Self {
        Vm {
            vmid,
            node: node.to_string(),
            conf,
            running: false,
            started_at: 0,
            paused: false,
            cpu: 0.02,
            cpu_hist: Vec::new(),
        }
    }

    pub fn cores(&self) -> u64 {
        let c = |k: &str| {
            self.conf
                .props
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        c("cores") * c("sockets")
    }

    pub fn maxmem(&self) -> u64 {
        let mb = self
            .conf
            .props
            .get("memory")
            .and_then(|m| m.split(',').next())
            .map(|m| m.trim_start_matches("current="))
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(512);
        mb << 20
    }

    pub fn maxdisk(&self) -> u64 {
        self.conf
            .props
            .iter()
            .filter(|(k, _)| crate::conf::is_drive_key(k))
            .map(|(_, v)| crate::conf::Drive::parse(v))
            .filter(|d| !d.is_cdrom() && !d.is_cloudinit())
            .filter_map(|d| d.opt("size").and_then(crate::conf::parse_size))
            .sum()
    }

    pub fn current_cpu(&self) -> f64 {
        if self.running {
            self.cpu
        } else {
            0.0
        }
    }

    pub fn uptime(&self) -> i64 {
        if self.running {
            (chrono::Utc::now().timestamp() - self.started_at).max(0)
        } else {
            0
        }
    }
}

/// A resource pool.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub comment: String,
    pub vms: Vec<u32>,
}

/// Everything behind the state mutex.
#[derive(Default)]
pub struct State {
    pub vms: BTreeMap<u32, Vm>,
    /// storage key → volname → volume
    pub volumes: HashMap<String, BTreeMap<String, Volume>>,
    pub pools: BTreeMap<String, Pool>,
    /// (storage key, vmid) → volnames: keeps disk numbering O(disks of the VM).
    owned: HashMap<(String, u32), std::collections::BTreeSet<String>>,
}

impl State {
    /// The lowest free index N for `vm-<vmid>-disk-N` on a storage instance.
    pub fn next_disk_index(&self, key: &str, vmid: u32) -> usize {
        let used: Vec<usize> = self
            .owned
            .get(&(key.to_string(), vmid))
            .map(|names| {
                names
                    .iter()
                    .filter_map(|v| {
                        let f = storage::file_name(v);
                        f.split("-disk-").nth(1)?.split('.').next()?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }

    /// Adds a volume to a storage instance's list.
    pub fn insert_volume(&mut self, key: &str, volname: &str, vol: Volume) {
        if let Some(vmid) = storage::volname_vmid(volname) {
            self.owned
                .entry((key.to_string(), vmid))
                .or_default()
                .insert(volname.to_string());
        }
        self.volumes
            .entry(key.to_string())
            .or_default()
            .insert(volname.to_string(), vol);
    }

    /// Removes a volume from a storage instance's list.
    pub fn remove_volume(&mut self, key: &str, volname: &str) -> Option<Volume> {
        if let Some(vmid) = storage::volname_vmid(volname) {
            let k = (key.to_string(), vmid);
            if let Some(set) = self.owned.get_mut(&k) {
                set.remove(volname);
                if set.is_empty() {
                    self.owned.remove(&k);
                }
            }
        }
        self.volumes.get_mut(key)?.remove(volname)
    }
}

/// Recorded operations for `/_sim/lower-bound`.
pub struct Recorder {
    pub epoch: Instant,
    pub ops: Vec<OpProfile>,
}

/// Counters for `/_sim/stats`.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub clones_ok: AtomicU64,
    pub clones_failed: AtomicU64,
}

/// The simulated cluster.
pub struct Sim {
    pub data_dir: PathBuf,
    pub nodes: Vec<String>,
    pub secrets: Secrets,
    pub use_qemu_img: bool,
    pub latencies: crate::Latencies,
    pub ticket_lifetime: Duration,
    pub pstart_base: u32,
    pub booted: i64,
    scale_bits: AtomicU64,
    pub state: Mutex<State>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    pub locks: Locks,
    pub faults: Mutex<Faults>,
    fingerprint: Mutex<Option<String>>,
    pub recorder: Mutex<Recorder>,
    pub stats: Stats,
}

fn load_secrets(dir: &Path) -> anyhow::Result<Secrets> {
    let path = dir.join("sim").join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    let s = Secrets {
        root_password: random_hex(12),
        token_secret: {
            let mut b = [0u8; 16];
            rand::thread_rng().fill(&mut b);
            uuid_like(&b)
        },
        ticket_key: random_hex(32),
    };
    std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
    std::fs::write(&path, serde_json::to_string_pretty(&s)?)?;
    Ok(s)
}

impl Sim {
    /// Opens (and if new, seeds) the data dir and loads its VMs and volumes.
    pub async fn open(cfg: &SimConfig) -> anyhow::Result<Sim> {
        let secrets = load_secrets(&cfg.data_dir)?;
        let nodes: Vec<String> = (1..=cfg.nodes).map(|i| format!("pve{i}")).collect();
        let sim = Sim {
            data_dir: cfg.data_dir.clone(),
            nodes,
            secrets,
            use_qemu_img: cfg.use_qemu_img,
            latencies: cfg.latencies.clone(),
            ticket_lifetime: cfg.ticket_lifetime,
            pstart_base: rand::thread_rng().gen_range(0x0100_0000..0x0F00_0000),
            booted: chrono::Utc::now().timestamp(),
            scale_bits: AtomicU64::new(cfg.time_scale.max(0.0).to_bits()),
            state: Mutex::new(State::default()),
            tasks: Mutex::new(HashMap::new()),
            locks: Locks::default(),
            faults: Mutex::new(Faults::new(cfg.faults.clone(), cfg.seed)),
            fingerprint: Mutex::new(None),
            recorder: Mutex::new(Recorder {
                epoch: Instant::now(),
                ops: Vec::new(),
            }),
            stats: Stats::default(),
        };
        let marker = cfg.data_dir.join("sim").join("seeded");
        let fresh = !marker.exists();
        sim.load_from_disk();
        if fresh {
            if !cfg.empty {
                crate::seed::seed(&sim).await.map_err(anyhow::Error::msg)?;
            }
            std::fs::write(&marker, "1")?;
        }
        Ok(sim)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.clone()
    }

    pub fn set_fingerprint(&self, fp: Option<String>) {
        *self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fp;
    }

    pub fn fingerprint(&self) -> Option<String> {
        self.fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn time_scale(&self) -> f64 {
        f64::from_bits(self.scale_bits.load(Ordering::Relaxed))
    }

    pub fn set_time_scale(&self, s: f64) {
        self.scale_bits
            .store(s.max(0.0).to_bits(), Ordering::Relaxed);
    }

    /// `secs` at scale 1 → wall time now.
    pub fn scaled(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.time_scale()).clamp(0.0, 1e6))
    }

    /// A lock acquire timeout: `secs` × scale, but at least 50 ms.
    pub fn lock_timeout(&self, secs: f64) -> Duration {
        self.scaled(secs).max(Duration::from_millis(50))
    }

    pub fn is_node(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n == node)
    }

    pub fn node_offline(&self, node: &str) -> bool {
        self.faults().config.node_offline.contains(node)
    }

    /// More than half of the nodes are online (writes need quorum).
    pub fn quorate(&self) -> bool {
        let f = self.faults();
        let online = self
            .nodes
            .iter()
            .filter(|n| !f.config.node_offline.contains(*n))
            .count();
        online * 2 > self.nodes.len()
    }

    pub fn register_task(&self, t: Arc<Task>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.upid.clone(), t);
    }

    pub fn task(&self, upid: &str) -> Option<Arc<Task>> {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(upid)
            .cloned()
    }

    /// Records an operation's planned phases for the lower bound.
    pub fn record(&self, kind: &str, phases: Vec<Phase>) {
        let mut r = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        let release = r.epoch.elapsed().as_secs_f64() / self.time_scale().max(1e-9);
        let release = if self.time_scale() == 0.0 {
            0.0
        } else {
            release
        };
        r.ops.push(OpProfile {
            kind: kind.to_string(),
            release,
            phases,
        });
    }

    pub fn random_mac(&self) -> String {
        let b: [u8; 5] = self.faults().random_bytes();
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
    }

    pub fn random_uuid(&self) -> String {
        let mut b: [u8; 16] = self.faults().random_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid_like(&b)
    }

    // ---- files ----

    pub fn conf_path(&self, node: &str, vmid: u32) -> PathBuf {
        self.data_dir
            .join("nodes")
            .join(node)
            .join("qemu-server")
            .join(format!("{vmid}.conf"))
    }

    /// Writes a VM's config file (write-through; no fsync: the simulator is not a database).
    pub fn write_conf(&self, vm: &Vm) {
        let path = self.conf_path(&vm.node, vm.vmid);
        if std::fs::write(&path, vm.conf.write()).is_err() {
            if let Some(p) = path.parent() {
                let _ = std::fs::create_dir_all(p);
            }
            if let Err(e) = std::fs::write(&path, vm.conf.write()) {
                tracing::warn!(path = %path.display(), error = %e, "writing VM config failed");
            }
        }
    }

    pub fn remove_conf(&self, node: &str, vmid: u32) {
        let _ = std::fs::remove_file(self.conf_path(node, vmid));
    }

    /// Remembers whether a VM runs, so a restarted simulator keeps its power state.
    pub fn write_power(&self, vmid: u32, running: bool) {
        let dir = self.data_dir.join("sim").join("running");
        let p = dir.join(vmid.to_string());
        if running {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(p, "1");
        } else {
            let _ = std::fs::remove_file(p);
        }
    }

    fn load_from_disk(&self) {
        let mut st = self.state();
        for node in &self.nodes {
            let dir = self.data_dir.join("nodes").join(node).join("qemu-server");
            let _ = std::fs::create_dir_all(&dir);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(vmid) = name
                    .strip_suffix(".conf")
                    .and_then(|v| v.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let mut vm = Vm::new(vmid, node, VmConf::parse(&text));
                if self
                    .data_dir
                    .join("sim")
                    .join("running")
                    .join(vmid.to_string())
                    .exists()
                {
                    vm.running = true;
                    vm.started_at = chrono::Utc::now().timestamp();
                }
                st.vms.insert(vmid, vm);
            }
            for def in storage::STORAGES.iter().filter(|d| !d.shared) {
                let key = storage::key(node, def.id);
                let vols =
                    crate::volumes::scan_storage(&storage::root(&self.data_dir, node, def.id), def);
                st.volumes.entry(key.clone()).or_default();
                for (name, v) in vols {
                    st.insert_volume(&key, &name, v);
                }
            }
        }
        for def in storage::STORAGES.iter().filter(|d| d.shared) {
            let first = self.nodes.first().cloned().unwrap_or_default();
            let vols =
                crate::volumes::scan_storage(&storage::root(&self.data_dir, &first, def.id), def);
            st.volumes.entry(def.id.to_string()).or_default();
            for (name, v) in vols {
                st.insert_volume(def.id, &name, v);
            }
        }
    }
}
