//! The volume side of the cluster: storage steps under the storage lock, the volume registry,
//! rebuilding it from the files at start, and the errors of full storages.

use std::collections::BTreeMap;
use std::path::Path;

use crate::sim::Sim;
use crate::storage::{self, Volume};
use crate::tasks::TaskCtx;

impl Sim {
    /// Whether allocations on this storage fail (fault `storage_full`).
    pub fn storage_full(&self, node: &str, id: &str) -> bool {
        let f = self.faults();
        f.config.storage_full.contains(id)
            || f.config.storage_full.contains(&storage::key(node, id))
    }

    /// Runs `secs` of work plus `op` under the storage lock of (node, id). More than 10 s of
    /// simulated work queued ahead fails with PVE's text after 10 s × scale (at least 50 ms).
    pub async fn storage_step<T, F, Fut>(
        &self,
        ctx: Option<&TaskCtx>,
        node: &str,
        id: &str,
        secs: f64,
        op: F,
    ) -> Result<T, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let def = storage::def(id).ok_or_else(|| format!("storage '{id}' does not exist"))?;
        let key = storage::key(node, id);
        let timeout = self.lock_timeout(10.0);
        let injected = self.faults().lock_timeout();
        if injected {
            match ctx {
                Some(c) => c.sleep_raw(timeout).await?,
                None => tokio::time::sleep(timeout).await,
            }
            return Err(def.lock_timeout_error());
        }
        let _g = self
            .locks
            .lock_storage(&key, secs, 10.0, self.time_scale(), timeout, || {
                def.lock_timeout_error()
            })
            .await?;
        match ctx {
            Some(c) => c.work(secs).await?,
            None => {
                let d = self.scaled(secs);
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
            }
        }
        op().await
    }

    /// Adds a volume to the registry.
    pub fn add_volume(&self, node: &str, id: &str, volname: &str, vol: Volume) {
        self.state()
            .insert_volume(&storage::key(node, id), volname, vol);
    }

    /// Removes a volume from the registry and disk.
    pub fn free_volume(&self, node: &str, id: &str, volname: &str) {
        self.state().remove_volume(&storage::key(node, id), volname);
        crate::disks::remove(&storage::volume_path(&self.data_dir, node, id, volname));
    }

    /// Whether qemu-img makes real files on this storage.
    pub fn real_files(&self, id: &str) -> bool {
        self.use_qemu_img && storage::def(id).is_some_and(|d| d.is_file())
    }

    /// The error of an allocation on a full storage.
    pub fn full_error(&self, node: &str, id: &str, volname: &str) -> String {
        match storage::def(id) {
            Some(d) if !d.is_file() => format!(
                "lvcreate 'pve/{volname}' error:   Volume group \"pve\" has insufficient free space (0 extents): 1024 required."
            ),
            _ => {
                let p = storage::volume_path(&self.data_dir, node, id, volname);
                format!(
                    "unable to create image: qemu-img: {}: Could not create '{}': No space left on device",
                    p.display(),
                    p.display()
                )
            }
        }
    }
}

/// Rebuilds the volume list of a storage from its files.
pub fn scan_storage(root: &Path, def: &storage::StorageDef) -> BTreeMap<String, Volume> {
    let mut out = BTreeMap::new();
    let ctime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    if !def.is_file() {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(m) = crate::disks::read_meta(&e.path()) {
                out.insert(
                    name.clone(),
                    Volume {
                        size: m.size,
                        format: "raw".into(),
                        vmid: storage::volname_vmid(&name),
                        parent: m.backing,
                        ctime: ctime(&e.path()),
                    },
                );
            }
        }
        return out;
    }
    for e in std::fs::read_dir(root.join("template").join("iso"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.insert(
            format!("iso/{name}"),
            Volume {
                size,
                format: "iso".into(),
                vmid: None,
                parent: None,
                ctime: ctime(&e.path()),
            },
        );
    }
    for d in std::fs::read_dir(root.join("images"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = d.file_name().to_string_lossy().into_owned();
        for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(m) = crate::disks::read_meta(&e.path()) else {
                continue;
            };
            // a linked clone's backing file is "../<tmpl>/base-…"
            let parent = m
                .backing
                .as_deref()
                .map(|b| b.trim_start_matches("../").to_string());
            let volname = match &parent {
                Some(p) => format!("{p}/{dir}/{file}"),
                None => format!("{dir}/{file}"),
            };
            out.insert(
                volname,
                Volume {
                    size: m.size,
                    format: m.format,
                    vmid: dir.parse().ok(),
                    parent,
                    ctime: ctime(&e.path()),
                },
            );
        }
    }
    out
}
