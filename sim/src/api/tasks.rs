//! Task status, log and stop, as PVE serves them: unknown UPIDs and wrong nodes give 400 "no such
//! task" (`docs/proxmox.md`, "Tasks and UPIDs").

use std::sync::Arc;

use serde_json::{json, Value};

use super::{p_str, ApiError, ApiResult};
use crate::schema::Params;
use crate::sim::Sim;
use crate::tasks::{parse_upid, Task};

fn find(sim: &Sim, p: &Params) -> Result<Arc<Task>, ApiError> {
    let upid = p_str(p, "upid");
    if parse_upid(upid).is_none() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    sim.task(upid)
        .filter(|t| t.node == p_str(p, "node"))
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

pub fn status(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let t = find(sim, p)?;
    let mut v = json!({
        "upid": t.upid,
        "node": t.node,
        "pid": t.pid,
        "pstart": t.pstart,
        "starttime": t.starttime,
        "type": t.kind,
        "id": t.id,
        "user": t.user,
        "status": "running",
    });
    if let Some(e) = t.exitstatus() {
        v["status"] = json!("stopped");
        v["exitstatus"] = json!(e);
    }
    Ok(v)
}

pub fn log(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let t = find(sim, p)?;
    let start: usize = p.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = p.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50);
    let (lines, total) = t.log_lines(start, limit);
    let v: Vec<Value> = lines
        .into_iter()
        .map(|(n, t)| json!({"n": n, "t": t}))
        .collect();
    // PVE puts `total` next to `data` for the task log
    let mut m = serde_json::Map::new();
    m.insert(super::TOTAL_KEY.into(), json!(total));
    m.insert(super::DATA_KEY.into(), Value::Array(v));
    Ok(Value::Object(m))
}

pub fn stop(sim: &Arc<Sim>, p: &Params) -> ApiResult {
    let t = find(sim, p)?;
    t.stop();
    Ok(Value::Null)
}
