//! QEMU VM list, create, destroy, config get/set, template conversion and resize.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::conf::{format_size, is_drive_key, parse_size, Drive, VmConf};
use crate::latency::Phase;
use crate::schema::Params;
use crate::sim::{Sim, Vm};
use crate::storage::{self, Volume};
use crate::tasks::{self, TaskCtx};

/// The `/nodes/{node}/qemu` entry of a VM.
pub fn vm_entry(vm: &Vm) -> Value {
    let mut v = json!({
        "vmid": vm.vmid,
        "name": vm.conf.props.get("name").cloned().unwrap_or_else(|| format!("VM {}", vm.vmid)),
        "status": if vm.running { "running" } else { "stopped" },
        "cpu": vm.current_cpu(),
        "cpus": vm.cores(),
        "maxmem": vm.maxmem(),
        "mem": if vm.running { vm.maxmem() / 3 } else { 0 },
        "maxdisk": vm.maxdisk(),
        "disk": 0,
        "uptime": vm.uptime(),
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if vm.running {
        v["pid"] = json!(100_000 + vm.vmid);
    }
    if vm.conf.is_template() {
        v["template"] = json!(1);
    }
    if let Some(l) = vm.conf.lock() {
        v["lock"] = json!(l);
    }
    if let Some(t) = vm.conf.props.get("tags") {
        v["tags"] = json!(t);
    }
    v
}

pub fn list(sim: &Arc<Sim>, p: &Params) -> Value {
    let node = p_str(p, "node");
    let st = sim.state();
    Value::Array(
        st.vms
            .values()
            .filter(|v| v.node == node)
            .map(vm_entry)
            .collect(),
    )
}

pub fn digest(conf: &VmConf) -> String {
    let h = Sha256::digest(conf.write().as_bytes());
    hex::encode(h)[..40].to_string()
}

/// `GET …/config`: values typed as the schema's return types say (integers as numbers,
/// `memory` as a string, like PVE 8.4).
pub fn config_get(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let vm = vm_on(sim, p_str(p, "node"), p_u32(p, "vmid"))?;
    let props = match p.get("snapshot") {
        Some(s) => vm
            .conf
            .snapshots
            .get(s)
            .cloned()
            .ok_or_else(|| ApiError::fail(format!("snapshot '{s}' does not exist")))?,
        None => vm.conf.props.clone(),
    };
    let method = crate::schema::schema()
        .find("/nodes/x/qemu/100/config")
        .and_then(|(r, _)| r.methods.get("GET").cloned())
        .unwrap_or(Value::Null);
    let mut out = Map::new();
    for (k, v) in &props {
        let ty = crate::schema::return_type(&method, k);
        let val = match ty.as_deref() {
            Some("integer") | Some("boolean") => v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(v)),
            Some("number") => v
                .parse::<f64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(v)),
            _ => json!(v),
        };
        out.insert(k.clone(), val);
    }
    out.insert("digest".into(), json!(digest(&vm.conf)));
    Ok(Value::Object(out))
}

/// A new-volume request in a drive value: `STORAGE:SIZE_GIB` or `STORAGE:cloudinit`.
fn alloc_request(d: &Drive) -> Option<(String, Option<u64>)> {
    let (sid, rest) = d.volume()?;
    if rest == "cloudinit" {
        return Some((sid.to_string(), None));
    }
    let gib: f64 = rest.parse().ok()?;
    Some((sid.to_string(), Some((gib * (1u64 << 30) as f64) as u64)))
}

