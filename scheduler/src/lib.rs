//! The scheduler: periodic work that runs once across any number of scheduler replicas.
//!
//! One process at a time holds the leader lease (`lease.rs`) and runs the ticks (`ticks.rs`):
//! the recovery sweeps of the job engine (`recovery.rs`), the template and ISO sync
//! (`inventory.rs`), idle auto-shutdown (`idle.rs`) and reconciliation (`reconcile.rs`).
//! The other replicas wait, trying to take the lease every third of its length, so a dead
//! leader is replaced within one lease period.

pub mod idle;
mod inventory;
pub mod lease;
pub mod reconcile;
mod recovery;
pub mod ticks;

pub use recovery::{sweep_once, SweepReport};
pub use ticks::{SchedulerStatus, TickOutcome, TickStatus};

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use labfleet_clusters::ClusterStore;
use labfleet_config::Settings;
use labfleet_fleet::BackendFactory;
use labfleet_jobs::{JobStore, Publisher};

use crate::{lease::Lease, ticks::Tick};

/// The parts the ticks work with.
#[derive(Clone)]
pub struct Scheduler {
    settings: Arc<Settings>,
    store: JobStore,
    publisher: Publisher,
    clusters: ClusterStore,
    backends: Arc<dyn BackendFactory>,
    holder: String,
}

/// A name for this process that no other replica has.
fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

impl Scheduler {
    /// A scheduler on these parts, named uniquely.
    pub fn new(
        settings: Arc<Settings>,
        store: JobStore,
        publisher: Publisher,
        clusters: ClusterStore,
        backends: Arc<dyn BackendFactory>,
    ) -> Self {
        Scheduler {
            settings,
            store,
            publisher,
            clusters,
            backends,
            holder: default_holder(),
        }
    }

    /// The same scheduler under another name (tests run several in one process).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// Its name in the lease and the ticks' records.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The active clusters, which every Proxmox-facing tick works on.
    async fn active_clusters(
        &self,
    ) -> Result<Vec<labfleet_entities::cluster::Model>, sea_orm::DbErr> {
        let all = self
            .clusters
            .list()
            .await
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
        Ok(all.into_iter().filter(|c| c.is_active).collect())
    }

    /// One idle sweep now, outside the schedule (the benchmark's entry point).
    pub async fn idle_sweep_once(&self) -> Result<idle::IdleReport, sea_orm::DbErr> {
        idle::sweep(self).await
    }

    /// One reconciliation now, outside the schedule.
    pub async fn reconcile_once(&self) -> Result<reconcile::ReconcileReport, sea_orm::DbErr> {
        reconcile::run(self).await
    }

    /// Runs until `shutdown` resolves, then gives the lease up.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let length = Duration::from_millis(self.settings.scheduler.lease_ms.max(300));
        let lease = Lease::new(
            self.store.db().clone(),
            lease::LEADER,
            self.holder.clone(),
            length,
        );
        let leading = Arc::new(AtomicBool::new(false));
        // The lease keeper runs in this same task (not a spawned one), so a scheduler that is
        // dropped or aborted stops renewing with it.
        let keeper = keep_lease(lease.clone(), leading.clone(), length / 3);
        let work = self.lead_while_holding(&leading, shutdown);
        let was_leading = tokio::select! {
            was_leading = work => was_leading,
            _ = keeper => false,
        };
        if was_leading || leading.load(Ordering::Acquire) {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "could not release the scheduler lease; it expires by itself");
            }
        }
    }

    /// Runs the due ticks whenever `leading` says this process holds the lease, until
    /// `shutdown`; returns whether it was leading at the end.
    async fn lead_while_holding(
        &self,
        leading: &AtomicBool,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        tokio::pin!(shutdown);
        let step =
            Duration::from_millis(self.settings.scheduler.sweep_interval_ms.clamp(100, 1_000));
        let mut beat = tokio::time::interval(step);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due: HashMap<Tick, chrono::DateTime<Utc>> = HashMap::new();
        let mut was_leading = false;
        let mut recovery = RecoveryTick::default();
        loop {
            tokio::select! {
                _ = &mut shutdown => return was_leading,
                _ = beat.tick() => {}
            }
            let is_leading = leading.load(Ordering::Acquire);
            if is_leading != was_leading {
                tracing::info!(holder = %self.holder, leading = is_leading, "scheduler leadership changed");
                // A new leader asks the database when each tick is due.
                due.clear();
                was_leading = is_leading;
            }
            if !is_leading {
                continue;
            }
            recovery.run_if_due(self).await;
            for (tick, every) in ticks::intervals(&self.settings.scheduler) {
                let Some(every) = every else { continue };
                if tick == Tick::Recovery || due.get(&tick).is_some_and(|t| *t > Utc::now()) {
                    continue;
                }
                if !leading.load(Ordering::Acquire) {
                    break;
                }
                self.run_tick(tick, every, &mut due).await;
            }
        }
    }

    /// Claims and runs one periodic tick, recording what it did.
    async fn run_tick(
        &self,
        tick: Tick,
        every: Duration,
        due: &mut HashMap<Tick, chrono::DateTime<Utc>>,
    ) {
        let db = self.store.db();
        let name = tick.as_str();
        let mut next = Utc::now();
        match ticks::claim(db, name, every, &self.holder, &mut next).await {
            Ok(true) => {}
            Ok(false) => {
                due.insert(tick, next);
                return;
            }
            Err(e) => {
                tracing::warn!(tick = name, error = %e, "could not claim a tick; trying again");
                return;
            }
        }
        due.insert(tick, next);
        let started_at = Utc::now();
        let started = Instant::now();
        let result = match tick {
            Tick::InventorySync => inventory::run(self).await,
            Tick::IdleSweep => idle::sweep(self).await.map(|r| {
                metrics::counter!("labfleet_scheduler_proxmox_requests_total", "tick" => name)
                    .increment(r.requests);
                r.outcome()
            }),
            Tick::Reconcile => reconcile::run(self).await.map(|r| r.outcome()),
            // Recovery has its own unclaimed path (`run_if_due`); the loop never claims it.
            Tick::Recovery => return,
        }
        .map_err(|e| e.to_string());
        observe(name, started.elapsed(), &result);
        if let Err(e) = ticks::record(db, name, &self.holder, started_at, &result).await {
            tracing::warn!(tick = name, error = %e, "could not record a tick's run");
        }
    }
}

