//! The latency model: how long each operation takes at time scale 1.0, which parts of it hold a
//! storage lock, and the critical-path lower bound of a set of operations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-operation latencies in seconds at time scale 1.0 (scaled by `time_scale` at run time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Latencies {
    /// Work of a clone outside any storage lock (config, checks, MAC/uuid), before the first lock.
    pub clone_prepare: f64,
    /// Work of a clone after its last storage step (write config, unlock).
    pub clone_finish: f64,
    /// `vdisk_clone` of one disk (linked clone), under the storage lock.
    pub linked_clone_disk: f64,
    /// `vdisk_alloc` of one volume (cloud-init drive, full-clone target, new disk), under the lock.
    pub alloc: f64,
    /// Copying data of a full clone, per GiB of virtual disk size, outside the lock.
    pub full_clone_per_gib: f64,
    /// `vdisk_free` of one volume, under the storage lock.
    pub free: f64,
    /// Creating a VM, outside the lock.
    pub create: f64,
    /// Deleting a VM, outside the lock.
    pub delete: f64,
    /// Starting a VM.
    pub start: f64,
    /// Clean (ACPI) shutdown.
    pub shutdown: f64,
    /// Hard stop.
    pub stop: f64,
    /// Taking a snapshot.
    pub snapshot: f64,
    /// Rolling back to a snapshot.
    pub rollback: f64,
    /// Deleting a snapshot.
    pub delete_snapshot: f64,
    /// Converting a VM to a template.
    pub template: f64,
    /// Applying a config change (POST config task), resize.
    pub config: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            clone_prepare: 0.5,
            clone_finish: 0.5,
            linked_clone_disk: 0.15,
            alloc: 0.1,
            full_clone_per_gib: 4.0,
            free: 0.1,
            create: 0.5,
            delete: 0.3,
            start: 1.5,
            shutdown: 4.0,
            stop: 0.5,
            snapshot: 1.0,
            rollback: 1.5,
            delete_snapshot: 0.8,
            template: 1.0,
            config: 0.1,
        }
    }
}

/// One step of an operation: free work, or work while holding one storage lock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Phase {
    /// Work that needs no shared resource (seconds at scale 1).
    Free(f64),
    /// Work under the lock of this storage instance (key as in `storage::lock_key`).
    Locked(String, f64),
}

/// The phases of one operation plus when it was released (seconds since the recorder's epoch).
#[derive(Debug, Clone, Serialize)]
pub struct OpProfile {
    pub kind: String,
    pub release: f64,
    pub phases: Vec<Phase>,
}

impl OpProfile {
    fn total(&self) -> f64 {
        self.phases
            .iter()
            .map(|p| match p {
                Phase::Free(d) | Phase::Locked(_, d) => *d,
            })
            .sum()
    }
}

/// The lower bound of a set of operations, in seconds of wall time at the given scale.
#[derive(Debug, Clone, Serialize)]
pub struct LowerBound {
    pub seconds: f64,
    pub time_scale: f64,
    pub ops: usize,
    /// What limits the bound: "storage <key>" or "operation <kind>".
    pub bottleneck: String,
    /// Per storage lock: the bound it alone implies (scaled seconds).
    pub per_storage: BTreeMap<String, f64>,
}

/// Critical-path lower bound: every operation must run its phases in order, and each storage lock
/// serves one locked phase at a time. The bound is the larger of the longest single operation and,
/// per storage, earliest possible first use + all locked work on it + the shortest tail after it.
pub fn lower_bound(ops: &[OpProfile], time_scale: f64) -> LowerBound {
    let epoch = ops.iter().map(|o| o.release).fold(f64::INFINITY, f64::min);
    let epoch = if epoch.is_finite() { epoch } else { 0.0 };
    let mut best = 0.0f64;
    let mut bottleneck = String::from("none");
    for o in ops {
        let end = o.release - epoch + o.total();
        if end > best {
            best = end;
            bottleneck = format!("operation {}", o.kind);
        }
    }
    let mut per_storage = BTreeMap::new();
    let mut keys: Vec<&String> = ops
        .iter()
        .flat_map(|o| o.phases.iter())
        .filter_map(|p| match p {
            Phase::Locked(k, _) => Some(k),
            Phase::Free(_) => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let mut head = f64::INFINITY;
        let mut tail = f64::INFINITY;
        let mut work = 0.0;
        for o in ops {
            let mut first = None;
            let mut last = None;
            let mut t = 0.0;
            for p in &o.phases {
                match p {
                    Phase::Free(d) => t += d,
                    Phase::Locked(k, d) => {
                        if k == key {
                            first.get_or_insert(t);
                            work += d;
                            last = Some(t + d);
                        }
                        t += d;
                    }
                }
            }
            if let (Some(f), Some(l)) = (first, last) {
                head = head.min(o.release - epoch + f);
                tail = tail.min(t - l);
            }
        }
        let b = head + work + tail;
        per_storage.insert(key.clone(), b * time_scale);
        if b > best {
            best = b;
            bottleneck = format!("storage {key}");
        }
    }
    LowerBound {
        seconds: best * time_scale,
        time_scale,
        ops: ops.len(),
        bottleneck,
        per_storage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone_op(release: f64, key: &str) -> OpProfile {
        OpProfile {
            kind: "linked_clone".into(),
            release,
            phases: vec![
                Phase::Free(0.3),
                Phase::Locked(key.into(), 0.8),
                Phase::Locked(key.into(), 0.4),
                Phase::Free(0.2),
            ],
        }
    }

    #[test]
    fn clones_on_one_storage_serialize_in_the_bound() {
        let ops: Vec<_> = (0..10).map(|_| clone_op(0.0, "nfs-shared")).collect();
        let lb = lower_bound(&ops, 1.0);
        assert!(
            (lb.seconds - (0.3 + 10.0 * 1.2 + 0.2)).abs() < 1e-9,
            "{lb:?}"
        );
        assert_eq!(lb.bottleneck, "storage nfs-shared");
    }

    #[test]
    fn clones_on_separate_storages_overlap_in_the_bound() {
        let ops = vec![
            clone_op(0.0, "pve1/local-lvm"),
            clone_op(0.0, "pve2/local-lvm"),
        ];
        let lb = lower_bound(&ops, 2.0);
        assert!((lb.seconds - 2.0 * 1.7).abs() < 1e-9, "{lb:?}");
    }

    #[test]
    fn no_ops_give_zero() {
        assert_eq!(lower_bound(&[], 1.0).seconds, 0.0);
    }
}
