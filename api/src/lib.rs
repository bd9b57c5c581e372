//! The HTTP API: turns requests into jobs and shows their progress. Handlers validate, write in
//! one transaction, publish, and answer; they never wait for Proxmox.

mod auth;
mod error;
mod extract;
mod openapi;
mod routes;
pub mod startup;
mod state;
mod telemetry;

pub use error::ApiError;
pub use startup::Application;
pub use state::AppState;
