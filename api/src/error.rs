//! One error type for every handler, with one mapping to status codes and the `{"ok": false,
//! "error", "code", "field"?}` envelope. Internal failures are logged once with their cause and
//! answered with an opaque message.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use labfleet_jobs::StoreError;
use serde::Serialize;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read (bad JSON, unknown or mistyped field).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The offending field, when one is to blame.
        field: Option<String>,
    },
    /// 422: readable, but a value is not acceptable.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The offending field.
        field: String,
    },
    /// 401: no token, or not a valid one.
    #[error("missing or invalid API token")]
    Unauthorized,
    /// 403: the caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object.
    #[error("{0}")]
    NotFound(String),
    /// 409: the state does not allow it, or a duplicate.
    #[error("{0}")]
    Conflict(String),
    /// 502: a Proxmox cluster could not be reached or refused us.
    #[error("{message}")]
    Upstream {
        /// What went wrong (never a secret).
        message: String,
        /// Which kind of failure.
        code: &'static str,
    },
    /// 503: a dependency (database, broker) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: our fault; the cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Always false.
    ok: bool,
    /// What went wrong, for people.
    error: String,
    /// What went wrong, for programs (snake_case).
    code: &'static str,
    /// The request field to blame, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    /// A 400 naming a field.
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A 422 naming a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            field: field.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Upstream { code, .. } => (StatusCode::BAD_GATEWAY, code),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "request failed");
        }
        let field = match &self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            ok: false,
            error: self.to_string(),
            code,
            field,
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound(format!("job {id} not found")),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            e if e.is_unavailable() => {
                ApiError::Unavailable("the database is unavailable; try again shortly".into())
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        if labfleet_db::is_connection_error(&e) {
            ApiError::Unavailable("the database is unavailable; try again shortly".into())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<labfleet_fleet::RequestError> for ApiError {
    fn from(e: labfleet_fleet::RequestError) -> Self {
        match e {
            labfleet_fleet::RequestError::Invalid { field, message } => {
                ApiError::invalid(field, format!("{field}: {message}"))
            }
            labfleet_fleet::RequestError::Db(e) => e.into(),
        }
    }
}

impl From<labfleet_access::AccessError> for ApiError {
    fn from(e: labfleet_access::AccessError) -> Self {
        use labfleet_access::AccessError;
        match e {
            AccessError::Input { field, message } => ApiError::invalid(field, message),
            AccessError::NotFound(msg) => ApiError::NotFound(msg),
            AccessError::Conflict(msg) => ApiError::Conflict(msg),
            AccessError::Db(db) => db.into(),
        }
    }
}

impl From<labfleet_clusters::ClusterError> for ApiError {
    fn from(e: labfleet_clusters::ClusterError) -> Self {
        use labfleet_clusters::ClusterError;
        match e {
            ClusterError::Input(i) if i.missing => ApiError::bad_field(i.field, i.message),
            ClusterError::Input(i) => ApiError::invalid(i.field, i.message),
            ClusterError::NotFound(id) => ApiError::NotFound(format!("cluster {id} not found")),
            ClusterError::Conflict(msg) => ApiError::Conflict(msg),
            ClusterError::Db(db) => db.into(),
            e => ApiError::Internal(e.to_string()),
        }
    }
}
