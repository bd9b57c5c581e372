//! Subcommands that run parts of the system.

pub mod serve;
pub mod services;
