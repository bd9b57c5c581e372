//! Database migrations. Every migration must run on both SQLite (the embedded default) and
//! PostgreSQL, so only portable column types and sea-query DDL are used here.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_jobs;
mod m20261123_000002_clusters;
mod m20261123_000003_lease_token;
mod m20261123_000004_inventory;
mod m20261123_000006_access;
mod m20261123_000007_classes;
mod m20261123_000008_scheduler;

/// The ordered list of labfleet's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_jobs::Migration),
            Box::new(m20261123_000002_clusters::Migration),
            Box::new(m20261123_000003_lease_token::Migration),
            Box::new(m20261123_000004_inventory::Migration),
            Box::new(m20261123_000006_access::Migration),
            Box::new(m20261123_000007_classes::Migration),
            Box::new(m20261123_000008_scheduler::Migration),
        ]
    }
}
