//! The plan of a clone: what happens to each drive (keep, linked clone, full copy, new
//! cloud-init drive) and the latency phases that follow from it. The worker executes it and
//! `/_sim/lower-bound` prices it, so both always agree.

use crate::conf::{is_drive_key, parse_size, Drive, Props};
use crate::latency::Phase;
use crate::sim::Sim;
use crate::storage;

/// What happens to one drive of the source.
#[derive(Debug, Clone)]
pub enum Action {
    /// CD-ROM/ISO/none: the reference is copied as is.
    Keep,
    /// Linked clone of a base volume (same storage).
    Linked { sid: String, volname: String },
    /// Full copy to `sid` in `format`.
    Full {
        src_sid: String,
        src_volname: String,
        sid: String,
        format: String,
    },
    /// A new cloud-init drive on `sid`.
    CloudInit { sid: String },
}

/// One drive of the clone plan.
#[derive(Debug, Clone)]
pub struct DiskJob {
    pub key: String,
    pub drive: Drive,
    pub action: Action,
    pub size: u64,
}

/// Plans the drives of a clone (the same plan drives the worker and the lower bound).
pub fn plan(
    props: &Props,
    full: bool,
    storage_param: Option<&str>,
    format_param: Option<&str>,
) -> Vec<DiskJob> {
    let mut jobs = Vec::new();
    for (k, v) in props {
        if !is_drive_key(k) {
            continue;
        }
        let d = Drive::parse(v);
        let size = d.opt("size").and_then(parse_size).unwrap_or(0);
        let action = match d.volume() {
            _ if d.is_cloudinit() => match d.volume() {
                Some((sid, _)) => Action::CloudInit {
                    sid: sid.to_string(),
                },
                None => Action::Keep,
            },
            Some((sid, volname)) if !d.is_cdrom() => {
                if full {
                    let dst = storage_param.unwrap_or(sid).to_string();
                    let def = storage::def(&dst);
                    let format = match def {
                        Some(def) if def.is_file() => {
                            format_param.unwrap_or(def.default_format()).to_string()
                        }
                        _ => "raw".to_string(),
                    };
                    Action::Full {
                        src_sid: sid.to_string(),
                        src_volname: volname.to_string(),
                        sid: dst,
                        format,
                    }
                } else {
                    Action::Linked {
                        sid: sid.to_string(),
                        volname: volname.to_string(),
                    }
                }
            }
            _ => Action::Keep,
        };
        jobs.push(DiskJob {
            key: k.clone(),
            drive: d,
            action,
            size,
        });
    }
    jobs
}

/// The latency phases of a clone plan (scale 1).
pub fn phases(sim: &Sim, jobs: &[DiskJob], src_node: &str, to_node: &str) -> Vec<Phase> {
    let l = &sim.latencies;
    let mut out = vec![Phase::Free(l.clone_prepare)];
    for j in jobs {
        match &j.action {
            Action::Keep => {}
            Action::Linked { sid, .. } => out.push(Phase::Locked(
                storage::key(src_node, sid),
                l.linked_clone_disk,
            )),
            Action::Full { sid, .. } => {
                out.push(Phase::Locked(storage::key(to_node, sid), l.alloc));
                out.push(Phase::Free(
                    l.full_clone_per_gib * j.size as f64 / (1u64 << 30) as f64,
                ));
            }
            Action::CloudInit { sid } => {
                out.push(Phase::Locked(storage::key(to_node, sid), l.alloc))
            }
        }
    }
    out.push(Phase::Free(l.clone_finish));
    out
}

/// Whether every volume of the source (disks, cloud-init, ISO) is on shared storage.
pub fn all_shared(props: &Props) -> bool {
    props
        .iter()
        .filter(|(k, _)| is_drive_key(k))
        .filter_map(|(_, v)| Drive::parse(v).volume().map(|(s, _)| s.to_string()))
        .all(|sid| storage::def(&sid).is_some_and(|d| d.shared))
}
