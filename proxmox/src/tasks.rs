//! PVE worker tasks: UPID parsing, task status/log/stop, `wait_task` (poll the node named in the
//! UPID, fast at first, then backing off) and full-clone copy progress from the task log.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::ProxmoxClient;
use crate::endpoints;
use crate::error::ProxmoxError;
use crate::types::{TaskLogLine, TaskStatus};

/// First poll delay of `wait_task`: most linked clones and power actions end within a second.
pub const POLL_START: Duration = Duration::from_millis(100);
/// Longest poll delay of `wait_task`.
pub const POLL_MAX: Duration = Duration::from_secs(2);

/// A task id: `UPID:$node:$pid:$pstart:$starttime:$type:$id:$user:`, with pid, pstart and
/// starttime in upper-case hex and a trailing `:` (`docs/proxmox.md`, "Tasks and UPIDs").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    /// Node that runs the task (and holds its log).
    pub node: String,
    /// Worker process id.
    pub pid: u32,
    /// Process start time (clock ticks).
    pub pstart: u64,
    /// Task start time (epoch seconds).
    pub starttime: u64,
    /// Task type (`qmclone`, `qmstart`, …).
    pub task_type: String,
    /// Task id; for `qmclone` this is the SOURCE vmid.
    pub id: String,
    /// User or token id that started the task.
    pub user: String,
}

