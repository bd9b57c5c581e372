//! Volume allocation and freeing for VM disks: `STORAGE:SIZE` / `STORAGE:cloudinit` requests
//! turned into volumes under the storage lock, and freeing a drive's volume.

use std::sync::Arc;

use crate::conf::Drive;
use crate::sim::Sim;
use crate::storage::{self, Volume};
use crate::tasks::TaskCtx;

/// A new-volume request in a drive value: `STORAGE:SIZE_GIB` or `STORAGE:cloudinit`.
pub fn alloc_request(d: &Drive) -> Option<(String, Option<u64>)> {
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
