//! A few guest-agent calls (enough for "is it up, what is its IP"): errors like PVE's when the VM
//! is stopped or the agent is not configured.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{p_str, p_u32, vm_on, ApiError, ApiResult};
use crate::schema::Params;
use crate::sim::Sim;

pub fn call(sim: &Arc<Sim>, method: &str, template: &str, p: &Params) -> ApiResult {
    let vmid = p_u32(p, "vmid");
    let vm = vm_on(sim, p_str(p, "node"), vmid)?;
    let enabled = vm
        .conf
        .props
        .get("agent")
        .is_some_and(|a| a.starts_with('1') || a.contains("enabled=1"));
    if !enabled {
        return Err(ApiError::fail("No QEMU guest agent configured"));
    }
    if !vm.running {
        return Err(ApiError::fail(format!("VM {vmid} is not running")));
    }
    let cmd = template.rsplit('/').next().unwrap_or("");
    let ip = format!(
        "10.{}.{}.{}",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    );
    Ok(match (method, cmd) {
        ("POST", "exec") => json!({"pid": 1000 + vmid}),
        ("GET", "exec-status") => json!({"exited": 1, "exitcode": 0, "out-data": ""}),
        ("GET", "network-get-interfaces") => json!({"result": [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00",
             "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]},
            {"name": "eth0", "hardware-address": "bc:24:11:00:00:01",
             "ip-addresses": [{"ip-address": ip, "ip-address-type": "ipv4", "prefix": 8}]},
        ]}),
        ("GET", "get-host-name") => {
            json!({"result": {"host-name": vm.conf.props.get("name").cloned().unwrap_or_default()}})
        }
        ("GET", "get-osinfo") => {
            json!({"result": {"id": "ubuntu", "name": "Ubuntu", "version-id": "24.04"}})
        }
        ("GET", "info") => json!({"result": {"version": "8.2.2", "supported_commands": []}}),
        ("POST", "shutdown") => {
            let mut st = sim.state();
            if let Some(v) = st.vms.get_mut(&vmid) {
                v.running = false;
            }
            drop(st);
            sim.write_power(vmid, false);
            Value::Null
        }
        _ => json!({"result": {}}),
    })
}
