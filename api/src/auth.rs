//! Who is calling. For now one bootstrap admin token (`LABFLEET_ADMIN_TOKEN`), sent as
//! `Authorization: Bearer …`; users, roles and hashed tokens come with access control.

use axum::{extract::FromRequestParts, http::request::Parts};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

/// A caller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything.
    Admin,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The user's name (owner of the jobs it creates, scope of its idempotency keys).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    /// Refuses (403) callers that are not admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
        }
    }

    /// Refuses (403) callers that are neither teachers nor admins.
    pub fn require_teacher(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
        }
    }

    /// Whether the caller sees everything (else only what it owns).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let Some(admin) = &state.settings.admin_token else {
            return Err(ApiError::Unauthorized);
        };
        // Compare digests so the comparison takes the same time wherever the strings differ.
        let expected = Sha256::digest(admin.expose_secret().as_bytes());
        let got = Sha256::digest(presented.as_bytes());
        if expected == got {
            Ok(Caller {
                name: "admin".into(),
                role: Role::Admin,
            })
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
