//! VM create (`qmcreate`) and destroy (`qmdestroy`).

use std::sync::Arc;

use serde_json::json;

use super::volumes::{alloc_request, alloc_volume, free_drive};
use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::conf::{format_size, is_drive_key, Drive, VmConf};
use crate::latency::Phase;
use crate::schema::Params;
use crate::sim::{Sim, Vm};
use crate::storage;
use crate::tasks;

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
