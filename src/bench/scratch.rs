//! Scratch infrastructure for benchmarks: a PostgreSQL database and a queue prefix of their own,
//! removed afterwards, so a benchmark never touches real data.

use std::time::Duration;

use anyhow::Context;
use labfleet_config::Settings;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use secrecy::ExposeSecret;

/// A scratch PostgreSQL database; `drop_now` removes it.
pub struct ScratchPostgres {
    admin: DatabaseConnection,
    name: String,
    /// URL of the scratch database.
    pub url: String,
}

impl ScratchPostgres {
    /// Creates `labfleet_bench_<random>` on the server of `admin_url`.
    pub async fn create(admin_url: &str) -> anyhow::Result<ScratchPostgres> {
        let name = format!("labfleet_bench_{}", hex::encode(rand::random::<[u8; 4]>()));
        let admin = Database::connect(admin_url)
            .await
            .context("cannot reach PostgreSQL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = replace_db_name(admin_url, &name);
        Ok(ScratchPostgres { admin, name, url })
    }

    /// Drops the database (connections still open are closed by force).
    pub async fn drop_now(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// Points settings at RabbitMQ + the scratch database with a unique, self-expiring queue prefix.
pub fn use_rabbit_postgres(settings: &mut Settings, db_url: &str, amqp_url: &str) {
    settings.database_url = Some(db_url.to_string());
    settings.amqp_url = Some(amqp_url.to_string());
    settings.queue_prefix = format!("bench-{}", hex::encode(rand::random::<[u8; 4]>()));
    settings.queue_expires_ms = Some(600_000);
    settings.secret_key = Some(hex::encode(rand::random::<[u8; 32]>()).into());
}

/// Environment for a child `labfleet` process with these settings.
pub fn child_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RUST_LOG", "warn".to_string()),
        ("LABFLEET_QUEUE_PREFIX", settings.queue_prefix.clone()),
        ("LABFLEET_DATA_DIR", settings.data_dir.display().to_string()),
    ];
    if let Some(url) = &settings.database_url {
        env.push(("DATABASE_URL", url.clone()));
    }
    if let Some(url) = &settings.amqp_url {
        env.push(("AMQP_URL", url.clone()));
    }
    if let Some(key) = &settings.secret_key {
        env.push(("LABFLEET_SECRET_KEY", key.expose_secret().to_string()));
    }
    if let Some(ms) = settings.queue_expires_ms {
        env.push(("LABFLEET_QUEUE_EXPIRES_MS", ms.to_string()));
    }
    env
}

/// Resident memory of a process in MiB (Linux), for memory-flatness checks.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn replace_db_name(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/') {
        Some(i) => format!("{}/{db}{query}", &base[..scheme_end + i]),
        None => format!("{base}/{db}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn database_name_is_replaced_keeping_host_and_options() {
        assert_eq!(
            replace_db_name("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            replace_db_name("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
