//! Access control and audit: users with one role each, the API tokens they own (stored as SHA-256
//! digests, shown once), verification of presented tokens with a short in-memory cache, and the
//! audit log of configuration changes and user actions.

pub mod audit;
mod cache;
pub mod error;
pub mod role;
pub mod store;
pub mod tokens;
pub mod users;
pub mod verify;

pub use audit::{AuditEventView, AuditFilter, NewAuditEvent};
pub use error::AccessError;
pub use role::Role;
pub use store::AccessStore;
pub use tokens::{IssuedToken, TokenInfo};
pub use users::User;
pub use verify::{Authenticator, Principal};
