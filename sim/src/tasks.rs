//! Worker tasks: UPIDs in PVE's exact format, task logs, status, and stopping a task.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::sim::Sim;

/// The error text of a task that was stopped through `DELETE /nodes/{node}/tasks/{upid}`.
pub const INTERRUPTED: &str = "received interrupt";

/// A worker task.
pub struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u32,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    pub user: String,
    inner: Mutex<Inner>,
    cancelled: AtomicBool,
    cancel: Notify,
    done: Notify,
}

#[derive(Default)]
struct Inner {
    log: Vec<String>,
    exit: Option<String>,
}

/// `UPID:$node:$pid:$pstart:$starttime:$type:$id:$user:` (pc `PVE/UPID.pm`).
pub fn format_upid(
    node: &str,
    pid: u32,
    pstart: u32,
    starttime: i64,
    kind: &str,
    id: &str,
    user: &str,
) -> String {
    format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:")
}

/// Splits a UPID into its fields, or None if it does not match PVE's parser regex.
pub fn parse_upid(upid: &str) -> Option<Vec<&str>> {
    let rest = upid.strip_prefix("UPID:")?.strip_suffix(':')?;
    let f: Vec<&str> = rest.split(':').collect();
    if f.len() != 7 {
        return None;
    }
    let hex = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let ok = !f[0].is_empty()
        && hex(f[1], 8, 8)
        && hex(f[2], 8, 9)
        && hex(f[3], 8, 8)
        && !f[4].is_empty()
        && !f[6].is_empty();
    ok.then_some(f)
}

impl Task {
    /// The last log line's status: None while running, else `OK` or the error text.
    pub fn exitstatus(&self) -> Option<String> {
        self.lock().exit.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Log lines `[start, start+limit)` and the total count.
    pub fn log_lines(&self, start: usize, limit: usize) -> (Vec<(usize, String)>, usize) {
        let inner = self.lock();
        let total = inner.log.len();
        let lines = inner
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, l)| (i + 1, l.clone()))
            .collect();
        (lines, total)
    }

    pub fn log(&self, line: impl Into<String>) {
        self.lock().log.push(line.into());
    }

    /// Asks the task to stop; it fails with "received interrupt" at its next wait.
    pub fn stop(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until the task has finished.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.done.notified();
            if let Some(e) = self.exitstatus() {
                return e;
            }
            notified.await;
        }
    }
}

/// What a task body gets: its log, scaled sleeps that honour stop requests.
#[derive(Clone)]
pub struct TaskCtx {
    pub sim: Arc<Sim>,
    pub task: Arc<Task>,
}

impl TaskCtx {
    pub fn log(&self, line: impl Into<String>) {
        self.task.log(line);
    }

    /// Fails if the task was asked to stop.
    pub fn check(&self) -> Result<(), String> {
        if self.task.is_cancelled() {
            Err(INTERRUPTED.into())
        } else {
            Ok(())
        }
    }

    /// Sleeps `secs` (at time scale 1) × the time scale; no sleep at all at scale 0.
    pub async fn work(&self, secs: f64) -> Result<(), String> {
        self.check()?;
        let d = self.sim.scaled(secs);
        if d.is_zero() {
            return Ok(());
        }
        self.sleep_raw(d).await
    }

    /// Sleeps a wall-clock duration, interruptible.
    pub async fn sleep_raw(&self, d: Duration) -> Result<(), String> {
        let cancelled = self.task.cancel.notified();
        tokio::select! {
            _ = tokio::time::sleep(d) => self.check(),
            _ = cancelled => Err(INTERRUPTED.into()),
        }
    }
}

static PID: AtomicU32 = AtomicU32::new(0);

/// Starts a worker task on `node`; returns it at once (its UPID is what the API returns).
pub fn spawn<F, Fut>(
    sim: &Arc<Sim>,
    node: &str,
    kind: &str,
    id: &str,
    user: &str,
    body: F,
) -> Arc<Task>
where
    F: FnOnce(TaskCtx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let pid = 0x0001_0000 + PID.fetch_add(1, Ordering::Relaxed);
    let starttime = chrono::Utc::now().timestamp();
    let pstart = sim.pstart_base.wrapping_add(pid);
    let upid = format_upid(node, pid, pstart, starttime, kind, id, user);
    let task = Arc::new(Task {
        upid: upid.clone(),
        node: node.to_string(),
        pid,
        pstart,
        starttime,
        kind: kind.to_string(),
        id: id.to_string(),
        user: user.to_string(),
        inner: Mutex::new(Inner::default()),
        cancelled: AtomicBool::new(false),
        cancel: Notify::new(),
        done: Notify::new(),
    });
    sim.register_task(task.clone());
    let ctx = TaskCtx {
        sim: sim.clone(),
        task: task.clone(),
    };
    tokio::spawn(async move {
        let t = ctx.task.clone();
        let result = body(ctx).await;
        let mut inner = t.lock();
        match result {
            Ok(()) => {
                inner.log.push("TASK OK".into());
                inner.exit = Some("OK".into());
            }
            Err(e) => {
                let e = e.trim_end().to_string();
                inner.log.push(format!("TASK ERROR: {e}"));
                inner.exit = Some(e);
            }
        }
        drop(inner);
        t.done.notify_waiters();
    });
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_have_pves_exact_format() {
        let u = format_upid(
            "pve1", 0x35D677, 0x3AB00C3, 0x66DC5987, "qmclone", "132", "root@pam",
        );
        assert_eq!(
            u,
            "UPID:pve1:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:"
        );
        let f = parse_upid(&u);
        assert_eq!(f.as_ref().map(|f| f[4]), Some("qmclone"));
        let tok = format_upid("pve1", 1, 2, 3, "qmstart", "100", "root@pam!labfleet");
        assert!(parse_upid(&tok).is_some());
        assert!(parse_upid("UPID:pve1:1:2:3:x:1:u:").is_none());
        assert!(parse_upid("nonsense").is_none());
    }
}
