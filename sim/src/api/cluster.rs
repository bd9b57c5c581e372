//! Cluster-wide and node reads: version, nodes, node status, /cluster/resources, /cluster/status,
//! /cluster/nextid (racy: reserves nothing), storages and their content, pools, rrddata.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{p_str, p_u32, vm_on, ApiError, ApiResult};
use crate::schema::Params;
use crate::sim::{node_ip, Sim};
use crate::storage::{self, STORAGES};

const NODE_CPUS: u64 = 16;
const NODE_MEM: u64 = 64 << 30;

pub fn version() -> Value {
    json!({"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d", "console": "xtermjs"})
}

fn node_load(sim: &Sim, node: &str) -> (f64, u64) {
    let st = sim.state();
    let vms = st.vms.values().filter(|v| v.node == node && v.running);
    let (mut cpu, mut mem) = (0.0, 2u64 << 30);
    for v in vms {
        cpu += v.current_cpu() * v.cores() as f64;
        mem += v.maxmem() / 3;
    }
    ((cpu / NODE_CPUS as f64).min(1.0), mem.min(NODE_MEM))
}

pub fn nodes(sim: &Arc<Sim>) -> Value {
    let fp = sim.fingerprint();
    let uptime = chrono::Utc::now().timestamp() - sim.booted + 86_400;
    Value::Array(
        sim.nodes
            .iter()
            .map(|n| {
                let online = !sim.node_offline(n);
                let (cpu, mem) = node_load(sim, n);
                let mut v = json!({
                    "node": n, "status": if online { "online" } else { "offline" }, "type": "node",
                    "id": format!("node/{n}"), "level": "",
                });
                if online {
                    v["cpu"] = json!(cpu);
                    v["maxcpu"] = json!(NODE_CPUS);
                    v["mem"] = json!(mem);
                    v["maxmem"] = json!(NODE_MEM);
                    v["uptime"] = json!(uptime);
                    v["disk"] = json!(8u64 << 30);
                    v["maxdisk"] = json!(100u64 << 30);
                }
                if let Some(fp) = &fp {
                    v["ssl_fingerprint"] = json!(fp);
                }
                v
            })
            .collect(),
    )
}

