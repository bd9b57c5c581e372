//! `labfleet api|worker|scheduler|migrate`: one part of the system per process, for scaling out
//! with RabbitMQ and PostgreSQL.

use anyhow::Context;
use labfleet_config::Settings;

use crate::{components::Components, shutdown};

fn warn_if_embedded(settings: &Settings, what: &str) {
    if settings.amqp_url.is_none() {
        tracing::warn!("`labfleet {what}` without AMQP_URL uses an in-process queue that no other process shares; use `labfleet serve` for a single process");
    }
}

/// The HTTP API alone.
pub async fn api(settings: Settings) -> anyhow::Result<()> {
    warn_if_embedded(&settings, "api");
    if settings.admin_token.is_none() {
        tracing::info!("LABFLEET_ADMIN_TOKEN is not set: only user tokens (`labfleet token create`) are accepted");
    }
    let parts = Components::build(settings).await?;
    let stop = shutdown::on_signal();
    let app = parts.api().await?;
    tracing::info!(addr = %app.local_addr()?, "API listening");
    app.run_until_stopped(stop.cancelled_owned()).await?;
    Ok(())
}

/// A worker alone.
pub async fn worker(settings: Settings) -> anyhow::Result<()> {
    warn_if_embedded(&settings, "worker");
    let parts = Components::build(settings).await?;
    let stop = shutdown::on_signal();
    let worker = parts.worker();
    parts.republish_if_in_process().await?;
    worker.run_until_stopped(stop.cancelled_owned()).await;
    Ok(())
}

/// The scheduler alone.
pub async fn scheduler(settings: Settings) -> anyhow::Result<()> {
    let parts = Components::build(settings).await?;
    let stop = shutdown::on_signal();
    parts
        .scheduler()
        .run_until_stopped(stop.cancelled_owned())
        .await;
    Ok(())
}

/// Migrates and exits.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = labfleet_db::connect(&settings)
        .await
        .context("cannot open the database")?;
    labfleet_db::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    println!("database schema is up to date");
    Ok(())
}

/// Imports the legacy clusters.json and prints what happened to each entry.
pub async fn import_clusters(settings: Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parts = Components::build(settings).await?;
    let report = labfleet_clusters::import::import(&parts.clusters, &text).await?;
    if !report.imported.is_empty() {
        let access = labfleet_access::AccessStore::new(parts.store.db().clone());
        let detail = serde_json::json!({
            "file": file.display().to_string(),
            "imported": report.imported,
            "unchanged": report.unchanged.len(),
            "skipped": report.skipped.len(),
        });
        super::access::audit(&access, "cluster.import", "clusters".into(), detail).await;
    }
    for id in &report.imported {
        println!("imported {id}");
    }
    for id in &report.unchanged {
        println!("unchanged {id} (already registered)");
    }
    for (index, reason) in &report.skipped {
        println!("skipped entry {index}: {reason}");
    }
    println!(
        "{} imported, {} unchanged, {} skipped",
        report.imported.len(),
        report.unchanged.len(),
        report.skipped.len()
    );
    Ok(())
}
