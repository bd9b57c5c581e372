//! Idle auto-shutdown. Per sweep and per cluster with `auto_shutdown_enabled`: one fleet read
//! through the cluster's backend (one `/cluster/resources` on Proxmox), one query for the cluster's class VMs with their idle
//! history, a decision per VM, and writes only for the VMs whose history changed. A VM that has
//! stayed under its CPU threshold for its whole idle window gets a `vm_power` shutdown job
//! (graceful, then forced after the timeout) and an audit event with the reason.
//!
//! What counts as managed: a row in `class_vms` whose VMID the cluster lists. Templates, VMs in
//! no class (whatever their name), VMs still being deployed or deleted, locked VMs and VMs flagged
//! `keep_running` are never touched.
//!
//! The history lives in `vm_activity` (`idle_since`), so a restarted scheduler keeps counting.
//! When sweeps were missed (the scheduler was down, the cluster unreachable) the samples no longer
//! prove the VM stayed idle in between; such a VM is checked against Proxmox's own history
//! (`rrddata`) before it is shut down — the only per-VM request the sweep ever makes.

use std::{collections::HashMap, time::Instant};

use chrono::{DateTime, Utc};
use labfleet_access::{AccessStore, NewAuditEvent, Role};
use labfleet_db::{placeholders, sql};
use labfleet_entities::cluster;
use labfleet_fleet::{backend::FleetGuest, GuestRef};
use labfleet_jobs::{store::NewJob, JobSpec, JobStatus, PowerAction, VmPowerArgs};
use sea_orm::{ConnectionTrait, DbErr, Value};
use uuid::Uuid;

use crate::{ticks::TickOutcome, Scheduler};

/// The thresholds that apply to one VM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// CPU percent of the VM's cores under which it counts as idle.
    pub cpu_percent: f64,
    /// How long it must stay idle.
    pub window: chrono::Duration,
}

impl Thresholds {
    /// The class's values win over the cluster's, which win over the settings.
    pub fn resolve(
        class: (Option<f64>, Option<i32>),
        cluster: (Option<f64>, Option<i32>),
        settings: &labfleet_config::SchedulerSettings,
    ) -> Thresholds {
        let cpu_percent = class.0.or(cluster.0).unwrap_or(settings.idle_cpu_percent);
        let window = match class.1.or(cluster.1) {
            Some(minutes) => chrono::Duration::minutes(minutes.into()),
            None => chrono::Duration::seconds(settings.idle_window_secs as i64),
        };
        Thresholds {
            cpu_percent,
            window,
        }
    }
}

/// A VM's idle history as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Since when it has been seen idle without a break (none: busy, stopped or unknown).
    pub idle_since: Option<DateTime<Utc>>,
    /// Sweeps were missed since `idle_since`: Proxmox's history must confirm before a shutdown.
    pub needs_history: bool,
    /// Last status seen.
    pub status: String,
    /// Last CPU share seen (0..1).
    pub cpu: f64,
}

/// What to do with one VM after looking at it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep watching (the history may have changed).
    Watch,
    /// Idle for the whole window, but sweeps were missed: ask Proxmox's history first.
    Confirm,
    /// Idle for the whole window: shut it down.
    ShutDown,
}

/// Updates a VM's history with what the sweep saw and says what to do. `gap` is true when the
/// previous sweep of this cluster is too long ago to vouch for the time in between.
pub fn observe(
    before: &History,
    status: &str,
    cpu: f64,
    limits: Thresholds,
    now: DateTime<Utc>,
    gap: bool,
) -> (History, Verdict) {
    let mut after = History {
        status: status.to_string(),
        cpu,
        ..History::default()
    };
    if status != "running" || cpu * 100.0 >= limits.cpu_percent {
        return (after, Verdict::Watch);
    }
    after.idle_since = Some(before.idle_since.unwrap_or(now));
    after.needs_history = before.idle_since.is_some() && (before.needs_history || gap);
    let idle_for = now - after.idle_since.unwrap_or(now);
    let verdict = if idle_for < limits.window {
        Verdict::Watch
    } else if after.needs_history {
        Verdict::Confirm
    } else {
        Verdict::ShutDown
    };
    (after, verdict)
}

