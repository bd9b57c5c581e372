//! Power state: status/current, start, stop, shutdown (forceStop, timeout, guests that ignore
//! ACPI), reboot, reset, suspend, resume. Lock errors of start/stop/shutdown come in the task.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{check_lock, p_bool, p_str, p_u32, vm_on, ApiError, ApiResult, User};
use crate::latency::Phase;
use crate::schema::Params;
use crate::sim::Sim;
use crate::tasks::{self, TaskCtx};

/// `GET …/status/current`.
pub fn current(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let vm = vm_on(sim, p_str(p, "node"), p_u32(p, "vmid"))?;
    let mut v = super::qemu::vm_entry(&vm);
    v["qmpstatus"] = json!(if !vm.running {
        "stopped"
    } else if vm.paused {
        "paused"
    } else {
        "running"
    });
    v["ha"] = json!({"managed": 0});
    let agent = vm
        .conf
        .props
        .get("agent")
        .is_some_and(|a| a.starts_with('1') || a.contains("enabled=1"));
    if agent {
        v["agent"] = json!(1);
    }
    Ok(v)
}

fn set_running(sim: &Sim, vmid: u32, running: bool) {
    let mut st = sim.state();
    if let Some(vm) = st.vms.get_mut(&vmid) {
        vm.running = running;
        vm.paused = false;
        let now = chrono::Utc::now().timestamp();
        if running {
            vm.started_at = now;
        }
        let cpu = vm.current_cpu();
        vm.cpu_hist.push((now, cpu));
        if vm.cpu_hist.len() > 200 {
            vm.cpu_hist.remove(0);
        }
    }
    drop(st);
    sim.write_power(vmid, running);
}

async fn locked_vm_check(
    sim: &Sim,
    node: &str,
    vmid: u32,
    skiplock: bool,
) -> Result<crate::sim::Vm, String> {
    let vm = sim
        .state()
        .vms
        .get(&vmid)
        .filter(|v| v.node == node)
        .cloned()
        .ok_or_else(|| super::conf_missing(node, vmid))?;
    if !skiplock {
        check_lock(&vm)?;
    }
    Ok(vm)
}

fn spawn(
    sim: &Arc<Sim>,
    user: &User,
    p: &Params,
    kind: &str,
    body: impl FnOnce(
            TaskCtx,
            String,
            u32,
            bool,
        ) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send
        + 'static,
) -> Value {
    let node = p_str(p, "node").to_string();
    let vmid = p_u32(p, "vmid");
    let skiplock = p_bool(p, "skiplock").unwrap_or(false);
    let n2 = node.clone();
    let task = tasks::spawn(sim, &node, kind, &vmid.to_string(), &user.id, move |ctx| {
        body(ctx, n2, vmid, skiplock)
    });
    json!(task.upid)
}

/// `POST …/status/start`.
pub fn start(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    vm_on(sim, p_str(&p, "node"), p_u32(&p, "vmid"))?;
    sim.record("start", vec![Phase::Free(sim.latencies.start)]);
    Ok(spawn(
        sim,
        user,
        &p,
        "qmstart",
        |ctx, node, vmid, skiplock| {
            Box::pin(async move {
                let sim = ctx.sim.clone();
                let _g = sim
                    .locks
                    .lock_vm(&node, vmid, false, sim.lock_timeout(10.0))
                    .await?;
                let vm = locked_vm_check(&sim, &node, vmid, skiplock).await?;
                if vm.conf.is_template() {
                    return Err("you can't start a vm if it's a template".into());
                }
                if vm.running {
                    return Err(format!("VM {vmid} already running"));
                }
                ctx.work(sim.latencies.start).await?;
                set_running(&sim, vmid, true);
                Ok(())
            })
        },
    ))
}

/// `POST …/status/stop`: a stopped VM is fine.
pub fn stop(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    vm_on(sim, p_str(&p, "node"), p_u32(&p, "vmid"))?;
    sim.record("stop", vec![Phase::Free(sim.latencies.stop)]);
    Ok(spawn(
        sim,
        user,
        &p,
        "qmstop",
        |ctx, node, vmid, skiplock| {
            Box::pin(async move {
                let sim = ctx.sim.clone();
                let vm = locked_vm_check(&sim, &node, vmid, skiplock).await?;
                if !vm.running {
                    return Ok(());
                }
                ctx.work(sim.latencies.stop).await?;
                set_running(&sim, vmid, false);
                Ok(())
            })
        },
    ))
}

/// `POST …/status/shutdown` with `forceStop` and `timeout`.
pub fn shutdown(sim: &Arc<Sim>, user: &User, p: Params) -> ApiResult {
    vm_on(sim, p_str(&p, "node"), p_u32(&p, "vmid"))?;
    let force = p_bool(&p, "forceStop").unwrap_or(false);
    let timeout: f64 = p
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60.0);
    sim.record("shutdown", vec![Phase::Free(sim.latencies.shutdown)]);
    Ok(spawn(
        sim,
        user,
        &p,
        "qmshutdown",
        move |ctx, node, vmid, skiplock| {
            Box::pin(async move {
                let sim = ctx.sim.clone();
                let vm = locked_vm_check(&sim, &node, vmid, skiplock).await?;
                if !vm.running {
                    return Ok(());
                }
                if sim.faults().config.ignore_acpi.contains(&vmid) {
                    ctx.work(timeout).await?;
                    if !force {
                        return Err("VM quit/powerdown failed - got timeout".into());
                    }
                    ctx.log("VM still running - terminating now with SIGTERM");
                    ctx.work(sim.latencies.stop).await?;
                } else {
                    ctx.work(sim.latencies.shutdown.min(timeout)).await?;
                }
                set_running(&sim, vmid, false);
                Ok(())
            })
        },
    ))
}

/// reboot/reset/suspend/resume: `VM <vmid> not running` is checked before forking.
pub fn simple(sim: &Arc<Sim>, user: &User, p: Params, kind: &'static str) -> ApiResult {
    let vmid = p_u32(&p, "vmid");
    let vm = vm_on(sim, p_str(&p, "node"), vmid)?;
    if !vm.running {
        return Err(ApiError::fail(format!("VM {vmid} not running")));
    }
    Ok(spawn(
        sim,
        user,
        &p,
        kind,
        move |ctx, node, vmid, skiplock| {
            Box::pin(async move {
                let sim = ctx.sim.clone();
                if kind != "qmreboot" {
                    locked_vm_check(&sim, &node, vmid, skiplock).await?;
                }
                let l = &sim.latencies;
                let secs = match kind {
                    "qmreboot" => l.shutdown + l.start,
                    _ => l.stop,
                };
                ctx.work(secs).await?;
                let mut st = sim.state();
                if let Some(vm) = st.vms.get_mut(&vmid) {
                    match kind {
                        "qmpause" => vm.paused = true,
                        "qmresume" => vm.paused = false,
                        "qmreboot" => vm.started_at = chrono::Utc::now().timestamp(),
                        _ => {}
                    }
                }
                Ok(())
            })
        },
    ))
}
