//! The routes, one module per resource.

pub(crate) mod health;
pub(crate) mod jobs;
