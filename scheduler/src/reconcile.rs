//! Reconciliation: the database and the clusters agreeing on which VMs are ours.
//! - A class VM whose cluster no longer lists it is marked `missing` (and back when it returns).
//! - A VM in a cluster's labfleet VMID range that no class VM owns is looked at once (its config,
//!   for our marker): with the marker it is an orphan (a crash between a Proxmox call and the
//!   database write, or a clone that finished after its class was deleted); without it, it is
//!   foreign and never touched. Orphans are reported by `GET /api/reconcile` and, when
//!   `scheduler.reconcile_destroy_orphans` is on and they have been seen for
//!   `scheduler.orphan_grace_secs`, destroyed by a `destroy_orphan` job that checks the marker
//!   again first. A deploy job whose own VM turns up adopts it by its marker (see `deploy_vm`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use labfleet_db::sql;
use labfleet_entities::cluster;
use labfleet_fleet::{
    backend::{Expect, FleetGuest},
    Inspected,
};
use labfleet_fleet::{ClassStore, Marker, OrphanState, VmChange, VmState};
use labfleet_jobs::{store::NewJob, JobSpec, JobStatus, OrphanArgs};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;

use crate::{ticks::TickOutcome, Scheduler};

/// What a reconciliation did.
#[derive(Clone, Debug, Default)]
pub struct ReconcileReport {
    /// Clusters looked at.
    pub clusters: u64,
    /// VMs listed by them.
    pub vms: u64,
    /// Class VMs newly marked missing.
    pub missing: u64,
    /// Class VMs back from missing.
    pub returned: u64,
    /// New orphans found.
    pub orphans: u64,
    /// Destroy jobs created.
    pub destroys: u64,
    /// Clusters skipped and why.
    pub skipped: Vec<String>,
}

impl ReconcileReport {
    /// As a tick outcome.
    pub fn outcome(&self) -> TickOutcome {
        TickOutcome {
            seen: self.vms,
            actions: self.missing + self.returned + self.orphans + self.destroys,
            note: (!self.skipped.is_empty()).then(|| self.skipped.join("; ")),
        }
    }
}

/// Reconciles every active cluster.
pub async fn run(s: &Scheduler) -> Result<ReconcileReport, DbErr> {
    let mut report = ReconcileReport::default();
    for c in &s.active_clusters().await? {
        report.clusters += 1;
        if let Err(reason) = reconcile_cluster(s, c, &mut report).await? {
            report
                .skipped
                .push(format!("cluster {}: {reason}", c.cluster_id));
        }
    }
    Ok(report)
}