/// Allocates one volume under the storage lock; returns its volid.
pub async fn alloc_volume(
    sim: &Arc<Sim>,
    ctx: Option<&TaskCtx>,
    node: &str,
    sid: &str,
    vmid: u32,
    size: Option<u64>,
    format: Option<&str>,
) -> Result<(String, u64), String> {
    let def = storage::def(sid).ok_or_else(|| format!("storage '{sid}' does not exist"))?;
    let format = if def.is_file() {
        format.unwrap_or("qcow2")
    } else {
        "raw"
    }
    .to_string();
    let size_b = size.unwrap_or(4 << 20);
    let sim2 = sim.clone();
    let node2 = node.to_string();
    let sid2 = sid.to_string();
    sim.storage_step(ctx, node, sid, sim.latencies.alloc, move || async move {
        let key = storage::key(&node2, &sid2);
        let volname = match size {
            None => storage::cloudinit_volname(def, vmid),
            Some(_) => {
                let n = sim2.state().next_disk_index(&key, vmid);
                storage::disk_volname(def, vmid, n, &format, false)
            }
        };
        if sim2.storage_full(&node2, &sid2) {
            return Err(sim2.full_error(&node2, &sid2, &volname));
        }
        let path = storage::volume_path(&sim2.data_dir, &node2, &sid2, &volname);
        sim2.add_volume(
            &node2,
            &sid2,
            &volname,
            Volume {
                size: size_b,
                format: format.clone(),
                vmid: Some(vmid),
                parent: None,
                ctime: chrono::Utc::now().timestamp(),
            },
        );
        if let Err(e) =
            crate::disks::create(&path, &format, size_b, None, sim2.real_files(&sid2)).await
        {
            sim2.free_volume(&node2, &sid2, &volname);
            return Err(e);
        }
        Ok((format!("{sid2}:{volname}"), size_b))
    })
    .await
}

/// Frees the volume of a drive under its storage lock.
pub async fn free_drive(
    sim: &Arc<Sim>,
    ctx: Option<&TaskCtx>,
    node: &str,
    d: &Drive,
) -> Result<(), String> {
    let Some((sid, volname)) = d.volume() else {
        return Ok(());
    };
    if volname.starts_with("iso/") || storage::def(sid).is_none() {
        return Ok(());
    }
    let (sid, volname) = (sid.to_string(), volname.to_string());
    let sim2 = sim.clone();
    let node2 = node.to_string();
    sim.storage_step(
        ctx,
        node,
        &sid.clone(),
        sim.latencies.free,
        move || async move {
            let key = storage::key(&node2, &sid);
            let users = sim2
                .state()
                .volumes
                .get(&key)
                .map(|m| {
                    m.values()
                        .filter(|v| v.parent.as_deref() == Some(volname.as_str()))
                        .count()
                })
                .unwrap_or(0);
            if users > 0 {
                return Err(format!(
                    "base volume '{volname}' is still in use by linked clones"
                ));
            }
            sim2.free_volume(&node2, &sid, &volname);
            Ok(())
        },
    )
    .await
}

