//! The periodic ticks and their rows in `scheduler_ticks`: when each runs next, when it last ran,
//! what it saw and did. A run is claimed by moving `next_run_at` forward with a conditional
//! UPDATE, so even two processes that both believe they lead (one whose lease just ran out) never
//! run the same tick twice, and a restarted leader keeps the schedule instead of starting over.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use labfleet_config::SchedulerSettings;
use labfleet_db::sql;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;

/// The scheduler's ticks. Each has a row in `scheduler_ticks` under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tick {
    /// Expired leases, unpublished jobs, lost messages, parents to finish, old idempotency keys.
    /// Runs unclaimed on every leader loop (its steps are safe to repeat).
    Recovery,
    /// Template and ISO sync of the clusters whose toggles allow it.
    InventorySync,
    /// Idle auto-shutdown.
    IdleSweep,
    /// Orphans and vanished VMs.
    Reconcile,
}

impl Tick {
    /// The name its row is stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            Tick::Recovery => "recovery",
            Tick::InventorySync => "inventory_sync",
            Tick::IdleSweep => "idle_sweep",
            Tick::Reconcile => "reconcile",
        }
    }
}

/// Every tick with its interval from the settings (`None`: turned off).
pub fn intervals(s: &SchedulerSettings) -> Vec<(Tick, Option<Duration>)> {
    let every = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
    vec![
        (
            Tick::Recovery,
            Some(Duration::from_millis(s.sweep_interval_ms.max(100))),
        ),
        (Tick::InventorySync, every(s.inventory_sync_interval_ms)),
        (Tick::IdleSweep, every(s.idle_sweep_interval_ms)),
        (Tick::Reconcile, every(s.reconcile_interval_ms)),
    ]
}

/// What one run of a tick saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Things looked at (clusters, VMs, jobs).
    pub seen: u64,
    /// Things done (jobs created, rows changed).
    pub actions: u64,
    /// A short account for the status page (skipped clusters and why, say).
    pub note: Option<String>,
}

/// Claims the run of `name` that is due now: true when this caller got it (and the next run is
/// moved `every` ahead); false when it is not due or another process claimed it. `next` is set to
/// when the tick is due next either way, so the caller asks the database only when it may be due.
pub async fn claim(
    db: &DatabaseConnection,
    name: &str,
    every: Duration,
    holder: &str,
    next: &mut DateTime<Utc>,
) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let following = now + chrono::Duration::from_std(every).unwrap_or_default();
    let moved = db
        .execute(sql(
            backend,
            "UPDATE scheduler_ticks SET next_run_at = ?, last_started_at = ?, last_holder = ? \
             WHERE name = ? AND next_run_at <= ?",
            vec![
                following.into(),
                now.into(),
                holder.into(),
                name.into(),
                now.into(),
            ],
        ))
        .await?;
    if moved.rows_affected() == 1 {
        *next = following;
        return Ok(true);
    }
    let row = db
        .query_one(sql(
            backend,
            "SELECT next_run_at FROM scheduler_ticks WHERE name = ?",
            vec![name.into()],
        ))
        .await?;
    if let Some(r) = row {
        *next = r.try_get("", "next_run_at")?;
        return Ok(false);
    }
    // Never ran anywhere: the first to insert the row runs it.
    let inserted = db
        .execute(sql(
            backend,
            "INSERT INTO scheduler_ticks (name, next_run_at, last_started_at, last_holder, runs) \
             VALUES (?, ?, ?, ?, 0) ON CONFLICT (name) DO NOTHING",
            vec![name.into(), following.into(), now.into(), holder.into()],
        ))
        .await?;
    *next = following;
    Ok(inserted.rows_affected() == 1)
}

