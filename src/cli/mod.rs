//! Subcommands: the parts of the system (`serve`, `api`, …, `user`, `token`) and the API's
//! command-line client (`deploy`, `jobs watch`, `demo`).

pub mod access;
pub mod client;
pub mod demo;
pub mod deploy;
pub mod jobs;
pub mod serve;
pub mod services;
pub mod watch;