/// `POST /nodes/{node}/qemu`.
pub async fn create(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    if p.contains_key("archive") {
        return Err(ApiError::fail(
            "restore from archive is not supported by the simulator",
        ));
    }
    let mut conf = VmConf::default();
    let mut allocs = Vec::new();
    for (k, v) in &p {
        match k.as_str() {
            "node"
            | "vmid"
            | "start"
            | "storage"
            | "pool"
            | "bwlimit"
            | "unique"
            | "force"
            | "live-restore"
            | "ha-managed"
            | "import-working-storage" => continue,
            _ => {}
        }
        if is_drive_key(k) {
            let d = Drive::parse(v);
            if let Some((sid, size)) = alloc_request(&d) {
                if storage::def(&sid).is_none() {
                    return Err(ApiError::fail(format!("storage '{sid}' does not exist")));
                }
                allocs.push((k.clone(), d.clone(), sid, size));
            }
        }
        conf.props.insert(k.clone(), v.clone());
    }
    conf.props
        .entry("smbios1".into())
        .or_insert_with(|| format!("uuid={}", sim.random_uuid()));
    conf.props
        .entry("vmgenid".into())
        .or_insert_with(|| sim.random_uuid());
    conf.props.insert("lock".into(), "create".into());
    {
        let mut st = sim.state();
        if st.vms.contains_key(&vmid) {
            return Err(ApiError::fail(format!(
                "unable to create VM {vmid}: config file already exists"
            )));
        }
        let vm = Vm::new(vmid, &node, conf);
        sim.write_conf(&vm);
        st.vms.insert(vmid, vm);
    }
    let mut phases = vec![Phase::Free(sim.latencies.create)];
    for (_, _, sid, _) in &allocs {
        phases.push(Phase::Locked(storage::key(&node, sid), sim.latencies.alloc));
    }
    sim.record("create", phases);
    let start = p_bool(&p, "start").unwrap_or(false);
    let pool = p.get("pool").cloned();
    let sim2 = sim.clone();
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "qmcreate",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = sim2;
            let mut made: Vec<Drive> = Vec::new();
            let r: Result<(), String> = async {
                ctx.work(sim.latencies.create).await?;
                for (key, mut d, sid, size) in allocs {
                    let (volid, bytes) =
                        alloc_volume(&sim, Some(&ctx), &node, &sid, vmid, size, d.opt("format"))
                            .await?;
                    d.file = volid;
                    d.opts.retain(|(k, _)| k != "format" && k != "size");
                    if size.is_some() {
                        d.set_opt("size", &format_size(bytes));
                    } else {
                        d.set_opt("media", "cdrom");
                    }
                    made.push(d.clone());
                    let mut st = sim.state();
                    if let Some(vm) = st.vms.get_mut(&vmid) {
                        vm.conf.props.insert(key, d.render());
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                for d in &made {
                    if let Some((sid, vol)) = d.volume() {
                        sim.free_volume(&node, sid, vol);
                    }
                }
                sim.state().vms.remove(&vmid);
                sim.remove_conf(&node, vmid);
                return Err(format!("unable to create VM {vmid} - {e}"));
            }
            {
                let mut st = sim.state();
                if let Some(vm) = st.vms.get_mut(&vmid) {
                    vm.conf.props.remove("lock");
                    if start {
                        vm.running = true;
                        vm.started_at = chrono::Utc::now().timestamp();
                    }
                    sim.write_conf(vm);
                }
                if let Some(pool) = pool {
                    st.pools.entry(pool).or_default().vms.push(vmid);
                }
            }
            if start {
                sim.write_power(vmid, true);
            }
            Ok(())
        },
    );
    Ok(json!(task.upid))
}

