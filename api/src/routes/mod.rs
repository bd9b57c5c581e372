//! The routes, one module per resource.

pub(crate) mod audit;
pub(crate) mod classes;
pub(crate) mod clusters;
pub(crate) mod health;
pub(crate) mod inventory;
pub(crate) mod jobs;
pub(crate) mod scheduler;
pub(crate) mod users;
pub(crate) mod vms;
