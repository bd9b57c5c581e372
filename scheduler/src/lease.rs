//! The leader lease: one row per lease name, held by one scheduler process until it expires.
//! Taking it and renewing it are the same conditional UPDATE ("mine, or expired"), so two
//! replicas can never both believe they hold it for longer than one lease period, and a leader
//! that died is replaced once its lease runs out. A clean stop releases it at once.

use std::time::Duration;

use chrono::Utc;
use labfleet_db::sql;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

/// The lease all periodic work runs under.
pub const LEADER: &str = "scheduler";

/// One process's claim on a named lease.
#[derive(Clone)]
pub struct Lease {
    db: DatabaseConnection,
    name: &'static str,
    holder: String,
    length: Duration,
}

impl Lease {
    /// A lease called `name` that `holder` (unique per process) tries to hold for `length`.
    pub fn new(
        db: DatabaseConnection,
        name: &'static str,
        holder: String,
        length: Duration,
    ) -> Self {
        Lease {
            db,
            name,
            holder,
            length,
        }
    }

    /// Who this process is.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if it is free or expired, or renews it if this process holds it.
    /// True when this process holds it for another `length` from now.
    pub async fn acquire_or_renew(&self) -> Result<bool, DbErr> {
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.length).unwrap_or_default();
        let renewed = self
            .db
            .execute(sql(
                backend,
                "UPDATE scheduler_leases SET \
                   acquired_at = CASE WHEN holder = ? THEN acquired_at ELSE ? END, \
                   holder = ?, expires_at = ? \
                 WHERE name = ? AND (holder = ? OR expires_at < ?)",
                vec![
                    self.holder.clone().into(),
                    now.into(),
                    self.holder.clone().into(),
                    until.into(),
                    self.name.into(),
                    self.holder.clone().into(),
                    now.into(),
                ],
            ))
            .await?;
        if renewed.rows_affected() == 1 {
            return Ok(true);
        }
        // No row yet (first start), or someone else holds it: only the first case inserts.
        let inserted = self
            .db
            .execute(sql(
                backend,
                "INSERT INTO scheduler_leases (name, holder, expires_at, acquired_at) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                vec![
                    self.name.into(),
                    self.holder.clone().into(),
                    until.into(),
                    now.into(),
                ],
            ))
            .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Gives the lease up (a clean stop), so another replica takes over without waiting.
    pub async fn release(&self) -> Result<(), DbErr> {
        let backend = self.db.get_database_backend();
        self.db
            .execute(sql(
                backend,
                "UPDATE scheduler_leases SET expires_at = ? WHERE name = ? AND holder = ?",
                vec![
                    (Utc::now() - chrono::Duration::seconds(1)).into(),
                    self.name.into(),
                    self.holder.clone().into(),
                ],
            ))
            .await?;
        Ok(())
    }
}

/// The current holder of a lease and until when, if anyone ever took it.
pub async fn current(
    db: &DatabaseConnection,
    name: &str,
) -> Result<Option<(String, chrono::DateTime<Utc>)>, DbErr> {
    let row = db
        .query_one(sql(
            db.get_database_backend(),
            "SELECT holder, expires_at FROM scheduler_leases WHERE name = ?",
            vec![name.into()],
        ))
        .await?;
    match row {
        Some(r) => Ok(Some((
            r.try_get("", "holder")?,
            r.try_get("", "expires_at")?,
        ))),
        None => Ok(None),
    }
}