/// `DELETE /nodes/{node}/qemu/{vmid}`.
pub async fn destroy(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    let vm = vm_on(sim, &node, vmid)?;
    if !p_bool(&p, "skiplock").unwrap_or(false) {
        check_lock(&vm)?;
    }
    if vm.running {
        return Err(ApiError::fail(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    if vm.conf.props.get("protection").map(String::as_str) == Some("1") {
        return Err(ApiError::fail("can't remove VM - protection mode enabled"));
    }
    let drives: Vec<Drive> = vm
        .conf
        .props
        .iter()
        .filter(|(k, _)| is_drive_key(k) || k.starts_with("unused"))
        .map(|(_, v)| Drive::parse(v))
        .filter(|d| d.is_cloudinit() || !d.is_cdrom())
        .collect();
    let mut phases = vec![Phase::Free(sim.latencies.delete)];
    for d in &drives {
        if let Some((sid, _)) = d.volume() {
            phases.push(Phase::Locked(storage::key(&node, sid), sim.latencies.free));
        }
    }
    sim.record("destroy", phases);
    let sim2 = sim.clone();
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "qmdestroy",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = sim2;
            let _g = sim
                .locks
                .lock_vm(&node, vmid, false, sim.lock_timeout(10.0))
                .await?;
            {
                let st = sim.state();
                let vm = st
                    .vms
                    .get(&vmid)
                    .ok_or_else(|| super::conf_missing(&node, vmid))?;
                if vm.running {
                    return Err(format!("VM {vmid} is running - destroy failed"));
                }
            }
            // a template's base volumes cannot go while linked clones use them
            for d in &drives {
                if let Some((sid, volname)) = d.volume() {
                    let key = storage::key(&node, sid);
                    let used =
                        sim.state().volumes.get(&key).is_some_and(|m| {
                            m.values().any(|v| v.parent.as_deref() == Some(volname))
                        });
                    if used {
                        return Err(format!(
                            "base volume '{volname}' is still in use by linked clones"
                        ));
                    }
                }
            }
            ctx.work(sim.latencies.delete).await?;
            for d in &drives {
                free_drive(&sim, Some(&ctx), &node, d).await?;
            }
            let mut st = sim.state();
            st.vms.remove(&vmid);
            for pool in st.pools.values_mut() {
                pool.vms.retain(|v| *v != vmid);
            }
            drop(st);
            sim.remove_conf(&node, vmid);
            sim.write_power(vmid, false);
            Ok(())
        },
    );
    Ok(json!(task.upid))
}

const NOT_CONFIG: [&str; 7] = [
    "node",
    "vmid",
    "digest",
    "delete",
    "revert",
    "skiplock",
    "background_delay",
];

/// `POST …/config` (async, UPID) and `PUT …/config` (sync, null).
pub async fn config_set(sim: &Arc<Sim>, user: &User, p: Params, sync: bool) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    vm_on(sim, &node, vmid)?;
    let _g = sim
        .locks
        .lock_vm(&node, vmid, false, sim.lock_timeout(10.0))
        .await
        .map_err(ApiError::fail)?;
    let vm = vm_on(sim, &node, vmid)?;
    if let Some(d) = p.get("digest") {
        if *d != digest(&vm.conf) {
            return Err(ApiError::fail(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    if !p_bool(&p, "skiplock").unwrap_or(false) {
        check_lock(&vm)?;
    }
    let mut conf = vm.conf.clone();
    let mut to_free = Vec::new();
    if let Some(del) = p.get("delete") {
        for k in del.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
            if let Some(old) = conf.props.remove(k) {
                let d = Drive::parse(&old);
                if is_drive_key(k) && !d.is_cdrom() {
                    let n = (0..)
                        .find(|i| !conf.props.contains_key(&format!("unused{i}")))
                        .unwrap_or(0);
                    conf.props.insert(format!("unused{n}"), d.file.clone());
                } else if is_drive_key(k) && d.is_cloudinit() {
                    to_free.push(d);
                }
            }
        }
    }
    for (k, v) in &p {
        if NOT_CONFIG.contains(&k.as_str()) {
            continue;
        }
        let mut value = v.clone();
        if is_drive_key(k) {
            let d = Drive::parse(v);
            if let Some((sid, size)) = alloc_request(&d) {
                let (volid, bytes) =
                    alloc_volume(sim, None, &node, &sid, vmid, size, d.opt("format")).await?;
                let mut nd = d.clone();
                nd.file = volid;
                nd.opts.retain(|(k, _)| k != "format" && k != "size");
                if size.is_some() {
                    nd.set_opt("size", &format_size(bytes));
                } else {
                    nd.set_opt("media", "cdrom");
                }
                value = nd.render();
            }
        }
        conf.props.insert(k.clone(), value);
    }
    for d in &to_free {
        free_drive(sim, None, &node, d).await?;
    }
    {
        let mut st = sim.state();
        if let Some(vm) = st.vms.get_mut(&vmid) {
            vm.conf = conf;
            sim.write_conf(vm);
        }
    }
    if sync {
        return Ok(Value::Null);
    }
    let lat = sim.latencies.config;
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "qmconfig",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move { ctx.work(lat).await },
    );
    Ok(json!(task.upid))
}

/// `POST …/template`: checks run before forking; disks become `base-<vmid>-disk-N`.
pub async fn template(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    let vm = vm_on(sim, &node, vmid)?;
    check_lock(&vm)?;
    if vm.conf.is_template() {
        return Err(ApiError::fail("you can't convert a template to a template"));
    }
    if vm.running {
        return Err(ApiError::fail(
            "you can't convert a VM to template if VM is running",
        ));
    }
    if !vm.conf.snapshots.is_empty() {
        return Err(ApiError::fail(
            "unable to create template, because VM contains snapshots",
        ));
    }
    let only = p.get("disk").cloned();
    sim.record("template", vec![Phase::Free(sim.latencies.template)]);
    let sim2 = sim.clone();
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "qmtemplate",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = sim2;
            let _g = sim
                .locks
                .lock_vm(&node, vmid, false, sim.lock_timeout(10.0))
                .await?;
            ctx.work(sim.latencies.template).await?;
            let props = sim
                .state()
                .vms
                .get(&vmid)
                .map(|v| v.conf.props.clone())
                .unwrap_or_default();
            let mut new_props = props.clone();
            for (k, v) in &props {
                if !is_drive_key(k) || only.as_ref().is_some_and(|o| o != k) {
                    continue;
                }
                let mut d = Drive::parse(v);
                if d.is_cdrom() || d.is_cloudinit() {
                    continue;
                }
                let Some((sid, volname)) = d.volume().map(|(a, b)| (a.to_string(), b.to_string()))
                else {
                    continue;
                };
                let file = storage::file_name(&volname);
                let Some(rest) = file.strip_prefix("vm-") else {
                    continue;
                };
                let new_file = format!("base-{rest}");
                let new_volname = volname.replace(file, &new_file);
                let from = storage::volume_path(&sim.data_dir, &node, &sid, &volname);
                let to = storage::volume_path(&sim.data_dir, &node, &sid, &new_volname);
                crate::disks::rename(&from, &to)?;
                {
                    let mut st = sim.state();
                    let key = storage::key(&node, &sid);
                    if let Some(vol) = st.remove_volume(&key, &volname) {
                        st.insert_volume(&key, &new_volname, vol);
                    }
                }
                d.file = format!("{sid}:{new_volname}");
                new_props.insert(k.clone(), d.render());
            }
            new_props.insert("template".into(), "1".into());
            let mut st = sim.state();
            if let Some(vm) = st.vms.get_mut(&vmid) {
                vm.conf.props = new_props;
                sim.write_conf(vm);
            }
            Ok(())
        },
    );
    Ok(json!(task.upid))
}

