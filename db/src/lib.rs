//! Connecting to the database (SQLite or PostgreSQL), bringing its schema up to date, and the
//! helpers every store writes its SQL with: one text for both backends, `?` placeholders.

use std::time::Duration;

use labfleet_config::Settings;
use labfleet_migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    Statement, TransactionTrait, Value,
};

/// Opens the pool described by the settings. For the embedded SQLite file the data directory is
/// created, WAL mode and a busy timeout are switched on so the API, worker and scheduler of one
/// process can write concurrently.
pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbErr> {
    let url = settings.effective_database_url();
    let sqlite = url.starts_with("sqlite:");
    if sqlite && settings.database_url.is_none() {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            DbErr::Custom(format!(
                "cannot create data dir {}: {e}",
                settings.data_dir.display()
            ))
        })?;
    }
    let mut opts = ConnectOptions::new(url);
    let acquire = Duration::from_millis(settings.database.acquire_timeout_ms);
    // SQLite: one connection. Its deferred transactions fail at once with "database is locked"
    // when another connection commits between their read and their write (busy_timeout does not
    // help there), and one writer at a time is all SQLite allows anyway.
    opts.max_connections(if sqlite {
        1
    } else {
        settings.database.max_connections
    })
    .min_connections(1)
    .connect_timeout(acquire)
    .acquire_timeout(acquire)
    .sqlx_logging(false)
    // No ping before each checkout: it doubled the round trips of every statement. A connection
    // that died (database restart, network cut) fails its next statement instead, is dropped by
    // the pool, and that failure is handled like any outage (503 in the API, retry in workers).
    .test_before_acquire(false)
    // WAL lets readers proceed while one writer commits; the busy timeout makes writers wait for
    // each other instead of failing with SQLITE_BUSY. synchronous=NORMAL is durable across process
    // crashes in WAL mode (only an OS crash can lose the last commits). Set per connection.
    .map_sqlx_sqlite_opts(|o| {
        o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
    });
    Database::connect(opts).await
}

/// Applies every pending migration. On PostgreSQL they run in one transaction under an advisory
/// lock, so several processes starting together migrate once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7461627)")
            .await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await
    } else {
        Migrator::up(db, None).await
    }
}

/// True when a database error means "cannot reach the database" rather than "bad query".
pub fn is_connection_error(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(err) | DbErr::Query(err) => {
            let text = err.to_string().to_ascii_lowercase();
            [
                "connection",
                "pool timed out",
                "broken pipe",
                "io error",
                "closed",
                // Deadlocks and serialization failures are passing contention: worth a retry.
                "deadlock detected",
                "could not serialize",
            ]
            .iter()
            .any(|needle| text.contains(needle))
        }
        _ => false,
    }
}

/// Builds a statement from SQL written with `?` placeholders, numbering them for PostgreSQL.
pub fn sql(backend: DatabaseBackend, text: &str, values: Vec<Value>) -> Statement {
    let text = if backend == DatabaseBackend::Postgres {
        let mut out = String::with_capacity(text.len() + 16);
        let mut n = 0;
        for ch in text.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        out
    } else {
        text.to_string()
    };
    Statement::from_sql_and_values(backend, text, values)
}

/// `?, ?, ?` for `n` values.
pub fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let pg = sql(DatabaseBackend::Postgres, "a = ? AND b IN (?, ?)", vec![]);
        assert_eq!(pg.sql, "a = $1 AND b IN ($2, $3)");
        let lite = sql(DatabaseBackend::Sqlite, "a = ?", vec![]);
        assert_eq!(lite.sql, "a = ?");
    }
}
