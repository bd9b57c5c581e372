//! Locks with acquire timeouts: per-VM flocks (shared/exclusive, like
//! `/var/lock/qemu-server/lock-<vmid>.conf`) and per-storage locks (`cluster_lock_storage`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// A held VM flock.
pub enum VmGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

type VmLocks = HashMap<(String, u32), Arc<RwLock<()>>>;

/// All locks of the cluster.
#[derive(Default)]
pub struct Locks {
    vms: Mutex<VmLocks>,
    storages: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The text of a VM flock timeout.
pub fn vm_lock_error(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

impl Locks {
    fn vm(&self, node: &str, vmid: u32) -> Arc<RwLock<()>> {
        let mut m = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((node.to_string(), vmid)).or_default().clone()
    }

    /// Takes the flock of a VM on a node (flocks are node-local), shared or exclusive, failing
    /// with PVE's text after `timeout`.
    pub async fn lock_vm(
        &self,
        node: &str,
        vmid: u32,
        shared: bool,
        timeout: Duration,
    ) -> Result<VmGuard, String> {
        let l = self.vm(node, vmid);
        let r = if shared {
            tokio::time::timeout(timeout, l.read_owned())
                .await
                .map(VmGuard::Shared)
        } else {
            tokio::time::timeout(timeout, l.write_owned())
                .await
                .map(VmGuard::Exclusive)
        };
        r.map_err(|_| vm_lock_error(vmid))
    }

    /// Takes a storage lock (FIFO), failing with `error` after `timeout`.
    pub async fn lock_storage(
        &self,
        key: &str,
        timeout: Duration,
        error: impl FnOnce() -> String,
    ) -> Result<OwnedMutexGuard<()>, String> {
        let l = {
            let mut m = self.storages.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(key.to_string()).or_default().clone()
        };
        tokio::time::timeout(timeout, l.lock_owned())
            .await
            .map_err(|_| error())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn shared_vm_locks_coexist_and_block_exclusive() {
        let l = Locks::default();
        let a = l
            .lock_vm("pve1", 104, true, Duration::from_millis(50))
            .await
            .unwrap();
        let _b = l
            .lock_vm("pve1", 104, true, Duration::from_millis(50))
            .await
            .unwrap();
        let e = l
            .lock_vm("pve1", 104, false, Duration::from_millis(30))
            .await
            .err()
            .unwrap();
        assert_eq!(
            e,
            "can't lock file '/var/lock/qemu-server/lock-104.conf' - got timeout"
        );
        drop(a);
        drop(_b);
        assert!(l
            .lock_vm("pve1", 104, false, Duration::from_millis(50))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn storage_lock_times_out_with_given_text() {
        let l = Locks::default();
        let g = l
            .lock_storage("s", Duration::from_millis(50), || "x".into())
            .await
            .unwrap();
        let e = l
            .lock_storage("s", Duration::from_millis(30), || "timeout!".into())
            .await
            .err();
        assert_eq!(e.as_deref(), Some("timeout!"));
        drop(g);
        assert!(l
            .lock_storage("s", Duration::from_millis(30), || "x".into())
            .await
            .is_ok());
    }
}
