//! Logging set-up: `tracing` with an env filter, human-readable by default, JSON lines by flag.

use labfleet_config::LogSettings;
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `quiet` keeps benchmarks' output to their figures.
pub fn init(settings: &LogSettings, quiet: bool) {
    let default = if quiet {
        "warn"
    } else {
        settings.filter.as_str()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if settings.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