pub fn node_status(sim: &Arc<Sim>, p: &Params) -> Value {
    let (cpu, mem) = node_load(sim, p_str(p, "node"));
    json!({
        "cpu": cpu,
        "cpuinfo": {"cores": 8, "cpus": NODE_CPUS, "model": "Simulated CPU @ 3.00GHz", "sockets": 1, "mhz": "3000.000"},
        "loadavg": [format!("{:.2}", cpu * 16.0), "0.50", "0.40"],
        "memory": {"total": NODE_MEM, "used": mem, "free": NODE_MEM - mem, "available": NODE_MEM - mem},
        "rootfs": {"total": 100u64 << 30, "used": 8u64 << 30, "free": 92u64 << 30, "avail": 92u64 << 30},
        "pveversion": "pve-manager/8.4.1/2a5fa54a8503f96d",
        "kversion": "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9",
        "current-kernel": {"machine": "x86_64", "release": "6.8.12-9-pve", "sysname": "Linux", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9"},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "uptime": chrono::Utc::now().timestamp() - sim.booted + 86_400,
        "idle": 0,
    })
}

fn storage_usage(sim: &Sim, node: &str, id: &str) -> u64 {
    sim.state()
        .volumes
        .get(&storage::key(node, id))
        .map(|m| {
            m.values()
                .map(|v| {
                    if v.parent.is_some() {
                        v.size / 50
                    } else {
                        v.size / 10
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn storage_entry(sim: &Sim, node: &str, def: &storage::StorageDef) -> Value {
    let used = storage_usage(sim, node, def.id).min(def.total);
    let full = sim.storage_full(node, def.id);
    let used = if full { def.total } else { used };
    json!({
        "storage": def.id, "type": def.type_name(), "content": def.content,
        "shared": u8::from(def.shared), "active": 1, "enabled": 1,
        "total": def.total, "used": used, "avail": def.total - used,
        "used_fraction": used as f64 / def.total as f64,
    })
}

pub fn resources(sim: &Arc<Sim>, p: &Params) -> Value {
    let ty = p.get("type").map(String::as_str);
    let mut out = Vec::new();
    if ty.is_none() || ty == Some("node") {
        if let Value::Array(n) = nodes(sim) {
            out.extend(n);
        }
    }
    if ty.is_none() || ty == Some("storage") {
        for n in &sim.nodes {
            for def in &STORAGES {
                let e = storage_entry(sim, n, def);
                out.push(json!({
                    "id": format!("storage/{n}/{}", def.id), "type": "storage", "storage": def.id, "node": n,
                    "status": if sim.node_offline(n) { "unknown" } else { "available" },
                    "plugintype": def.type_name(), "content": def.content, "shared": u8::from(def.shared),
                    "disk": e["used"], "maxdisk": e["total"],
                }));
            }
        }
    }
    if ty.is_none() || ty == Some("vm") {
        let offline = sim.faults().config.node_offline.clone();
        let st = sim.state();
        for vm in st.vms.values() {
            let mut v = super::qemu::vm_entry(vm);
            v["id"] = json!(format!("qemu/{}", vm.vmid));
            v["type"] = json!("qemu");
            v["node"] = json!(vm.node);
            v["maxcpu"] = json!(vm.cores());
            v["template"] = json!(u8::from(vm.conf.is_template()));
            if offline.contains(&vm.node) {
                v["status"] = json!("unknown");
            }
            if let Some(pool) = st.pools.iter().find(|(_, p)| p.vms.contains(&vm.vmid)) {
                v["pool"] = json!(pool.0);
            }
            out.push(v);
        }
    }
    if ty.is_none() {
        let st = sim.state();
        for (id, _) in st.pools.iter() {
            out.push(json!({"id": format!("pool/{id}"), "type": "pool", "pool": id}));
        }
    }
    Value::Array(out)
}

pub fn status(sim: &Arc<Sim>) -> Value {
    let online = sim.nodes.iter().filter(|n| !sim.node_offline(n)).count();
    let mut out = vec![json!({
        "type": "cluster", "id": "cluster", "name": "labfleet-sim", "nodes": sim.nodes.len(),
        "quorate": u8::from(online * 2 > sim.nodes.len()), "version": sim.nodes.len() + 2,
    })];
    for (i, n) in sim.nodes.iter().enumerate() {
        out.push(json!({
            "type": "node", "id": format!("node/{n}"), "name": n, "ip": node_ip(i).to_string(),
            "nodeid": i + 1, "online": u8::from(!sim.node_offline(n)), "local": u8::from(i == 0), "level": "",
        }));
    }
    Value::Array(out)
}

/// `GET /cluster/nextid`: lowest free id >= 100, reserving nothing.
pub fn nextid(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let st = sim.state();
    if let Some(v) = p.get("vmid") {
        let n: u32 = v.parse().unwrap_or(0);
        if st.vms.contains_key(&n) {
            return Err(ApiError::param("vmid", format!("VM {n} already exists")));
        }
        return Ok(json!(n.to_string()));
    }
    let id = (100u32..).find(|i| !st.vms.contains_key(i)).unwrap_or(100);
    // PVE returns the id as a string
    Ok(json!(id.to_string()))
}

pub fn storage_list(sim: &Arc<Sim>, p: &Params) -> Value {
    let node = p_str(p, "node");
    let content = p.get("content");
    let only = p.get("storage");
    Value::Array(
        STORAGES
            .iter()
            .filter(|d| only.is_none_or(|o| o == d.id))
            .filter(|d| {
                content.is_none_or(|c| c.split(',').all(|c| d.content.split(',').any(|x| x == c)))
            })
            .map(|d| storage_entry(sim, node, d))
            .collect(),
    )
}

pub fn storage_content(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let node = p_str(p, "node");
    let sid = p_str(p, "storage");
    storage::def(sid).ok_or_else(|| ApiError::fail(format!("storage '{sid}' does not exist")))?;
    let content = p.get("content").map(String::as_str);
    let vmid = p.get("vmid").and_then(|v| v.parse::<u32>().ok());
    let st = sim.state();
    let mut out = Vec::new();
    if let Some(m) = st.volumes.get(&storage::key(node, sid)) {
        for (volname, vol) in m {
            if content.is_some_and(|c| c != vol.content())
                || vmid.is_some_and(|id| vol.vmid != Some(id))
            {
                continue;
            }
            let mut v = json!({
                "volid": format!("{sid}:{volname}"), "format": vol.format, "size": vol.size,
                "content": vol.content(), "ctime": vol.ctime,
            });
            if let Some(id) = vol.vmid {
                v["vmid"] = json!(id);
                v["used"] = json!(if vol.parent.is_some() {
                    vol.size / 50
                } else {
                    vol.size / 10
                });
            }
            if let Some(parent) = &vol.parent {
                v["parent"] = json!(parent);
            }
            out.push(v);
        }
    }
    Ok(Value::Array(out))
}

pub fn pools_get(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let st = sim.state();
    let entry = |id: &String, pool: &crate::sim::Pool| {
        let members: Vec<Value> = pool
            .vms
            .iter()
            .filter_map(|v| st.vms.get(v))
            .map(|vm| json!({"id": format!("qemu/{}", vm.vmid), "node": vm.node, "type": "qemu", "vmid": vm.vmid}))
            .collect();
        json!({"poolid": id, "comment": pool.comment, "members": members})
    };
    match p.get("poolid") {
        Some(id) => {
            let pool = st
                .pools
                .get(id)
                .ok_or_else(|| ApiError::fail(format!("pool '{id}' does not exist")))?;
            Ok(json!([entry(id, pool)]))
        }
        None => Ok(Value::Array(
            st.pools.iter().map(|(id, p)| entry(id, p)).collect(),
        )),
    }
}

pub fn pools_post(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let id = p_str(p, "poolid").to_string();
    let mut st = sim.state();
    if st.pools.contains_key(&id) {
        return Err(ApiError::fail(format!("pool '{id}' already exists")));
    }
    st.pools.insert(
        id,
        crate::sim::Pool {
            comment: p.get("comment").cloned().unwrap_or_default(),
            ..Default::default()
        },
    );
    Ok(Value::Null)
}

pub fn pools_put(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let id = p_str(p, "poolid").to_string();
    let delete = p.get("delete").is_some_and(|d| d == "1");
    let mut st = sim.state();
    let vms: Vec<u32> = p
        .get("vms")
        .map(|v| {
            v.split([',', ';', ' '])
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for v in &vms {
        if !st.vms.contains_key(v) {
            return Err(ApiError::fail(format!("no such VMID '{v}'")));
        }
    }
    let pool = st
        .pools
        .get_mut(&id)
        .ok_or_else(|| ApiError::fail(format!("pool '{id}' does not exist")))?;
    if let Some(c) = p.get("comment") {
        pool.comment = c.clone();
    }
    for v in vms {
        if delete {
            pool.vms.retain(|x| *x != v);
        } else if !pool.vms.contains(&v) {
            pool.vms.push(v);
        }
    }
    Ok(Value::Null)
}

/// `GET …/rrddata`: samples of the CPU load history (set through `/_sim/vms/{vmid}/cpu`).
pub fn rrddata(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let vm = vm_on(sim, p_str(p, "node"), p_u32(p, "vmid"))?;
    let step: i64 = match p_str(p, "timeframe") {
        "hour" => 60,
        "day" => 1440,
        "week" => 10080,
        "month" => 43200,
        _ => 525_600,
    };
    let now = chrono::Utc::now().timestamp();
    let end = now - now % step;
    let maxmem = vm.maxmem();
    let mut out = Vec::with_capacity(70);
    for i in (0..70).rev() {
        let t = end - i * step;
        let cpu = cpu_at(&vm, t, now);
        out.push(json!({
            "time": t, "cpu": cpu, "maxcpu": vm.cores(), "mem": if cpu > 0.0 { maxmem / 3 } else { 0 },
            "maxmem": maxmem, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            "disk": 0, "maxdisk": vm.maxdisk(),
        }));
    }
    Ok(Value::Array(out))
}

fn cpu_at(vm: &crate::sim::Vm, t: i64, now: i64) -> f64 {
    if t >= now - 60 {
        return vm.current_cpu();
    }
    vm.cpu_hist
        .iter()
        .rev()
        .find(|(ts, _)| *ts <= t)
        .map(|(_, c)| *c)
        .unwrap_or(if vm.running && vm.started_at <= t {
            vm.cpu
        } else {
            0.0
        })
}