/// After Proxmox's history was read: the start of the idle stretch that ends now (the time
/// after the last sample at or above the threshold), or the stored start if none was busy.
pub fn idle_start_from_samples(
    samples: &[(DateTime<Utc>, f64)],
    since: DateTime<Utc>,
    limits: Thresholds,
) -> DateTime<Utc> {
    samples
        .iter()
        .filter(|(t, cpu)| *t >= since && cpu * 100.0 >= limits.cpu_percent)
        .map(|(t, _)| *t + chrono::Duration::minutes(1))
        .max()
        .map_or(since, |busy_until| busy_until.max(since))
}

/// A VM's history to write, with the shutdown job just made for it, if any (job, when).
type HistoryWrite = (i64, History, Option<(Uuid, DateTime<Utc>)>);

/// One row of the sweep's query.
struct Managed {
    class_vm_id: i64,
    vmid: u32,
    node: String,
    keep_running: bool,
    state: String,
    limits: Thresholds,
    history: Option<History>,
    shutdown_pending: bool,
}

/// What a sweep did, for the tick's record and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct IdleReport {
    /// Clusters swept.
    pub clusters: u64,
    /// Managed VMs looked at.
    pub vms: u64,
    /// Requests sent to Proxmox.
    pub requests: u64,
    /// Shutdown jobs created.
    pub shutdowns: u64,
    /// Clusters skipped and why.
    pub skipped: Vec<String>,
    /// Time spent in labfleet's own work (everything but awaiting Proxmox's answers, whose JSON
    /// parse counts as waiting), in seconds.
    pub own_seconds: f64,
    /// Wall time of the sweep, when the caller measured it.
    pub wall_seconds: f64,
}

impl IdleReport {
    /// As a tick outcome.
    pub fn outcome(&self) -> TickOutcome {
        TickOutcome {
            seen: self.vms,
            actions: self.shutdowns,
            note: (!self.skipped.is_empty()).then(|| self.skipped.join("; ")),
        }
    }
}

/// One sweep over every cluster with auto-shutdown on.
pub async fn sweep(s: &Scheduler) -> Result<IdleReport, DbErr> {
    let mut report = IdleReport::default();
    let clusters = s.active_clusters().await?;
    for c in clusters.iter().filter(|c| c.auto_shutdown_enabled) {
        report.clusters += 1;
        if let Err(reason) = sweep_cluster(s, c, &mut report).await? {
            report
                .skipped
                .push(format!("cluster {}: {reason}", c.cluster_id));
        }
    }
    Ok(report)
}