async fn reconcile_cluster(
    s: &Scheduler,
    c: &cluster::Model,
    report: &mut ReconcileReport,
) -> Result<Result<(), String>, DbErr> {
    let backend = match s.backends.connect(c.id).await {
        Ok(connected) => connected.backend,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let fleet = match backend.fleet().await {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let listed: HashMap<i64, &FleetGuest> = fleet
        .guests
        .iter()
        .filter(|g| g.vm)
        .filter_map(|g| Some((g.guest.id.parse::<i64>().ok()?, g)))
        .collect();
    report.vms += listed.len() as u64;
    let db = s.store.db();
    let now = Utc::now();

    // Class VMs that vanished, or came back.
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            "SELECT v.id, v.vmid, v.state, j.status AS job_status FROM class_vms v \
             LEFT JOIN jobs j ON j.id = v.job_id WHERE v.cluster_db_id = ?",
            vec![c.id.into()],
        ))
        .await?;
    let mut owned = HashSet::new();
    for r in rows {
        let id: i64 = r.try_get("", "id")?;
        let vmid: i64 = r.try_get("", "vmid")?;
        let state: String = r.try_get("", "state")?;
        let job_status: Option<String> = r.try_get("", "job_status")?;
        owned.insert(vmid);
        let busy = job_status
            .as_deref()
            .and_then(JobStatus::parse)
            .is_some_and(JobStatus::is_unfinished);
        if busy {
            continue;
        }
        let state = VmState::parse(&state);
        let made = state.is_some_and(VmState::powerable);
        match listed.get(&vmid) {
            None if made => {
                set_vm_state(s, id, VmState::Missing).await?;
                tracing::warn!(cluster = %c.cluster_id, vmid, class_vm_id = id, "class VM vanished from its cluster: marked missing");
                report.missing += 1;
            }
            Some(r) if state == Some(VmState::Missing) => {
                let back = VmState::made(r.running);
                set_vm_state(s, id, back).await?;
                report.returned += 1;
            }
            _ => {}
        }
    }

    // Unowned VMs in our range.
    let known = known_orphans(db, c.id).await?;
    let range = c.vmid_range_start..=c.vmid_range_end;
    for (vmid, r) in &listed {
        if owned.contains(vmid) || !range.contains(vmid) || r.template {
            continue;
        }
        let name = r.name.clone().unwrap_or_default();
        let node = r.guest.node.clone();
        if let Some((known_name, _)) = known.get(vmid) {
            if *known_name == name {
                continue; // looked at before; last_seen_at is refreshed below
            }
        }
        // New (or renamed): read its config once for the marker.
        let marker = match backend.inspect(&r.guest.id, Expect::AnyOfOurs).await {
            Ok(Inspected::Ours { marker, .. }) => Some(marker),
            Ok(_) => None,
            Err(e) => {
                report
                    .skipped
                    .push(format!("VM {vmid} on cluster {}: {e}", c.cluster_id));
                continue;
            }
        };
        let (state, marker_text) = match marker {
            Some(m) => (OrphanState::Orphan, m.fields()),
            None => (OrphanState::Foreign, String::new()),
        };
        if state == OrphanState::Orphan {
            tracing::warn!(cluster = %c.cluster_id, vmid, %name, "orphan: a VM with our marker that no class VM owns");
            report.orphans += 1;
        }
        db.execute(sql(
            db.get_database_backend(),
            "INSERT INTO orphans (cluster_db_id, vmid, node, name, marker, state, first_seen_at, last_seen_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cluster_db_id, vmid) DO UPDATE SET \
             node = excluded.node, name = excluded.name, marker = excluded.marker, \
             state = excluded.state, first_seen_at = excluded.first_seen_at, \
             last_seen_at = excluded.last_seen_at, job_id = NULL",
            vec![
                c.id.into(),
                (*vmid).into(),
                node.into(),
                name.into(),
                marker_text.into(),
                state.as_str().into(),
                now.into(),
                now.into(),
            ],
        ))
        .await?;
    }
    // Rows for VMs that are gone or owned now go; the rest were seen now.
    let stale: Vec<i64> = known
        .keys()
        .filter(|v| !listed.contains_key(v) || owned.contains(v))
        .copied()
        .collect();
    for vmid in stale {
        db.execute(sql(
            db.get_database_backend(),
            "DELETE FROM orphans WHERE cluster_db_id = ? AND vmid = ?",
            vec![c.id.into(), vmid.into()],
        ))
        .await?;
    }
    db.execute(sql(
        db.get_database_backend(),
        "UPDATE orphans SET last_seen_at = ? WHERE cluster_db_id = ?",
        vec![now.into(), c.id.into()],
    ))
    .await?;
    if s.settings.scheduler.reconcile_destroy_orphans {
        report.destroys += destroy_due(s, c, now).await?;
    }
    Ok(Ok(()))
}

async fn set_vm_state(s: &Scheduler, id: i64, state: VmState) -> Result<(), DbErr> {
    ClassStore::new(s.store.db().clone())
        .update_vm(
            id,
            VmChange {
                state: Some(state),
                ..Default::default()
            },
        )
        .await
}

/// The orphans rows of a cluster: VMID → (name, state).
async fn known_orphans(
    db: &DatabaseConnection,
    cluster_db_id: i64,
) -> Result<HashMap<i64, (String, String)>, DbErr> {
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            "SELECT vmid, name, state FROM orphans WHERE cluster_db_id = ?",
            vec![cluster_db_id.into()],
        ))
        .await?;
    let mut out = HashMap::new();
    for r in rows {
        out.insert(
            r.try_get::<i64>("", "vmid")?,
            (r.try_get("", "name")?, r.try_get("", "state")?),
        );
    }
    Ok(out)
}

