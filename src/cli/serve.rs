//! `labfleet serve`: API, worker and scheduler in one process. With nothing configured this is
//! the embedded default (SQLite file, in-process queue).

use labfleet_config::Settings;
use secrecy::SecretString;

use crate::{components::Components, shutdown, system::System};

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
    let services = System::start(&parts, stop).await?;
    println!(
        "labfleet is serving on http://{} (database: {}, queue: {})",
        services.addr,
        crate::components::describe_database(&parts.settings),
        if parts.settings.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-process"
        }
    );
    services.wait().await?;
    parts.close().await
}