/// Sweeps one cluster; the inner error is a reason to skip it (unreachable, say).
async fn sweep_cluster(
    s: &Scheduler,
    c: &cluster::Model,
    report: &mut IdleReport,
) -> Result<Result<(), String>, DbErr> {
    let started = Instant::now();
    let mut waited = std::time::Duration::ZERO;
    let rows = managed_vms(s, c).await?;
    if rows.is_empty() {
        return Ok(Ok(()));
    }
    let backend = match s.backends.connect(c.id).await {
        Ok(connected) => connected.backend,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let asked = Instant::now();
    report.requests += 1;
    let fleet = match backend.fleet().await {
        Ok(f) => f,
        Err(e) => {
            report.own_seconds += (started.elapsed() - asked.elapsed()).as_secs_f64();
            return Ok(Err(e.to_string()));
        }
    };
    waited += asked.elapsed();
    let now = Utc::now();
    let gap = sweep_gap(s, c.id, now).await?;
    let listed: HashMap<u32, &FleetGuest> = fleet
        .guests
        .iter()
        .filter(|g| g.vm)
        .filter_map(|g| Some((g.guest.id.parse().ok()?, g)))
        .collect();

    let mut changed: Vec<HistoryWrite> = Vec::new();
    let mut to_stop = Vec::new();
    for vm in rows {
        let Some(r) = listed.get(&vm.vmid) else {
            continue; // vanished: reconciliation marks it missing
        };
        let ours = !r.template
            && r.guest.node == vm.node
            && labfleet_fleet::VmState::parse(&vm.state)
                .is_some_and(labfleet_fleet::VmState::powerable)
            && !vm.keep_running
            && !r.busy;
        if !ours {
            continue;
        }
        report.vms += 1;
        let before = vm.history.clone().unwrap_or_default();
        let status = if r.running { "running" } else { "stopped" };
        let (mut after, verdict) =
            observe(&before, status, r.cpu.unwrap_or(0.0), vm.limits, now, gap);
        let verdict = match verdict {
            Verdict::Confirm => {
                let asked = Instant::now();
                report.requests += 1;
                let samples = backend
                    .cpu_history(&GuestRef::numbered(vm.node.clone(), i64::from(vm.vmid)))
                    .await;
                waited += asked.elapsed();
                match samples {
                    Ok(points) => {
                        let points: Vec<_> = points.iter().map(|p| (p.at, p.cpu)).collect();
                        let since = after.idle_since.unwrap_or(now);
                        let start = idle_start_from_samples(&points, since, vm.limits);
                        after.idle_since = Some(start);
                        after.needs_history = false;
                        if now - start >= vm.limits.window {
                            Verdict::ShutDown
                        } else {
                            Verdict::Watch
                        }
                    }
                    // No history to be had: keep waiting on our own samples, from now.
                    Err(_) => {
                        after.idle_since = Some(now);
                        after.needs_history = false;
                        Verdict::Watch
                    }
                }
            }
            v => v,
        };
        if verdict == Verdict::ShutDown && !vm.shutdown_pending {
            to_stop.push((vm.class_vm_id, vm.limits, after.clone()));
        } else if vm.history.as_ref() != Some(&after) {
            changed.push((vm.class_vm_id, after, None));
        }
    }
    for ((class_vm_id, _, history), job_id) in to_stop.iter().zip(shut_down(s, c, &to_stop).await?)
    {
        report.shutdowns += 1;
        changed.push((*class_vm_id, history.clone(), Some((job_id, now))));
    }
    save_history(s, &changed, now).await?;
    mark_swept(s, c.id, now).await?;
    report.own_seconds += (started.elapsed() - waited).as_secs_f64();
    Ok(Ok(()))
}

/// The class VMs of a cluster with their thresholds, history and pending shutdown.
async fn managed_vms(s: &Scheduler, c: &cluster::Model) -> Result<Vec<Managed>, DbErr> {
    let db = s.store.db();
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            "SELECT v.id, v.vmid, v.node, v.keep_running, v.state, \
                    k.idle_cpu_percent, k.idle_minutes, \
                    a.last_status, a.last_cpu, a.idle_since, a.needs_history, a.shutdown_at, \
                    j.status AS shutdown_status \
             FROM class_vms v JOIN classes k ON k.id = v.class_id \
             LEFT JOIN vm_activity a ON a.class_vm_id = v.id \
             LEFT JOIN jobs j ON j.id = a.shutdown_job_id \
             WHERE v.cluster_db_id = ?",
            vec![c.id.into()],
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let last_status: Option<String> = r.try_get("", "last_status")?;
        let history = match last_status {
            Some(status) => Some(History {
                idle_since: r.try_get("", "idle_since")?,
                needs_history: r.try_get("", "needs_history")?,
                status,
                cpu: r.try_get("", "last_cpu")?,
            }),
            None => None,
        };
        let shutdown_status: Option<String> = r.try_get("", "shutdown_status")?;
        let shutdown_at: Option<DateTime<Utc>> = r.try_get("", "shutdown_at")?;
        let vmid: i64 = r.try_get("", "vmid")?;
        let limits = Thresholds::resolve(
            (
                r.try_get("", "idle_cpu_percent")?,
                r.try_get("", "idle_minutes")?,
            ),
            (c.idle_cpu_percent, c.idle_minutes),
            &s.settings.scheduler,
        );
        out.push(Managed {
            class_vm_id: r.try_get("", "id")?,
            vmid: u32::try_from(vmid).unwrap_or(0),
            node: r.try_get("", "node")?,
            keep_running: r.try_get("", "keep_running")?,
            state: r.try_get("", "state")?,
            limits,
            history,
            // One shutdown at a time, and after one that failed, not another within the window
            // (a VM Proxmox will not stop would otherwise get a job every sweep).
            shutdown_pending: shutdown_status
                .as_deref()
                .and_then(JobStatus::parse)
                .is_some_and(JobStatus::is_unfinished)
                || shutdown_at.is_some_and(|t| Utc::now() - t < limits.window),
        });
    }
    Ok(out)
}