/// Tick metrics: duration, items seen, actions taken, failures.
fn observe(tick: &'static str, took: Duration, result: &Result<TickOutcome, String>) {
    metrics::histogram!("labfleet_scheduler_tick_duration_seconds", "tick" => tick)
        .record(took.as_secs_f64());
    match result {
        Ok(o) => {
            metrics::counter!("labfleet_scheduler_items_seen_total", "tick" => tick)
                .increment(o.seen);
            metrics::counter!("labfleet_scheduler_tick_actions_total", "tick" => tick)
                .increment(o.actions);
            if o.actions > 0 || o.note.is_some() {
                tracing::info!(tick, seen = o.seen, actions = o.actions, note = ?o.note, "scheduler tick");
            }
        }
        Err(e) => {
            metrics::counter!("labfleet_scheduler_tick_failures_total", "tick" => tick)
                .increment(1);
            tracing::warn!(tick, error = %e, "scheduler tick failed; the next run tries again");
        }
    }
}

/// Takes and renews the lease every `every`, forever; `leading` says whether this process holds
/// it. A failed renewal (database unreachable) counts as not leading: the lease may run out
/// before the database answers again.
async fn keep_lease(lease: Lease, leading: Arc<AtomicBool>, every: Duration) {
    loop {
        let held = match lease.acquire_or_renew().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler lease: cannot reach the database");
                false
            }
        };
        leading.store(held, Ordering::Release);
        tokio::time::sleep(every).await;
    }
}

/// The recovery sweep runs every `scheduler.sweep_interval_ms` under the lease without claiming
/// each run (its steps are conditional updates, safe to repeat), and records a run only when it
/// did something or a minute has passed, to keep the embedded database's single connection free.
#[derive(Default)]
struct RecoveryTick {
    last_run: Option<Instant>,
    last_record: Option<Instant>,
}

impl RecoveryTick {
    async fn run_if_due(&mut self, s: &Scheduler) {
        let every = Duration::from_millis(s.settings.scheduler.sweep_interval_ms.max(100));
        if self.last_run.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_run = Some(Instant::now());
        let started_at = Utc::now();
        let started = Instant::now();
        let result = sweep_once(&s.settings, &s.store, &s.publisher)
            .await
            .map(|r| TickOutcome {
                seen: 0,
                actions: (r.leases_recovered + r.republished + r.parents_finished) as u64
                    + r.keys_purged,
                note: (!r.is_quiet()).then(|| format!("{r:?}")),
            })
            .map_err(|e| e.to_string());
        observe(Tick::Recovery.as_str(), started.elapsed(), &result);
        let busy = !matches!(&result, Ok(o) if o.actions == 0);
        if busy
            || self
                .last_record
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.last_record = Some(Instant::now());
            if let Err(e) = ticks::record(
                s.store.db(),
                Tick::Recovery.as_str(),
                &s.holder,
                started_at,
                &result,
            )
            .await
            {
                tracing::warn!(error = %e, "could not record the recovery sweep");
            }
        }
    }
}

/// The scheduler's status for `GET /api/scheduler`.
pub async fn status(
    db: &sea_orm::DatabaseConnection,
    settings: &Settings,
) -> Result<SchedulerStatus, sea_orm::DbErr> {
    ticks::status(db, &settings.scheduler).await
}
