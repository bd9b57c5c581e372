//! QEMU VM list, config get/set, template conversion and resize.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::conf::{format_size, is_drive_key, parse_size, Drive, VmConf};
use crate::latency::Phase;
use crate::schema::Params;
use crate::sim::{Sim, Vm};
use crate::storage;
use crate::tasks;

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
            if let Some((sid, size)) = super::volumes::alloc_request(&d) {
                let (volid, bytes) = super::volumes::alloc_volume(
                    sim,
                    None,
                    &node,
                    &sid,
                    vmid,
                    size,
                    d.opt("format"),
                )
                .await?;
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
        super::volumes::free_drive(sim, None, &node, d).await?;
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
