//! Concurrency caps on Proxmox resources (a storage, a node), honoured by every worker process:
//! a resource with cap N has N rows in `resource_slots`; holding one means writing your holder id
//! (a job id) and an expiry into a free row with a conditional UPDATE. A holder that vanishes
//! (killed worker) loses its slots when they expire; the same job run again by another worker
//! takes its own slots back at once, because it carries the same holder id.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{Duration as ChronoDuration, Utc};
use labfleet_db::sql;

use crate::backend::SlotKey;
use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Value};
use tokio::sync::Notify;

/// One resource to hold a slot of, and its cap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Want {
    /// `storage:<cluster>:<storage>` or `node:<cluster>:<node>`.
    pub resource: String,
    /// Slots the resource has.
    pub cap: u32,
}

impl Want {
    /// A slot of a storage. PVE locks a shared storage with one cluster-wide lock, and a local
    /// storage with one lock per node, hence the node in a local storage's key.
    pub fn storage(cluster_db_id: i64, node: Option<&str>, storage: &str, cap: u32) -> Want {
        let resource = match node {
            Some(node) => format!("storage:{cluster_db_id}:{node}/{storage}"),
            None => format!("storage:{cluster_db_id}:{storage}"),
        };
        Want { resource, cap }
    }

    /// The slot of a resource a backend named, with the cap of its kind.
    pub fn for_slot(cluster_db_id: i64, key: &SlotKey, node_cap: u32, storage_cap: u32) -> Want {
        match key {
            SlotKey::Node(node) => Want::node(cluster_db_id, node, node_cap),
            SlotKey::Storage { name, node } => {
                Want::storage(cluster_db_id, node.as_deref(), name, storage_cap)
            }
        }
    }

    /// A slot of a node.
    pub fn node(cluster_db_id: i64, node: &str, cap: u32) -> Want {
        Want {
            resource: format!("node:{cluster_db_id}:{node}"),
            cap,
        }
    }
}

/// The slot table, with a wake-up for waiters in this process when a slot is released here.
#[derive(Clone)]
pub struct Slots {
    db: DatabaseConnection,
    released: Arc<Notify>,
    /// Resources whose rows this process has created (creating them is idempotent but costs a
    /// statement).
    seeded: Arc<Mutex<HashSet<Want>>>,
}

impl Slots {
    /// Slots on a migrated database.
    pub fn new(db: DatabaseConnection) -> Slots {
        Slots {
            db,
            released: Arc::new(Notify::new()),
            seeded: Arc::default(),
        }
    }