/// The per-cluster record of the last completed sweep (a row of `scheduler_ticks` named after
/// the cluster, hidden from the status list).
fn swept_name(cluster_db_id: i64) -> String {
    format!("idle_sweep/{cluster_db_id}")
}

/// True when this cluster's previous sweep is too long ago to vouch for the time since.
async fn sweep_gap(s: &Scheduler, cluster_db_id: i64, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let db = s.store.db();
    let row = db
        .query_one(sql(
            db.get_database_backend(),
            "SELECT last_finished_at FROM scheduler_ticks WHERE name = ?",
            vec![swept_name(cluster_db_id).into()],
        ))
        .await?;
    let last: Option<DateTime<Utc>> = match row {
        Some(r) => r.try_get("", "last_finished_at")?,
        None => None,
    };
    let allowed = chrono::Duration::milliseconds(
        3 * s.settings.scheduler.idle_sweep_interval_ms.max(1_000) as i64,
    );
    Ok(last.is_some_and(|t| now - t > allowed))
}

async fn mark_swept(s: &Scheduler, cluster_db_id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    let db = s.store.db();
    db.execute(sql(
        db.get_database_backend(),
        "INSERT INTO scheduler_ticks (name, next_run_at, last_finished_at, runs) VALUES (?, ?, ?, 1) \
         ON CONFLICT (name) DO UPDATE SET last_finished_at = excluded.last_finished_at, \
         runs = scheduler_ticks.runs + 1",
        vec![swept_name(cluster_db_id).into(), now.into(), now.into()],
    ))
    .await?;
    Ok(())
}

/// Writes the histories that changed, many rows per statement.
async fn save_history(
    s: &Scheduler,
    changed: &[HistoryWrite],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let db = s.store.db();
    for chunk in changed.chunks(500) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
        let mut rows = Vec::with_capacity(chunk.len());
        for (id, h, shutdown) in chunk {
            rows.push(format!("({})", placeholders(8)));
            values.extend([
                (*id).into(),
                now.into(),
                h.status.clone().into(),
                h.cpu.into(),
                h.idle_since.into(),
                h.needs_history.into(),
                shutdown.map(|(j, _)| j).into(),
                shutdown.map(|(_, at)| at).into(),
            ]);
        }
        // A new shutdown replaces the recorded one; otherwise the recorded one stays.
        let text = format!(
            "INSERT INTO vm_activity (class_vm_id, last_seen_at, last_status, last_cpu, idle_since, \
             needs_history, shutdown_job_id, shutdown_at) VALUES {} \
             ON CONFLICT (class_vm_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, \
             last_status = excluded.last_status, last_cpu = excluded.last_cpu, \
             idle_since = excluded.idle_since, needs_history = excluded.needs_history, \
             shutdown_job_id = COALESCE(excluded.shutdown_job_id, vm_activity.shutdown_job_id), \
             shutdown_at = COALESCE(excluded.shutdown_at, vm_activity.shutdown_at)",
            rows.join(", ")
        );
        db.execute(sql(db.get_database_backend(), &text, values))
            .await?;
    }
    Ok(())
}

