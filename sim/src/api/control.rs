//! Control endpoints outside /api2/json (no auth): faults, CPU load, time scale, counters and the
//! critical-path lower bound of recorded operations or of a described workload.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{ApiError, Req};
use crate::faults::FaultConfig;
use crate::latency::{lower_bound, OpProfile};
use crate::sim::Sim;

fn body_json(req: &Req) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(json!({}));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
        return Ok(v);
    }
    // form bodies: numbers where they parse
    let mut m = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(&req.body) {
        let val = v
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(v));
        m.insert(k.into_owned(), val);
    }
    Ok(Value::Object(m))
}

fn query(req: &Req) -> Vec<(String, String)> {
    req.query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub async fn handle(sim: &Arc<Sim>, req: &Req) -> Result<Value, ApiError> {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["_sim", "faults"]) => Ok(json!(sim.faults().config)),
        ("PUT", ["_sim", "faults"]) => {
            let v = body_json(req)?;
            let cfg: FaultConfig =
                serde_json::from_value(v).map_err(|e| ApiError::param("faults", e.to_string()))?;
            sim.faults().config = cfg.clone();
            Ok(json!(cfg))
        }
        ("PUT", ["_sim", "vms", vmid, "cpu"]) => {
            let vmid: u32 = vmid
                .parse()
                .map_err(|_| ApiError::param("vmid", "not a vmid"))?;
            let v = body_json(req)?;
            let cpu = v
                .get("cpu")
                .and_then(Value::as_f64)
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or_else(|| ApiError::param("cpu", "must be a number within 0..1"))?;
            let mut st = sim.state();
            let vm = st
                .vms
                .get_mut(&vmid)
                .ok_or_else(|| ApiError::fail(format!("VM {vmid} does not exist")))?;
            vm.cpu = cpu;
            let now = chrono::Utc::now().timestamp();
            let current = vm.current_cpu();
            vm.cpu_hist.push((now, current));
            Ok(json!({"vmid": vmid, "cpu": cpu}))
        }
        ("PUT", ["_sim", "time-scale"]) => {
            let v = body_json(req)?;
            let s = v
                .get("time_scale")
                .and_then(Value::as_f64)
                .filter(|s| *s >= 0.0)
                .ok_or_else(|| ApiError::param("time_scale", "must be a number >= 0"))?;
            sim.set_time_scale(s);
            Ok(json!({"time_scale": s}))
        }
        ("GET", ["_sim", "stats"]) => Ok(json!({
            "requests": sim.stats.requests.load(Ordering::Relaxed),
            "clones_ok": sim.stats.clones_ok.load(Ordering::Relaxed),
            "clones_failed": sim.stats.clones_failed.load(Ordering::Relaxed),
            "vms": sim.state().vms.len(),
            "time_scale": sim.time_scale(),
        })),
        ("DELETE", ["_sim", "lower-bound"]) => {
            let mut r = sim.recorder.lock().unwrap_or_else(|e| e.into_inner());
            r.ops.clear();
            r.epoch = std::time::Instant::now();
            Ok(Value::Null)
        }
        ("GET", ["_sim", "lower-bound"]) => lower_bound_query(sim, &query(req)),
        _ => Err(ApiError::status(
            404,
            format!("no such control endpoint: {} {}", req.method, req.path),
        )),
    }
}

/// Without parameters: the bound of the operations recorded since start (or the last DELETE).
/// With `linked_clones=N` or `full_clones=N`, `template=VMID` and optional `nodes=pve1,pve2`
/// (targets, round-robin), `storage=ID` (full clones) and `time_scale=X`: the bound of that
/// workload if all of it were submitted at once.
fn lower_bound_query(sim: &Arc<Sim>, q: &[(String, String)]) -> Result<Value, ApiError> {
    let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    let scale = match get("time_scale") {
        Some(s) => s
            .parse::<f64>()
            .map_err(|_| ApiError::param("time_scale", "not a number"))?,
        None => sim.time_scale(),
    };
    let count_of = |k: &str| -> Result<usize, ApiError> {
        get(k).map_or(Ok(0), |v| {
            v.parse().map_err(|_| ApiError::param(k, "not a count"))
        })
    };
    let (linked, full) = (count_of("linked_clones")?, count_of("full_clones")?);
    if linked == 0 && full == 0 {
        let r = sim.recorder.lock().unwrap_or_else(|e| e.into_inner());
        return Ok(json!(lower_bound(&r.ops, scale)));
    }
    let tmpl: u32 = get("template")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ApiError::param("template", "a template vmid is required"))?;
    let vm = sim
        .state()
        .vms
        .get(&tmpl)
        .cloned()
        .ok_or_else(|| ApiError::param("template", format!("VM {tmpl} does not exist")))?;
    let targets: Vec<String> = get("nodes")
        .map(|n| {
            n.split(',')
                .map(str::to_string)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec![vm.node.clone()]);
    for t in &targets {
        if !sim.is_node(t) {
            return Err(ApiError::param("nodes", format!("no such node '{t}'")));
        }
    }
    let storage = get("storage");
    let mut ops = Vec::new();
    for (i, is_full) in std::iter::repeat_n(false, linked)
        .chain(std::iter::repeat_n(true, full))
        .enumerate()
    {
        let to = &targets[i % targets.len()];
        let jobs = super::clone_plan::plan(
            &vm.conf.props,
            is_full,
            storage.as_deref().filter(|_| is_full),
            None,
        );
        ops.push(OpProfile {
            kind: if is_full {
                "full_clone"
            } else {
                "linked_clone"
            }
            .into(),
            release: 0.0,
            phases: super::clone_plan::phases(sim, &jobs, &vm.node, to),
        });
    }
    Ok(json!(lower_bound(&ops, scale)))
}