/// Creates destroy jobs for orphans past their grace period (one job per orphan at a time).
async fn destroy_due(s: &Scheduler, c: &cluster::Model, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let db = s.store.db();
    let grace = chrono::Duration::seconds(s.settings.scheduler.orphan_grace_secs as i64);
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            &format!(
                "SELECT o.vmid, o.marker FROM orphans o LEFT JOIN jobs j ON j.id = o.job_id \
                 WHERE o.cluster_db_id = ? AND o.state IN (?, ?) AND o.first_seen_at <= ? \
                 AND (o.job_id IS NULL OR j.status NOT IN {})",
                JobStatus::UNFINISHED_SQL
            ),
            vec![
                c.id.into(),
                OrphanState::Orphan.as_str().into(),
                OrphanState::Destroying.as_str().into(),
                (now - grace).into(),
            ],
        ))
        .await?;
    let mut made = 0;
    for r in rows {
        let vmid: i64 = r.try_get("", "vmid")?;
        let marker: String = r.try_get("", "marker")?;
        let Some(m) = Marker::parse_fields(&marker) else {
            continue;
        };
        let ids = s
            .publisher
            .submit(&[NewJob {
                spec: JobSpec::DestroyOrphan(OrphanArgs {
                    cluster_db_id: c.id,
                    vmid,
                    marker_vm_id: m.class_vm_id,
                }),
                parent_id: None,
                created_by: "scheduler".into(),
                max_attempts: s.settings.deploy.vm_attempts.max(1),
                class_id: None,
            }])
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        let job_id = ids.first().copied();
        db.execute(sql(
            db.get_database_backend(),
            "UPDATE orphans SET state = ?, job_id = ? WHERE cluster_db_id = ? AND vmid = ?",
            vec![
                OrphanState::Destroying.as_str().into(),
                job_id.into(),
                c.id.into(),
                vmid.into(),
            ],
        ))
        .await?;
        tracing::warn!(cluster = %c.cluster_id, vmid, "destroying an orphan past its grace period");
        made += 1;
    }
    Ok(made)
}

/// One orphan as `GET /api/reconcile` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OrphanView {
    /// Cluster row id.
    pub cluster_db_id: i64,
    /// Its VMID.
    pub vmid: i64,
    /// Node it is on.
    pub node: String,
    /// Its name.
    pub name: String,
    /// `orphan` (our marker, no owner), `foreign` (not ours, never touched) or `destroying`.
    pub state: String,
    /// What its marker says (`class=… vm=…`); empty for foreign VMs.
    pub marker: String,
    /// First seen by reconciliation.
    pub first_seen_at: DateTime<Utc>,
    /// Last seen.
    pub last_seen_at: DateTime<Utc>,
    /// The destroy job, once one was made.
    pub job_id: Option<uuid::Uuid>,
}

/// A class VM whose cluster no longer lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MissingView {
    /// `class_vms.id`.
    pub id: i64,
    /// Its class.
    pub class_id: i64,
    /// Cluster row id.
    pub cluster_db_id: i64,
    /// Its VMID.
    pub vmid: i64,
    /// Its name.
    pub name: String,
    /// Since when (the row's last change).
    pub since: DateTime<Utc>,
}

/// What `GET /api/reconcile` shows.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReconcileView {
    /// VMs in labfleet's VMID ranges that no class VM owns.
    pub orphans: Vec<OrphanView>,
    /// Class VMs their cluster no longer lists.
    pub missing: Vec<MissingView>,
    /// Whether orphans past their grace period are destroyed.
    pub destroy_orphans: bool,
    /// The grace period in seconds.
    pub orphan_grace_secs: u64,
}

/// Reads the reconciliation report.
pub async fn view(
    db: &DatabaseConnection,
    settings: &labfleet_config::SchedulerSettings,
) -> Result<ReconcileView, DbErr> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all(sql(
            backend,
            "SELECT cluster_db_id, vmid, node, name, state, marker, first_seen_at, last_seen_at, job_id \
             FROM orphans ORDER BY cluster_db_id, vmid",
            vec![],
        ))
        .await?;
    let mut orphans = Vec::with_capacity(rows.len());
    for r in rows {
        orphans.push(OrphanView {
            cluster_db_id: r.try_get("", "cluster_db_id")?,
            vmid: r.try_get("", "vmid")?,
            node: r.try_get("", "node")?,
            name: r.try_get("", "name")?,
            state: r.try_get("", "state")?,
            marker: r.try_get("", "marker")?,
            first_seen_at: r.try_get("", "first_seen_at")?,
            last_seen_at: r.try_get("", "last_seen_at")?,
            job_id: r.try_get("", "job_id")?,
        });
    }
    let rows = db
        .query_all(sql(
            backend,
            "SELECT id, class_id, cluster_db_id, vmid, name, updated_at FROM class_vms \
             WHERE state = ? ORDER BY id",
            vec![VmState::Missing.as_str().into()],
        ))
        .await?;
    let mut missing = Vec::with_capacity(rows.len());
    for r in rows {
        missing.push(MissingView {
            id: r.try_get("", "id")?,
            class_id: r.try_get("", "class_id")?,
            cluster_db_id: r.try_get("", "cluster_db_id")?,
            vmid: r.try_get("", "vmid")?,
            name: r.try_get("", "name")?,
            since: r.try_get("", "updated_at")?,
        });
    }
    Ok(ReconcileView {
        orphans,
        missing,
        destroy_orphans: settings.reconcile_destroy_orphans,
        orphan_grace_secs: settings.orphan_grace_secs,
    })
}
