//! Snapshots: list, create, delete, rollback (`[name]` sections in the config, internal qcow2
//! snapshots on file storages).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::conf::{is_drive_key, Drive, Props};
use crate::latency::Phase;
use crate::schema::Params;
use crate::sim::Sim;
use crate::storage;
use crate::tasks::{self, TaskCtx};

pub fn list(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let vm = vm_on(sim, p_str(p, "node"), p_u32(p, "vmid"))?;
    let mut out: Vec<Value> = vm
        .conf
        .snapshots
        .iter()
        .map(|(name, s)| {
            let mut v = json!({
                "name": name,
                "description": s.get("description").cloned().unwrap_or_default(),
                "snaptime": s.get("snaptime").and_then(|t| t.parse::<i64>().ok()).unwrap_or(0),
            });
            if let Some(parent) = s.get("parent") {
                v["parent"] = json!(parent);
            }
            if s.contains_key("vmstate") {
                v["vmstate"] = json!(1);
            }
            v
        })
        .collect();
    let mut current =
        json!({"name": "current", "description": "You are here!", "running": u8::from(vm.running)});
    if let Some(parent) = vm.conf.props.get("parent") {
        current["parent"] = json!(parent);
    }
    out.push(current);
    Ok(Value::Array(out))
}

/// Applies a qemu-img snapshot op to every qcow2 disk of `props`.
async fn disks_op(
    sim: &Sim,
    node: &str,
    props: &Props,
    op: &str,
    name: &str,
) -> Result<(), String> {
    for (k, v) in props {
        if !is_drive_key(k) {
            continue;
        }
        let d = Drive::parse(v);
        if d.is_cdrom() || d.is_cloudinit() {
            continue;
        }
        if let Some((sid, volname)) = d.volume() {
            if storage::def(sid).is_some_and(|s| s.is_file()) {
                crate::disks::snapshot(
                    &storage::volume_path(&sim.data_dir, node, sid, volname),
                    op,
                    name,
                )
                .await?;
            }
        }
    }
    Ok(())
}

fn set_lock(sim: &Sim, vmid: u32, lock: Option<&str>) {
    let mut st = sim.state();
    if let Some(vm) = st.vms.get_mut(&vmid) {
        match lock {
            Some(l) => vm.conf.props.insert("lock".into(), l.into()),
            None => vm.conf.props.remove("lock"),
        };
        sim.write_conf(vm);
    }
}

struct Job {
    node: String,
    vmid: u32,
    snap: String,
}

fn job(p: &Params) -> Job {
    Job {
        node: p_str(p, "node").to_string(),
        vmid: p_u32(p, "vmid"),
        snap: p_str(p, "snapname").to_string(),
    }
}

async fn prologue(
    ctx: &TaskCtx,
    j: &Job,
) -> Result<(crate::sim::Vm, crate::locks::VmGuard), String> {
    let sim = &ctx.sim;
    let g = sim
        .locks
        .lock_vm(&j.node, j.vmid, false, sim.lock_timeout(10.0))
        .await?;
    let vm = sim
        .state()
        .vms
        .get(&j.vmid)
        .filter(|v| v.node == j.node)
        .cloned()
        .ok_or_else(|| super::conf_missing(&j.node, j.vmid))?;
    check_lock(&vm)?;
    Ok((vm, g))
}