/// Creates the shutdown jobs (in one transaction, published at once) and their audit events;
/// returns the job ids in the order of `vms`.
async fn shut_down(
    s: &Scheduler,
    c: &cluster::Model,
    vms: &[(i64, Thresholds, History)],
) -> Result<Vec<Uuid>, DbErr> {
    if vms.is_empty() {
        return Ok(Vec::new());
    }
    let reasons: Vec<String> = vms
        .iter()
        .map(|(_, limits, history)| {
            let minutes = limits.window.num_seconds() as f64 / 60.0;
            format!(
                "idle: CPU under {}% for {minutes:.1} min (since {})",
                limits.cpu_percent,
                history
                    .idle_since
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            )
        })
        .collect();
    let jobs: Vec<NewJob> = vms
        .iter()
        .zip(&reasons)
        .map(|((class_vm_id, _, _), reason)| NewJob {
            spec: JobSpec::VmPower(VmPowerArgs {
                class_vm_id: *class_vm_id,
                action: PowerAction::Shutdown,
                timeout_secs: None,
                reason: Some(reason.clone()),
            }),
            parent_id: None,
            created_by: "scheduler".into(),
            max_attempts: s.settings.retry.max_attempts,
            class_id: None,
        })
        .collect();
    let ids = s
        .publisher
        .submit(&jobs)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let mut events = Vec::with_capacity(ids.len());
    for (((class_vm_id, _, _), reason), job_id) in vms.iter().zip(reasons).zip(&ids) {
        tracing::info!(cluster = %c.cluster_id, class_vm_id, %job_id, %reason, "idle VM: shutting down");
        events.push(NewAuditEvent {
            actor: "scheduler".into(),
            actor_role: Role::Admin,
            action: "vm.auto_shutdown".into(),
            target: format!("vm:{class_vm_id}"),
            detail: Some(serde_json::json!({
                "reason": reason, "job_id": job_id, "cluster_id": c.cluster_id,
            })),
            source: "scheduler".into(),
            outcome: Some("succeeded".into()),
        });
    }
    AccessStore::new(s.store.db().clone())
        .record_all(events)
        .await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Thresholds {
        Thresholds {
            cpu_percent: 5.0,
            window: chrono::Duration::minutes(30),
        }
    }

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + min * 60, 0).unwrap_or_default()
    }

    #[test]
    fn a_vm_idle_for_the_whole_window_is_shut_down_and_one_busy_moment_restarts_the_count() {
        let (h, v) = observe(&History::default(), "running", 0.01, limits(), at(0), false);
        assert_eq!((h.idle_since, v), (Some(at(0)), Verdict::Watch));
        let (h, v) = observe(&h, "running", 0.02, limits(), at(29), false);
        assert_eq!((h.idle_since, v), (Some(at(0)), Verdict::Watch));
        let (busy, v) = observe(&h, "running", 0.50, limits(), at(29), false);
        assert_eq!((busy.idle_since, v), (None, Verdict::Watch));
        let (h, v) = observe(&h, "running", 0.04, limits(), at(30), false);
        assert_eq!((h.idle_since, v), (Some(at(0)), Verdict::ShutDown));
        let (h2, v) = observe(&busy, "running", 0.0, limits(), at(31), false);
        assert_eq!((h2.idle_since, v), (Some(at(31)), Verdict::Watch));
    }

    #[test]
    fn stopped_vms_and_the_threshold_itself_are_not_idle() {
        let idle = History {
            idle_since: Some(at(0)),
            status: "running".into(),
            ..History::default()
        };
        let (h, v) = observe(&idle, "stopped", 0.0, limits(), at(40), false);
        assert_eq!((h.idle_since, v), (None, Verdict::Watch));
        let (h, v) = observe(&idle, "running", 0.05, limits(), at(40), false);
        assert_eq!((h.idle_since, v), (None, Verdict::Watch));
    }

    #[test]
    fn missed_sweeps_need_proxmox_history_before_a_shutdown() {
        let idle = History {
            idle_since: Some(at(0)),
            status: "running".into(),
            ..History::default()
        };
        let (h, v) = observe(&idle, "running", 0.0, limits(), at(10), true);
        assert!(h.needs_history);
        assert_eq!(v, Verdict::Watch);
        // The flag stays until the history has been read.
        let (h, v) = observe(&h, "running", 0.0, limits(), at(31), false);
        assert_eq!(v, Verdict::Confirm);
        // A busy sample at minute 20 moves the start to minute 21.
        let samples = [(at(5), 0.01), (at(20), 0.30), (at(25), 0.0)];
        let start = idle_start_from_samples(&samples, h.idle_since.unwrap_or_default(), limits());
        assert_eq!(start, at(21));
        // A first sighting is never a gap.
        let (h, _) = observe(&History::default(), "running", 0.0, limits(), at(0), true);
        assert!(!h.needs_history);
    }

    #[test]
    fn class_values_win_over_cluster_values_over_settings() {
        let s = labfleet_config::SchedulerSettings::default();
        let t = Thresholds::resolve((None, None), (None, None), &s);
        assert_eq!((t.cpu_percent, t.window.num_minutes()), (5.0, 30));
        let t = Thresholds::resolve((None, Some(10)), (Some(20.0), Some(60)), &s);
        assert_eq!((t.cpu_percent, t.window.num_minutes()), (20.0, 10));
        let t = Thresholds::resolve((Some(1.0), None), (Some(20.0), Some(60)), &s);
        assert_eq!((t.cpu_percent, t.window.num_minutes()), (1.0, 60));
    }
}
