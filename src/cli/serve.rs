//! `labfleet serve`: API, worker and scheduler in one process. With nothing configured this is
//! the embedded default (SQLite file, in-process queue).

use std::sync::Arc;

use anyhow::Context;
use labfleet_jobs::Settings;
use secrecy::SecretString;

use crate::{components::Components, shutdown};

/// Runs everything until Ctrl-C or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    if settings.admin_token.is_none() {
        // No token configured: make one for this run and show it once, so the API is usable.
        let token = hex::encode(rand::random::<[u8; 24]>());
        println!("admin token (set LABFLEET_ADMIN_TOKEN to choose your own): {token}");
        settings.admin_token = Some(SecretString::from(token));
    }
    let parts = Components::build(settings).await?;
    let stop = shutdown::on_signal();

    let api = labfleet_api::Application::build(
        parts.settings.clone(),
        parts.store.clone(),
        parts.publisher.clone(),
        parts.clusters.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", parts.settings.bind))?;
    let addr = api.local_addr()?;
    println!(
        "labfleet is serving on http://{addr} (database: {}, queue: {})",
        describe_db(&parts.settings),
        if parts.settings.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-process"
        }
    );

    let worker = labfleet_worker::Worker::new(
        parts.store.clone(),
        parts.publisher.clone(),
        parts.clusters.clone(),
        (*parts.settings).clone(),
    );
    parts.republish_if_in_process().await?;
    let api_task = tokio::spawn(api.run_until_stopped(stop.clone().cancelled_owned()));
    let worker_task = tokio::spawn(worker.run_until_stopped(stop.clone().cancelled_owned()));
    let settings: Arc<Settings> = parts.settings.clone();
    let (store, publisher) = (parts.store.clone(), parts.publisher.clone());
    let sched_stop = stop.clone();
    let scheduler_task = tokio::spawn(async move {
        labfleet_scheduler::run_until_stopped(
            &settings,
            store,
            publisher,
            sched_stop.cancelled_owned(),
        )
        .await
    });
    api_task.await??;
    worker_task.await?;
    scheduler_task.await?;
    Ok(())
}

fn describe_db(settings: &Settings) -> String {
    match &settings.database_url {
        Some(url) if url.starts_with("postgres") => "PostgreSQL".into(),
        Some(_) => "SQLite".into(),
        None => format!(
            "SQLite file {}",
            settings.data_dir.join("labfleet.db").display()
        ),
    }
}