pub fn create(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let j = job(&p);
    vm_on(sim, &j.node, j.vmid)?;
    if j.snap == "current" {
        return Err(ApiError::fail(
            "unable to use snapshot name 'current' (reserved name)",
        ));
    }
    let description = p.get("description").cloned();
    let vmstate = p_bool(&p, "vmstate").unwrap_or(false);
    sim.record("snapshot", vec![Phase::Free(sim.latencies.snapshot)]);
    let task = tasks::spawn(
        sim,
        &j.node.clone(),
        "qmsnapshot",
        &j.vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = ctx.sim.clone();
            let (vm, _g) = prologue(&ctx, &j).await?;
            if vm.conf.is_template() {
                return Err("you can't take a snapshot if it's a template".into());
            }
            if vm.conf.snapshots.contains_key(&j.snap) {
                return Err(format!("snapshot name '{}' already used", j.snap));
            }
            set_lock(&sim, j.vmid, Some("snapshot"));
            let r = async {
                ctx.work(sim.latencies.snapshot).await?;
                disks_op(&sim, &j.node, &vm.conf.props, "-c", &j.snap).await
            }
            .await;
            let mut st = sim.state();
            if let Some(v) = st.vms.get_mut(&j.vmid) {
                v.conf.props.remove("lock");
                if r.is_ok() {
                    let mut snap = v.conf.props.clone();
                    snap.remove("description");
                    if let Some(d) = &description {
                        snap.insert("description".into(), d.clone());
                    }
                    snap.insert(
                        "snaptime".into(),
                        chrono::Utc::now().timestamp().to_string(),
                    );
                    if vmstate && v.running {
                        snap.insert("vmstate".into(), "1".into());
                    }
                    v.conf.snapshots.insert(j.snap.clone(), snap);
                    v.conf.props.insert("parent".into(), j.snap.clone());
                }
                sim.write_conf(v);
            }
            r
        },
    );
    Ok(json!(task.upid))
}

pub fn delete(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let j = job(&p);
    vm_on(sim, &j.node, j.vmid)?;
    sim.record(
        "delete_snapshot",
        vec![Phase::Free(sim.latencies.delete_snapshot)],
    );
    let task = tasks::spawn(
        sim,
        &j.node.clone(),
        "qmdelsnapshot",
        &j.vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = ctx.sim.clone();
            let (vm, _g) = prologue(&ctx, &j).await?;
            let snap = vm
                .conf
                .snapshots
                .get(&j.snap)
                .cloned()
                .ok_or_else(|| format!("snapshot '{}' does not exist", j.snap))?;
            ctx.work(sim.latencies.delete_snapshot).await?;
            disks_op(&sim, &j.node, &snap, "-d", &j.snap).await?;
            let mut st = sim.state();
            if let Some(v) = st.vms.get_mut(&j.vmid) {
                let parent = snap.get("parent").cloned();
                v.conf.snapshots.remove(&j.snap);
                let fix = |props: &mut Props| {
                    if props.get("parent") == Some(&j.snap) {
                        match &parent {
                            Some(pp) => props.insert("parent".into(), pp.clone()),
                            None => props.remove("parent"),
                        };
                    }
                };
                fix(&mut v.conf.props);
                for s in v.conf.snapshots.values_mut() {
                    fix(s);
                }
                sim.write_conf(v);
            }
            Ok(())
        },
    );
    Ok(json!(task.upid))
}

pub fn rollback(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    let j = job(&p);
    vm_on(sim, &j.node, j.vmid)?;
    let start = p_bool(&p, "start").unwrap_or(false);
    sim.record("rollback", vec![Phase::Free(sim.latencies.rollback)]);
    let task = tasks::spawn(
        sim,
        &j.node.clone(),
        "qmrollback",
        &j.vmid.to_string(),
        &user.id,
        move |ctx| async move {
            let sim = ctx.sim.clone();
            let (vm, _g) = prologue(&ctx, &j).await?;
            let snap = vm
                .conf
                .snapshots
                .get(&j.snap)
                .cloned()
                .ok_or_else(|| format!("snapshot '{}' does not exist", j.snap))?;
            set_lock(&sim, j.vmid, Some("rollback"));
            let r = async {
                ctx.work(sim.latencies.rollback).await?;
                disks_op(&sim, &j.node, &snap, "-a", &j.snap).await
            }
            .await;
            let mut st = sim.state();
            if let Some(v) = st.vms.get_mut(&j.vmid) {
                v.conf.props.remove("lock");
                if r.is_ok() {
                    let mut props = snap.clone();
                    props.remove("snaptime");
                    props.remove("vmstate");
                    props.remove("description");
                    if let Some(d) = vm.conf.props.get("description") {
                        props.insert("description".into(), d.clone());
                    }
                    props.insert("parent".into(), j.snap.clone());
                    v.conf.props = props;
                    v.running = start;
                    v.paused = false;
                    if start {
                        v.started_at = chrono::Utc::now().timestamp();
                    }
                }
                sim.write_conf(v);
            }
            drop(st);
            if r.is_ok() {
                sim.write_power(j.vmid, start);
            }
            r
        },
    );
    Ok(json!(task.upid))
}
