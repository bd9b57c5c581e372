//! Who is calling, and what their role allows. A request carries `Authorization: Bearer …`
//! with either the bootstrap admin token (`LABFLEET_ADMIN_TOKEN`, an admin called `admin`
//! without a user row) or a user's API token, verified by `labfleet_access::Authenticator`
//! (a digest compared in memory for recently seen tokens: no database round trip per request).

use axum::{extract::FromRequestParts, http::request::Parts};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

pub(crate) use labfleet_access::Role;

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The user's row id; `None` for the bootstrap admin.
    pub user_id: Option<i64>,
    /// The user's name (owner of the jobs it creates, scope of its idempotency keys).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    /// Whether the caller is an admin (who sees and may do everything).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses (403) callers that are not admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs the admin role".into()))
        }
    }

    /// Refuses (403) students: teachers and admins pass.
    pub fn require_teacher(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Teacher => Ok(()),
            Role::Student => Err(ApiError::Forbidden(
                "this needs the teacher or admin role".into(),
            )),
        }
    }

    /// Whether the caller may see an object created by `owner` (admins see everything).
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.name == owner
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
        if let Some(admin) = &state.settings.admin_token {
            // Compare digests so the comparison takes the same time wherever the strings differ.
            let expected = Sha256::digest(admin.expose_secret().as_bytes());
            if expected == Sha256::digest(presented.as_bytes()) {
                return Ok(Caller {
                    user_id: None,
                    name: labfleet_access::users::BOOTSTRAP_ADMIN.into(),
                    role: Role::Admin,
                });
            }
        }
        match state.auth.verify(presented).await {
            Ok(Some(p)) => Ok(Caller {
                user_id: Some(p.user_id),
                name: p.name,
                role: p.role,
            }),
            Ok(None) => Err(ApiError::Unauthorized),
            Err(e) => Err(e.into()),
        }
    }
}