impl Upid {
    /// Parses a UPID.
    pub fn parse(s: &str) -> Result<Self, ProxmoxError> {
        let bad = || ProxmoxError::InvalidUpid {
            value: s.to_string(),
        };
        let inner = s
            .strip_prefix("UPID:")
            .and_then(|r| r.strip_suffix(':'))
            .ok_or_else(bad)?;
        let f: Vec<&str> = inner.split(':').collect();
        let [node, pid, pstart, starttime, task_type, id, user] = f[..] else {
            return Err(bad());
        };
        let hex = |v: &str, min: usize, max: usize| {
            (min..=max).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit())
        };
        let plain = |v: &str| !v.bytes().any(|b| b.is_ascii_whitespace() || b == b'/');
        let node_ok = !node.is_empty()
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        if !(node_ok
            && hex(pid, 8, 8)
            && hex(pstart, 8, 9)
            && hex(starttime, 8, 8)
            && !task_type.is_empty()
            && plain(task_type)
            && plain(id)
            && !user.is_empty()
            && plain(user))
        {
            return Err(bad());
        }
        let num = |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad());
        Ok(Upid {
            raw: s.to_string(),
            node: node.to_string(),
            pid: u32::from_str_radix(pid, 16).map_err(|_| bad())?,
            pstart: num(pstart)?,
            starttime: num(starttime)?,
            task_type: task_type.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }

    /// The UPID string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for Upid {
    type Err = ProxmoxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Upid::parse(s)
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Whether an exitstatus means success: PVE counts only `OK` and `WARNINGS: n` as success; any
/// other exitstatus is the error text.
pub fn exitstatus_is_ok(exitstatus: &str) -> bool {
    exitstatus == "OK"
        || exitstatus
            .strip_prefix("WARNINGS: ")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Copy progress of a full clone, from a `transferred X of Y (Z%)` task log line.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyProgress {
    /// Drive, for drive-mirror lines (`drive-scsi0`).
    pub drive: Option<String>,
    /// Bytes copied.
    pub transferred_bytes: u64,
    /// Bytes to copy.
    pub total_bytes: u64,
    /// Percent done, as PVE printed it.
    pub percent: f64,
}

impl CopyProgress {
    /// Parses one log line; `None` if it is not a progress line.
    pub fn parse_line(line: &str) -> Option<Self> {
        let idx = line.find("transferred ")?;
        let drive = line[..idx]
            .trim()
            .strip_suffix(':')
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty());
        let rest = &line[idx + "transferred ".len()..];
        let (done, rest) = rest.split_once(" of ")?;
        let (total, rest) = rest.split_once(" (")?;
        let (pct, _) = rest.split_once("%)")?;
        Some(CopyProgress {
            drive,
            transferred_bytes: parse_size(done)?,
            total_bytes: parse_size(total)?,
            percent: pct.trim().parse().ok()?,
        })
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let value: f64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("B");
    let mult: f64 = match unit {
        "B" | "bytes" => 1.0,
        "KiB" | "KB" | "K" => 1024.0,
        "MiB" | "MB" | "M" => 1024.0 * 1024.0,
        "GiB" | "GB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "TB" | "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    if parts.next().is_some() || !value.is_finite() || value < 0.0 {
        return None;
    }
    Some((value * mult).round() as u64)
}

/// A page of a task log.
#[derive(Debug, Clone, Default)]
pub struct TaskLog {
    /// Lines in order.
    pub lines: Vec<TaskLogLine>,
    /// Total number of lines, when PVE reports it.
    pub total: Option<u64>,
}

impl ProxmoxClient {
    /// `GET /nodes/{node}/tasks/{upid}/status` on the UPID's node.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ProxmoxError> {
        self.call(
            &endpoints::TASK_STATUS,
            &[("node", &upid.node), ("upid", upid.as_str())],
            vec![],
        )
        .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=`.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<TaskLog, ProxmoxError> {
        let env = self
            .call_envelope::<Vec<TaskLogLine>>(
                &endpoints::TASK_LOG,
                &[("node", &upid.node), ("upid", upid.as_str())],
                vec![
                    ("start".into(), start.to_string()),
                    ("limit".into(), limit.to_string()),
                ],
            )
            .await?;
        Ok(TaskLog {
            lines: env.data,
            total: env.total,
        })
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: stops a running task (it ends with an error status).
    pub async fn task_stop(&self, upid: &Upid) -> Result<(), ProxmoxError> {
        let _: serde_json::Value = self
            .call(
                &endpoints::TASK_STOP,
                &[("node", &upid.node), ("upid", upid.as_str())],
                vec![],
            )
            .await?;
        Ok(())
    }

    /// The latest copy progress line of a (full clone) task, if any yet.
    pub async fn task_progress(&self, upid: &Upid) -> Result<Option<CopyProgress>, ProxmoxError> {
        const TAIL: u64 = 50;
        let head = self.task_log(upid, 0, TAIL).await?;
        let tail = match head.total {
            Some(total) if total > TAIL => self.task_log(upid, total - TAIL, TAIL).await?.lines,
            _ => head.lines,
        };
        Ok(tail
            .iter()
            .rev()
            .find_map(|l| CopyProgress::parse_line(&l.t)))
    }

    /// Waits until the task stops: `Ok` for `OK` and `WARNINGS: n`, [`ProxmoxError::TaskFailed`]
    /// with the exitstatus otherwise, [`ProxmoxError::TaskTimeout`] after `timeout` (the status is
    /// asked at least once, so a zero timeout tells whether the task has ended).
    /// Polls start at 100 ms and grow by half each time up to 2 s; transient poll failures
    /// (a connection blip) are retried until the deadline, permanent ones returned.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        timeout: Duration,
    ) -> Result<TaskStatus, ProxmoxError> {
        self.wait_task_polling(upid, timeout, POLL_MAX).await
    }

    /// [`ProxmoxClient::wait_task`] with polls at most `max_poll` apart: whoever waits on a
    /// critical path (the last clone of a class) learns of the end sooner, for a few more polls.
    pub async fn wait_task_polling(
        &self,
        upid: &Upid,
        timeout: Duration,
        max_poll: Duration,
    ) -> Result<TaskStatus, ProxmoxError> {
        let max_poll = max_poll.max(POLL_START);
        let started = Instant::now();
        let deadline = started + timeout;
        let mut delay = POLL_START;
        let mut asked = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The first status request gets its answer however short the timeout (the request
            // has its own time limit): a timeout shorter than one round trip would otherwise say
            // "still running" without having asked.
            let answer = if asked {
                tokio::time::timeout(remaining, self.task_status(upid)).await
            } else {
                Ok(self.task_status(upid).await)
            };
            asked = true;
            match answer {
                Ok(Ok(status)) if !status.is_running() => return finished(upid, status),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.is_transient() => {
                    tracing::warn!(upid = %upid, error = %e, "task status poll failed, retrying");
                }
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ProxmoxError::TaskTimeout {
                    upid: upid.to_string(),
                    waited: now - started,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 3 / 2).min(max_poll);
        }
    }
}

fn finished(upid: &Upid, status: TaskStatus) -> Result<TaskStatus, ProxmoxError> {
    let exit = status
        .exitstatus
        .clone()
        .unwrap_or_else(|| "unexpected status".to_string());
    if exitstatus_is_ok(&exit) {
        return Ok(status);
    }
    Err(ProxmoxError::TaskFailed {
        upid: upid.to_string(),
        node: upid.node.clone(),
        task_type: upid.task_type.clone(),
        id: upid.id.clone(),
        exitstatus: exit,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_real_upids() {
        let u =
            Upid::parse("UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:").unwrap();
        assert_eq!(u.node, "proxmox");
        assert_eq!(u.pid, 0x0035_D677);
        assert_eq!(u.pstart, 0x03AB_00C3);
        assert_eq!(u.starttime, 0x66DC_5987);
        assert_eq!(u.task_type, "qmclone");
        assert_eq!(u.id, "132");
        assert_eq!(u.user, "root@pam");
        assert_eq!(
            u.to_string(),
            "UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:"
        );
        let token = Upid::parse("UPID:pve-2:0000ABCD:1ABCDEF01:66DC5987:qmstart::capmox@pve!capi:")
            .unwrap();
        assert_eq!(token.user, "capmox@pve!capi");
        assert_eq!(token.id, "");
        assert_eq!(token.node, "pve-2");
    }

    #[test]
    fn rejects_malformed_upids() {
        for bad in [
            "",
            "UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam",
            "UPID:proxmox:35D677:03AB00C3:66DC5987:qmclone:132:root@pam:",
            "UPID:-bad:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:",
            "UPID:proxmox:0035D677:03AB00C3:66DC5987::132:root@pam:",
            "UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132::",
            "UPID:proxmox:0035D677:03AB00C3:66DC5987:qm clone:132:root@pam:",
            "UPID:proxmox:0035D677:03AB00C3:66DC598G:qmclone:132:root@pam:",
            "UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:extra:",
            "XUPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:",
        ] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ok_and_warnings_succeed() {
        assert!(exitstatus_is_ok("OK"));
        assert!(exitstatus_is_ok("WARNINGS: 3"));
        assert!(!exitstatus_is_ok("WARNINGS: "));
        assert!(!exitstatus_is_ok("unexpected status"));
        assert!(!exitstatus_is_ok("clone failed: can't lock file"));
        let upid =
            Upid::parse("UPID:pve1:00000001:00000002:00000003:qmclone:9000:root@pam:").unwrap();
        let stopped = |e: Option<&str>| TaskStatus {
            status: "stopped".into(),
            exitstatus: e.map(str::to_string),
            ..Default::default()
        };
        assert!(finished(&upid, stopped(Some("WARNINGS: 1"))).is_ok());
        let err = finished(&upid, stopped(Some("VM is locked (clone)"))).unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("VM is locked (clone)"));
        let err = finished(&upid, stopped(None)).unwrap_err();
        assert!(!err.is_transient());
    }

    #[test]
    fn parses_copy_progress_lines() {
        let p = CopyProgress::parse_line("transferred 1.0 GiB of 32.0 GiB (3.13%)").unwrap();
        assert_eq!(p.transferred_bytes, 1 << 30);
        assert_eq!(p.total_bytes, 32 << 30);
        assert_eq!(p.percent, 3.13);
        assert_eq!(p.drive, None);
        let m = CopyProgress::parse_line(
            "drive-scsi0: transferred 512.0 MiB of 2.0 GiB (25.00%) in 3s",
        )
        .unwrap();
        assert_eq!(m.drive.as_deref(), Some("drive-scsi0"));
        assert_eq!(m.transferred_bytes, 512 << 20);
        assert!(CopyProgress::parse_line("create full clone of drive scsi0").is_none());
        assert!(CopyProgress::parse_line("transferred lots of data (x%)").is_none());
    }
}
