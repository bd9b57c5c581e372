//! `POST …/clone` (qs `clone_vm`): synchronous checks, then a `qmclone` worker (UPID id = source
//! vmid) that takes the flocks (1 s), writes the `lock: clone` temp config, clones or copies each
//! disk under its storage lock, re-creates the cloud-init drive, and writes the final config.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;

use super::clone_plan::{all_shared, phases, plan, Action, DiskJob};
use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::conf::{format_size, is_drive_key, Drive, Props, VmConf};
use crate::schema::Params;
use crate::sim::{Sim, Vm};
use crate::storage::{self, Volume};
use crate::tasks::{self, TaskCtx};

/// `POST /nodes/{node}/qemu/{vmid}/clone`.
pub async fn clone(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    let newid = p_u32(&p, "newid");
    let target = p.get("target").filter(|t| **t != node).cloned();
    if let Some(t) = &target {
        if !sim.is_node(t) {
            return Err(ApiError::fail(format!("no such cluster node '{t}'")));
        }
    }
    let src = vm_on(sim, &node, vmid)?;
    check_lock(&src)?;
    let snapname = p.get("snapname").cloned();
    let props = match &snapname {
        Some(s) => src
            .conf
            .snapshots
            .get(s)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{s}' does not exist")))?,
        None => src.conf.props.clone(),
    };
    let full = p_bool(&p, "full").unwrap_or(!src.conf.is_template());
    if !full {
        if p.contains_key("storage") {
            return Err(ApiError::fail(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if p.contains_key("format") {
            return Err(ApiError::fail(
                "parameter 'format' not allowed for linked clones",
            ));
        }
    }
    if let Some(s) = p.get("storage") {
        if storage::def(s).is_none() {
            return Err(ApiError::fail(format!("storage '{s}' does not exist")));
        }
    }
    if !full {
        // volume_has_feature('clone'): file storages and LVM-thin clone base volumes only
        let jobs = plan(&props, false, None, None);
        for j in &jobs {
            if let Action::Linked { volname, .. } = &j.action {
                if !storage::file_name(volname).starts_with("base-") {
                    return Err(ApiError::fail(format!(
                        "Linked clone feature is not supported for drive '{}'",
                        j.key
                    )));
                }
            }
        }
    }
    if let Some(t) = &target {
        if !all_shared(&props) {
            return Err(ApiError::fail(format!(
                "can't clone VM to node '{t}' (VM uses local storage)"
            )));
        }
    }
    if sim.state().vms.contains_key(&newid) {
        return Err(ApiError::fail(format!(
            "unable to create VM {newid}: config file already exists"
        )));
    }
    if let Some(pool) = p.get("pool") {
        if !sim.state().pools.contains_key(pool) {
            return Err(ApiError::fail(format!("pool '{pool}' does not exist")));
        }
    }
    let to_node = target.clone().unwrap_or_else(|| node.clone());
    let jobs = plan(
        &props,
        full,
        p.get("storage").map(String::as_str),
        p.get("format").map(String::as_str),
    );
    sim.record(
        if full { "full_clone" } else { "linked_clone" },
        phases(sim, &jobs, &node, &to_node),
    );
    let sim2 = sim.clone();
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "qmclone",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let r = worker(
                &sim2,
                &ctx,
                &p,
                &node,
                &to_node,
                vmid,
                newid,
                src.running,
                jobs,
            )
            .await;
            let counter = if r.is_ok() {
                &sim2.stats.clones_ok
            } else {
                &sim2.stats.clones_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            r
        },
    );
    Ok(json!(task.upid))
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    sim: &Arc<Sim>,
    ctx: &TaskCtx,
    p: &Params,
    node: &str,
    to_node: &str,
    vmid: u32,
    newid: u32,
    src_running: bool,
    jobs: Vec<DiskJob>,
) -> Result<(), String> {
    // shared flock on the source (exclusive if running), exclusive on newid, both 1 s
    let _src_lock = sim
        .locks
        .lock_vm(node, vmid, !src_running, sim.lock_timeout(1.0))
        .await?;
    let _new_lock = sim
        .locks
        .lock_vm(node, newid, false, sim.lock_timeout(1.0))
        .await?;
    let src = {
        let mut st = sim.state();
        let src = st
            .vms
            .get(&vmid)
            .filter(|v| v.node == node)
            .cloned()
            .ok_or_else(|| super::conf_missing(node, vmid))?;
        check_lock(&src)?;
        if let Some(other) = st.vms.get(&newid) {
            return Err(if other.node == node {
                format!("unable to create VM {newid}: config file already exists")
            } else {
                format!("close (rename) atomic file '/etc/pve/nodes/{node}/qemu-server/{newid}.conf' failed: File exists")
            });
        }
        let mut tmp = VmConf::default();
        tmp.props
            .insert("description".into(), " qmclone temporary file".into());
        tmp.props.insert("lock".into(), "clone".into());
        let vm = Vm::new(newid, node, tmp);
        sim.write_conf(&vm);
        st.vms.insert(newid, vm);
        src
    };
    // checks, firewall config, new identity: still under the newid flock
    let prepared = ctx.work(sim.latencies.clone_prepare).await;
    // from here on the config lock `clone` guards newid, not the flock: like PVE, calls on newid
    // fail with "VM is locked (clone)" until the task ends
    drop(_new_lock);
    if let Err(e) = prepared {
        sim.state().vms.remove(&newid);
        sim.remove_conf(node, newid);
        return Err(format!("clone failed: {e}"));
    }
    let mut made: Vec<(String, String, String)> = Vec::new(); // (node, sid, volname)
    let result = clone_disks(sim, ctx, node, to_node, newid, &jobs, &mut made).await;
    let new_drives = match result {
        Ok(d) => d,
        Err(e) => {
            for (n, sid, vol) in &made {
                sim.free_volume(n, sid, vol);
            }
            sim.state().vms.remove(&newid);
            sim.remove_conf(node, newid);
            return Err(format!("clone failed: {e}"));
        }
    };
    let finish = ctx.work(sim.latencies.clone_finish).await;
    if let Err(e) = finish {
        for (n, sid, vol) in &made {
            sim.free_volume(n, sid, vol);
        }
        sim.state().vms.remove(&newid);
        sim.remove_conf(node, newid);
        return Err(format!("clone failed: {e}"));
    }
    let props = match p.get("snapname") {
        Some(s) => src.conf.snapshots.get(s).cloned().unwrap_or_default(),
        None => src.conf.props.clone(),
    };
    let conf = new_config(sim, &props, p, new_drives);
    if to_node != node {
        ctx.log(format!("moving config to target node '{to_node}'"));
    }
    let mut st = sim.state();
    let vm = Vm::new(newid, to_node, conf);
    sim.remove_conf(node, newid);
    sim.write_conf(&vm);
    st.vms.insert(newid, vm);
    if let Some(pool) = p.get("pool") {
        st.pools.entry(pool.clone()).or_default().vms.push(newid);
    }
    Ok(())
}

async fn clone_disks(
    sim: &Arc<Sim>,
    ctx: &TaskCtx,
    node: &str,
    to_node: &str,
    newid: u32,
    jobs: &[DiskJob],
    made: &mut Vec<(String, String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let mut drives = Vec::new();
    for j in jobs {
        match &j.action {
            Action::Keep => drives.push((j.key.clone(), j.drive.render())),
            Action::Linked { sid, volname } => {
                ctx.log(format!(
                    "create linked clone of drive {} ({sid}:{volname})",
                    j.key
                ));
                let new_volname = linked_clone(sim, ctx, node, sid, volname, newid, j.size).await?;
                made.push((node.to_string(), sid.clone(), new_volname.clone()));
                let mut d = j.drive.clone();
                d.file = format!("{sid}:{new_volname}");
                drives.push((j.key.clone(), d.render()));
            }
            Action::Full {
                src_sid,
                src_volname,
                sid,
                format,
            } => {
                ctx.log(format!(
                    "create full clone of drive {} ({src_sid}:{src_volname})",
                    j.key
                ));
                let (volid, _) = super::volumes::alloc_volume(
                    sim,
                    Some(ctx),
                    to_node,
                    sid,
                    newid,
                    Some(j.size),
                    Some(format),
                )
                .await?;
                let new_volname = volid
                    .split_once(':')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                made.push((to_node.to_string(), sid.clone(), new_volname.clone()));
                copy_with_progress(sim, ctx, j.size).await?;
                let src_path = storage::volume_path(&sim.data_dir, node, src_sid, src_volname);
                let dst_path = storage::volume_path(&sim.data_dir, to_node, sid, &new_volname);
                crate::disks::copy(&src_path, &dst_path, format, j.size, sim.real_files(sid))
                    .await?;
                let mut d = j.drive.clone();
                d.file = volid;
                d.opts.retain(|(k, _)| k != "format");
                d.set_opt("size", &format_size(j.size));
                drives.push((j.key.clone(), d.render()));
            }
            Action::CloudInit { sid } => {
                let (volid, _) =
                    super::volumes::alloc_volume(sim, Some(ctx), to_node, sid, newid, None, None)
                        .await?;
                let new_volname = volid
                    .split_once(':')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                made.push((to_node.to_string(), sid.clone(), new_volname));
                let mut d = j.drive.clone();
                d.file = volid;
                drives.push((j.key.clone(), d.render()));
            }
        }
    }
    Ok(drives)
}

/// `vdisk_clone` under the storage lock: a qcow2 overlay whose backing file is the base image
/// (file storages), or a thin snapshot volume (LVM-thin).
async fn linked_clone(
    sim: &Arc<Sim>,
    ctx: &TaskCtx,
    node: &str,
    sid: &str,
    base: &str,
    newid: u32,
    size: u64,
) -> Result<String, String> {
    let def = storage::def(sid).ok_or_else(|| format!("storage '{sid}' does not exist"))?;
    if !storage::file_name(base).starts_with("base-") {
        return Err("clone_image only works on base images".into());
    }
    let sim2 = sim.clone();
    let (node, sid, base) = (node.to_string(), sid.to_string(), base.to_string());
    sim.storage_step(
        Some(ctx),
        &node.clone(),
        &sid.clone(),
        sim.latencies.linked_clone_disk,
        move || async move {
            let key = storage::key(&node, &sid);
            let n = sim2.state().next_disk_index(&key, newid);
            let (volname, backing, format) = if def.is_file() {
                (
                    format!("{base}/{newid}/vm-{newid}-disk-{n}.qcow2"),
                    format!("../{base}"),
                    "qcow2",
                )
            } else {
                (format!("vm-{newid}-disk-{n}"), base.clone(), "raw")
            };
            if sim2.storage_full(&node, &sid) {
                return Err(sim2.full_error(&node, &sid, &volname));
            }
            sim2.add_volume(
                &node,
                &sid,
                &volname,
                Volume {
                    size,
                    format: format.into(),
                    vmid: Some(newid),
                    parent: Some(base.clone()),
                    ctime: chrono::Utc::now().timestamp(),
                },
            );
            let path = storage::volume_path(&sim2.data_dir, &node, &sid, &volname);
            if let Err(e) =
                crate::disks::create(&path, format, size, Some(&backing), sim2.real_files(&sid))
                    .await
            {
                sim2.free_volume(&node, &sid, &volname);
                return Err(e);
            }
            Ok(volname)
        },
    )
    .await
}

const NIC_MODELS: [&str; 14] = [
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

fn human(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// The data copy of a full clone, outside the storage lock, with PVE's progress lines.
async fn copy_with_progress(sim: &Sim, ctx: &TaskCtx, size: u64) -> Result<(), String> {
    let total = sim.latencies.full_clone_per_gib * size as f64 / (1u64 << 30) as f64;
    let steps = 4u32;
    ctx.log(format!(
        "transferred 0.0 B of {} (0.00%)",
        human(size as f64)
    ));
    for i in 1..=steps {
        ctx.work(total / steps as f64).await?;
        let done = size as f64 * i as f64 / steps as f64;
        ctx.log(format!(
            "transferred {} of {} ({:.2}%)",
            human(done),
            human(size as f64),
            100.0 * i as f64 / steps as f64
        ));
    }
    Ok(())
}

/// The new VM's config: the source's minus template/lock/snapshot keys, new disks, new MACs,
/// new smbios1 uuid and vmgenid, name and description.
fn new_config(sim: &Sim, props: &Props, p: &Params, drives: Vec<(String, String)>) -> VmConf {
    let mut c = VmConf::default();
    for (k, v) in props {
        if matches!(
            k.as_str(),
            "template"
                | "lock"
                | "parent"
                | "snaptime"
                | "vmstate"
                | "runningmachine"
                | "runningcpu"
        ) || k.starts_with("unused")
            || is_drive_key(k)
        {
            continue;
        }
        let v = if k.starts_with("net") && k[3..].chars().all(|c| c.is_ascii_digit()) {
            let mut d = Drive::parse(v);
            let mac = sim.random_mac();
            let mut set = false;
            for (key, val) in d.opts.iter_mut() {
                if key == "macaddr" || NIC_MODELS.contains(&key.as_str()) {
                    *val = mac.clone();
                    set = true;
                }
            }
            if !set {
                d.set_opt("macaddr", &mac);
            }
            d.render()
        } else if k == "smbios1" {
            let mut parts: Vec<String> = v
                .split(',')
                .filter(|s| !s.starts_with("uuid="))
                .map(str::to_string)
                .collect();
            parts.insert(0, format!("uuid={}", sim.random_uuid()));
            parts.join(",")
        } else if k == "vmgenid" && v != "0" {
            sim.random_uuid()
        } else {
            v.clone()
        };
        c.props.insert(k.clone(), v);
    }
    for (k, v) in drives {
        c.props.insert(k, v);
    }
    let name = match (p.get("name"), props.get("name")) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(old)) => Some(format!("Copy-of-VM-{old}")),
        (None, None) => None,
    };
    if let Some(name) = name {
        c.props.insert("name".into(), name);
    }
    if let Some(d) = p.get("description") {
        c.props.insert("description".into(), d.clone());
    }
    c
}