/// Records the end of a run.
pub async fn record(
    db: &DatabaseConnection,
    name: &str,
    holder: &str,
    started: DateTime<Utc>,
    result: &Result<TickOutcome, String>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let (seen, actions, note, error) = match result {
        Ok(o) => (
            Some(o.seen as i64),
            Some(o.actions as i64),
            o.note.clone(),
            None,
        ),
        Err(e) => (None, None, None, Some(e.clone())),
    };
    let duration_ms = (now - started).num_milliseconds().max(0);
    // The row exists for claimed ticks; recovery runs unclaimed, so it may have to be made.
    db.execute(sql(
        backend,
        "INSERT INTO scheduler_ticks (name, next_run_at, last_started_at, last_finished_at, \
         last_duration_ms, last_holder, last_seen, last_actions, last_note, last_error, runs) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (name) DO UPDATE SET \
         last_started_at = excluded.last_started_at, last_finished_at = excluded.last_finished_at, \
         last_duration_ms = excluded.last_duration_ms, last_holder = excluded.last_holder, \
         last_seen = excluded.last_seen, last_actions = excluded.last_actions, \
         last_note = excluded.last_note, last_error = excluded.last_error, \
         runs = scheduler_ticks.runs + 1",
        vec![
            name.into(),
            now.into(),
            started.into(),
            now.into(),
            duration_ms.into(),
            holder.into(),
            seen.into(),
            actions.into(),
            note.into(),
            error.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// One tick as `GET /api/scheduler` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TickStatus {
    /// `recovery`, `inventory_sync`, `idle_sweep` or `reconcile`.
    pub name: String,
    /// Its interval in this process's settings (absent: turned off).
    pub interval_ms: Option<u64>,
    /// When it is due next.
    pub next_run_at: Option<DateTime<Utc>>,
    /// When its last run started.
    pub last_started_at: Option<DateTime<Utc>>,
    /// When its last run ended.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// How long the last run took.
    pub last_duration_ms: Option<i64>,
    /// Which scheduler process ran it.
    pub last_holder: Option<String>,
    /// Items the last run looked at.
    pub last_seen: Option<i64>,
    /// Actions the last run took.
    pub last_actions: Option<i64>,
    /// What the last run has to say (clusters skipped and why).
    pub last_note: Option<String>,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// Runs so far (recovery records only the runs that did something, and one a minute, so its
    /// last run and next run are those of the last recorded run).
    pub runs: i64,
}

/// The leader and every tick, for `GET /api/scheduler`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulerStatus {
    /// The scheduler process holding the leader lease (absent: none holds it now).
    pub leader: Option<String>,
    /// Until when it holds it unless it renews.
    pub leader_until: Option<DateTime<Utc>>,
    /// The ticks.
    pub ticks: Vec<TickStatus>,
}

/// Reads the status.
pub async fn status(
    db: &DatabaseConnection,
    settings: &SchedulerSettings,
) -> Result<SchedulerStatus, DbErr> {
    let lease = crate::lease::current(db, crate::lease::LEADER).await?;
    let (leader, leader_until) = match lease {
        Some((holder, until)) if until > Utc::now() => (Some(holder), Some(until)),
        _ => (None, None),
    };
    let rows = db
        .query_all(sql(
            db.get_database_backend(),
            "SELECT name, next_run_at, last_started_at, last_finished_at, last_duration_ms, \
             last_holder, last_seen, last_actions, last_note, last_error, runs FROM scheduler_ticks",
            vec![],
        ))
        .await?;
    let mut stored = HashMap::new();
    for r in rows {
        let name: String = r.try_get("", "name")?;
        stored.insert(name.clone(), r);
    }
    let mut ticks = Vec::new();
    for (which, every) in intervals(settings) {
        let interval_ms = every.map(|d| d.as_millis() as u64);
        let mut tick = match stored.get(which.as_str()) {
            Some(r) => TickStatus {
                name: which.as_str().into(),
                interval_ms,
                next_run_at: r.try_get("", "next_run_at")?,
                last_started_at: r.try_get("", "last_started_at")?,
                last_finished_at: r.try_get("", "last_finished_at")?,
                last_duration_ms: r.try_get("", "last_duration_ms")?,
                last_holder: r.try_get("", "last_holder")?,
                last_seen: r.try_get("", "last_seen")?,
                last_actions: r.try_get("", "last_actions")?,
                last_note: r.try_get("", "last_note")?,
                last_error: r.try_get("", "last_error")?,
                runs: r.try_get("", "runs")?,
            },
            None => TickStatus {
                name: which.as_str().into(),
                interval_ms,
                next_run_at: None,
                last_started_at: None,
                last_finished_at: None,
                last_duration_ms: None,
                last_holder: None,
                last_seen: None,
                last_actions: None,
                last_note: None,
                last_error: None,
                runs: 0,
            },
        };
        // Recovery runs unclaimed: its next run follows from its last one.
        if which == Tick::Recovery {
            tick.next_run_at = tick
                .last_started_at
                .zip(every)
                .map(|(t, d)| t + chrono::Duration::from_std(d).unwrap_or_default());
        }
        ticks.push(tick);
    }
    Ok(SchedulerStatus {
        leader,
        leader_until,
        ticks,
    })
}
