//! What can go wrong behind the seam, typed so that no code above an adapter reads a
//! hypervisor's error text: the adapter decides what its hypervisor meant, once.

/// A hypervisor call that failed. Each variant keeps the hypervisor's own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Worth another attempt later: unreachable, timed out, a lock held, a 5xx.
    #[error("{0}")]
    Transient(String),
    /// The guest (or operation) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The id asked for is taken (another guest, or a disk left on the id's volume names).
    #[error("{0}")]
    AlreadyExists(String),
    /// The guest is already where the request would leave it (started twice, stopped twice).
    #[error("{0}")]
    AlreadyInState(String),
    /// Someone else changed the guest meanwhile; reading it again and retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// Another attempt would fail the same way (refused, invalid, no permission).
    #[error("{0}")]
    Permanent(String),
}

impl BackendError {
    /// The hypervisor's message.
    pub fn message(&self) -> &str {
        match self {
            BackendError::Transient(m)
            | BackendError::NotFound(m)
            | BackendError::AlreadyExists(m)
            | BackendError::AlreadyInState(m)
            | BackendError::Conflict(m)
            | BackendError::Permanent(m) => m,
        }
    }

    /// Whether the engine should try again after a delay.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_) | BackendError::Conflict(_))
    }
}

/// Why no backend could be had for a registered cluster.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FactoryError {
    /// The cluster is not registered (any more).
    #[error("{0}")]
    Gone(String),
    /// No credentials are stored for it.
    #[error("{0}")]
    NoCredentials(String),
    /// Its settings or credentials cannot be used (cannot be decrypted, a bad address).
    #[error("{0}")]
    Unusable(String),
    /// The registry could not be read now (the database is unreachable).
    #[error("{0}")]
    Unavailable(String),
}

impl FactoryError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, FactoryError::Unavailable(_))
    }
}

/// Why a connection test failed; the text names the cause and never a secret.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProbeError {
    /// The cluster has no usable credentials.
    #[error("{0}")]
    NoCredentials(String),
    /// The credentials were refused.
    #[error("{0}")]
    AuthFailed(String),
    /// The server's certificate was not accepted.
    #[error("{0}")]
    Tls(String),
    /// No answer, or not one that could be used.
    #[error("{0}")]
    Unreachable(String),
}
