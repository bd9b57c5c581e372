//! Subcommands that run parts of the system.

pub mod access;
pub mod serve;
pub mod services;
