//! The handle on the database that users, tokens and the audit log share. Each concept adds its
//! queries in its own module (`users`, `tokens`, `audit`).

use sea_orm::DatabaseConnection;

/// Users, tokens and audit events in the database.
#[derive(Clone)]
pub struct AccessStore {
    pub(crate) db: DatabaseConnection,
}

impl AccessStore {
    /// A store on a migrated database.
    pub fn new(db: DatabaseConnection) -> Self {
        AccessStore { db }
    }
}
