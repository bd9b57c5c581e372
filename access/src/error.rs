//! Why an access operation failed.

use sea_orm::DbErr;

/// An error of the access store.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A value is not acceptable.
    #[error("{message}")]
    Input {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such user or token.
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (duplicate name, disabled user).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl AccessError {
    pub(crate) fn input(field: &'static str, message: impl Into<String>) -> Self {
        AccessError::Input {
            field,
            message: message.into(),
        }
    }
}