    /// Slots held now per resource (`node:<cluster>:<node>`, `storage:…`), across every worker,
    /// including resources with none held (so a gauge falls back to 0).
    pub async fn in_use(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
        let rows = db
            .query_all(sql(
                db.get_database_backend(),
                "SELECT resource, SUM(CASE WHEN holder IS NOT NULL AND expires_at > ? THEN 1 ELSE 0 END) \
                 AS held FROM resource_slots GROUP BY resource ORDER BY resource",
                vec![Utc::now().into()],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get("", "resource")?, r.try_get("", "held")?));
        }
        Ok(out)
    }

    /// Takes one slot of every wanted resource for `holder`, or none: waits up to `patience`
    /// for them, then gives up (the caller parks and tries again later rather than holding a
    /// delivery). Returns whether the slots are held.
    pub async fn acquire(
        &self,
        wants: &[Want],
        holder: &str,
        ttl: Duration,
        patience: Duration,
    ) -> Result<bool, DbErr> {
        let deadline = Instant::now() + patience;
        loop {
            // Registered before trying, so a release between the try and the wait is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_acquire(wants, holder, ttl).await? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Woken at once by a release in this process; other processes' releases are seen
            // by the next poll — rare and jittered, so waiters don't load the database.
            let poll = Duration::from_millis(rand::thread_rng().gen_range(150..350));
            let _ = tokio::time::timeout(poll.min(deadline - now), released).await;
        }
    }

    /// One attempt at [`Slots::acquire`].
    pub async fn try_acquire(
        &self,
        wants: &[Want],
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, DbErr> {
        let mut wants = wants.to_vec();
        wants.sort();
        wants.dedup();
        for want in &wants {
            self.seed(want).await?;
        }
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let expires = now + ChronoDuration::from_std(ttl).unwrap_or_default();
        let mut took_any = false;
        for want in &wants {
            let cap = want.cap.max(1) as i32;
            // Already ours (a run of the same job before a crash or a continuation): renew.
            let mine = self
                .db
                .query_all(sql(
                    backend,
                    "UPDATE resource_slots SET expires_at = ? \
                     WHERE resource = ? AND holder = ? AND slot < ? RETURNING slot",
                    vec![
                        expires.into(),
                        want.resource.as_str().into(),
                        holder.into(),
                        cap.into(),
                    ],
                ))
                .await?;
            if !mine.is_empty() {
                took_any = true;
                continue;
            }
            // The outer condition re-checks the row, so two takers of one free slot cannot both
            // succeed (PostgreSQL re-evaluates it on the locked row version).
            let values: Vec<Value> = vec![
                holder.into(),
                expires.into(),
                want.resource.as_str().into(),
                want.resource.as_str().into(),
                cap.into(),
                now.into(),
                now.into(),
            ];
            let took = self
                .db
                .query_all(sql(
                    backend,
                    "UPDATE resource_slots SET holder = ?, expires_at = ? \
                     WHERE resource = ? AND slot = (SELECT slot FROM resource_slots \
                        WHERE resource = ? AND slot < ? AND (holder IS NULL OR expires_at < ?) \
                        ORDER BY slot LIMIT 1) \
                     AND (holder IS NULL OR expires_at < ?) RETURNING slot",
                    values,
                ))
                .await?;
            if took.is_empty() {
                // All or nothing: give back what this attempt holds.
                if took_any {
                    self.release_quietly(holder).await?;
                }
                return Ok(false);
            }
            took_any = true;
        }
        Ok(true)
    }

    /// Pushes the expiry of every slot `holder` has.
    pub async fn renew(&self, holder: &str, ttl: Duration) -> Result<(), DbErr> {
        let expires = Utc::now() + ChronoDuration::from_std(ttl).unwrap_or_default();
        self.db
            .execute(sql(
                self.db.get_database_backend(),
                "UPDATE resource_slots SET expires_at = ? WHERE holder = ?",
                vec![expires.into(), holder.into()],
            ))
            .await?;
        Ok(())
    }

    /// Gives back every slot `holder` has and wakes this process's waiters.
    pub async fn release(&self, holder: &str) -> Result<(), DbErr> {
        self.release_quietly(holder).await?;
        self.released.notify_waiters();
        Ok(())
    }

    async fn release_quietly(&self, holder: &str) -> Result<(), DbErr> {
        self.db
            .execute(sql(
                self.db.get_database_backend(),
                "UPDATE resource_slots SET holder = NULL, expires_at = NULL WHERE holder = ?",
                vec![holder.into()],
            ))
            .await?;
        Ok(())
    }

    async fn seed(&self, want: &Want) -> Result<(), DbErr> {
        if self.seeded.lock().is_ok_and(|s| s.contains(want)) {
            return Ok(());
        }
        let cap = want.cap.max(1);
        let mut values: Vec<Value> = Vec::with_capacity(cap as usize * 2);
        let mut tuples = Vec::with_capacity(cap as usize);
        for slot in 0..cap as i32 {
            tuples.push("(?, ?)");
            values.push(want.resource.as_str().into());
            values.push(slot.into());
        }
        self.db
            .execute(sql(
                self.db.get_database_backend(),
                &format!(
                    "INSERT INTO resource_slots (resource, slot) VALUES {} ON CONFLICT DO NOTHING",
                    tuples.join(", ")
                ),
                values,
            ))
            .await?;
        if let Ok(mut s) = self.seeded.lock() {
            s.insert(want.clone());
        }
        Ok(())
    }
}