/// `PUT …/resize` (a `resize` task since PVE 8.0).
pub fn resize(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let node = p_str(&p, "node").to_string();
    let vmid = p_u32(&p, "vmid");
    vm_on(sim, &node, vmid)?;
    let disk = p_str(&p, "disk").to_string();
    let size = p_str(&p, "size").to_string();
    let sim2 = sim.clone();
    let task = tasks::spawn(
        sim,
        &node.clone(),
        "resize",
        &vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = sim2;
            let _g = sim
                .locks
                .lock_vm(&node, vmid, false, sim.lock_timeout(10.0))
                .await?;
            let vm = sim
                .state()
                .vms
                .get(&vmid)
                .cloned()
                .ok_or_else(|| super::conf_missing(&node, vmid))?;
            if !p_bool(&p, "skiplock").unwrap_or(false) {
                check_lock(&vm)?;
            }
            let mut d = Drive::parse(
                vm.conf
                    .props
                    .get(&disk)
                    .ok_or_else(|| format!("disk '{disk}' does not exist"))?,
            );
            if d.is_cdrom() {
                return Err("you can't resize a cdrom".to_string());
            }
            let cur = d.opt("size").and_then(parse_size).unwrap_or(0);
            let (add, num) = match size.strip_prefix('+') {
                Some(n) => (true, n),
                None => (false, size.as_str()),
            };
            let n = parse_size(num).ok_or_else(|| format!("invalid size '{size}'"))?;
            let new = if add { cur + n } else { n };
            if new < cur {
                return Err("shrinking disks is not supported".into());
            }
            ctx.work(sim.latencies.config).await?;
            if let Some((sid, volname)) = d.volume() {
                crate::disks::resize(
                    &storage::volume_path(&sim.data_dir, &node, sid, volname),
                    new,
                )
                .await?;
                if let Some(v) = sim
                    .state()
                    .volumes
                    .get_mut(&storage::key(&node, sid))
                    .and_then(|m| m.get_mut(volname))
                {
                    v.size = new;
                }
            }
            d.set_opt("size", &format_size(new));
            let mut st = sim.state();
            if let Some(vm) = st.vms.get_mut(&vmid) {
                vm.conf.props.insert(disk.clone(), d.render());
                sim.write_conf(vm);
            }
            Ok(())
        },
    );
    Ok(json!(task.upid))
}
