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
    storages: Mutex<HashMap<String, Arc<StorageLock>>>,
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

    /// Takes a storage lock (FIFO) for `secs` of simulated work (time scale 1).
    ///
    /// Whether the acquisition times out is decided in simulated time, so it does not depend on
    /// how busy the machine is: if more than `limit` seconds of simulated work are queued ahead
    /// (PVE's 10 s acquire timeout), the caller fails with `error` after waiting `fail_after`
    /// (10 s × scale, at least 50 ms); otherwise it waits its turn.
    pub async fn lock_storage(
        &self,
        key: &str,
        secs: f64,
        limit: f64,
        scale: f64,
        fail_after: Duration,
        error: impl FnOnce() -> String,
    ) -> Result<StorageGuard, String> {
        let l = {
            let mut m = self.storages.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(key.to_string()).or_default().clone()
        };
        let too_long = {
            let mut q = l.queue.lock().unwrap_or_else(|e| e.into_inner());
            let done = match q.holder_since {
                Some(t) if scale > 0.0 => (t.elapsed().as_secs_f64() / scale).min(q.holder_secs),
                _ => 0.0,
            };
            let too_long = q.pending - done > limit;
            if !too_long {
                q.pending += secs;
            }
            too_long
        };
        if too_long {
            tokio::time::sleep(fail_after).await;
            return Err(error());
        }
        let guard = l.mutex.clone().lock_owned().await;
        {
            let mut q = l.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.holder_since = Some(std::time::Instant::now());
            q.holder_secs = secs;
        }
        Ok(StorageGuard {
            lock: l,
            secs,
            _guard: guard,
        })
    }
}

#[derive(Default)]
struct Queue {
    /// Simulated seconds of work of the holder and all waiters.
    pending: f64,
    holder_since: Option<std::time::Instant>,
    holder_secs: f64,
}

/// One storage lock: the mutex plus the simulated work queued on it.
#[derive(Default)]
pub struct StorageLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
    queue: Mutex<Queue>,
}

/// A held storage lock; releasing it takes its work off the queue.
pub struct StorageGuard {
    lock: Arc<StorageLock>,
    secs: f64,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for StorageGuard {
    fn drop(&mut self) {
        let mut q = self.lock.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.pending = (q.pending - self.secs).max(0.0);
        q.holder_since = None;
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
    async fn storage_lock_times_out_when_queued_work_exceeds_the_limit() {
        let l = Locks::default();
        let ms = Duration::from_millis(20);
        let g1 = l
            .lock_storage("s", 6.0, 10.0, 0.0, ms, || "x".into())
            .await
            .unwrap();
        // 6 s queued ahead: a second waiter still fits, a third (12 s ahead) does not
        let l2 = Arc::new(l);
        let l3 = l2.clone();
        let second = tokio::spawn(async move {
            l3.lock_storage("s", 6.0, 10.0, 0.0, ms, || "x".into())
                .await
                .map(|_| ())
        });
        tokio::task::yield_now().await;
        while l2.storages.lock().unwrap()["s"]
            .queue
            .lock()
            .unwrap()
            .pending
            < 12.0
        {
            tokio::task::yield_now().await;
        }
        let e = l2
            .lock_storage("s", 1.0, 10.0, 0.0, ms, || "timeout!".into())
            .await
            .err();
        assert_eq!(e.as_deref(), Some("timeout!"));
        drop(g1);
        assert!(second.await.unwrap().is_ok());
        assert!(l2
            .lock_storage("s", 1.0, 10.0, 0.0, ms, || "x".into())
            .await
            .is_ok());
    }
}
