//! `/api/me`, `/api/users`, `/api/users/{id}/tokens`, `/api/tokens/{id}`: who am I; users and
//! their API tokens (admin). A token is shown once, in the answer that issues it; listings carry
//! neither the token nor its digest.

use axum::{
    body::Bytes,
    extract::{FromRequestParts, State},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use labfleet_access::{Role, TokenInfo, User};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Caller,
    error::{ApiError, ErrorBody},
    extract::{parse_json, path_positive_id, Source},
    state::AppState,
};

/// The `{id}` path segment of a user.
pub(crate) struct UserId(i64);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_positive_id(parts, state, "id", "user id")
            .await
            .map(UserId)
    }
}

/// The `{id}` path segment of a token.
pub(crate) struct TokenId(i64);

impl<S: Send + Sync> FromRequestParts<S> for TokenId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_positive_id(parts, state, "id", "token id")
            .await
            .map(TokenId)
    }
}

/// The caller.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    ok: bool,
    /// The user's id (none for the bootstrap admin).
    user_id: Option<i64>,
    /// The user's name.
    name: String,
    /// The user's role.
    role: Role,
}

/// Who the token belongs to (any role).
#[utoipa::path(get, path = "/api/me", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        ok: true,
        user_id: caller.user_id,
        name: caller.name,
        role: caller.role,
    })
}

/// Every user.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    ok: bool,
    users: Vec<User>,
}

/// List users (admin).
#[utoipa::path(get, path = "/api/users", tag = "access", security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(crate) async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<UserList>, ApiError> {
    caller.require_admin()?;
    let users = state.auth.store().list_users().await?;
    Ok(Json(UserList { ok: true, users }))
}

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    /// Unique name: 1–64 letters, digits, `.`, `_`, `-`, `@`.
    name: String,
    /// `admin`, `teacher` or `student`.
    role: String,
}

/// One user.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OneUser {
    ok: bool,
    user: User,
}

/// Create a user (admin). A name already taken is a 409.
#[utoipa::path(post, path = "/api/users", tag = "access", request_body = CreateUser,
    security(("bearer" = [])),
    responses((status = 201, body = OneUser), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: CreateUser = parse_json(&body)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "unknown role `{}`; expected admin, teacher or student",
                req.role
            ),
        )
    })?;
    let user = state.auth.store().create_user(&req.name, role).await?;
    let detail = json!({"name": user.name, "role": user.role});
    state
        .audit(
            &caller,
            source,
            "user.create",
            format!("user:{}", user.id),
            detail,
        )
        .await;
    Ok((StatusCode::CREATED, Json(OneUser { ok: true, user })).into_response())
}

/// Body of `POST /api/users/{id}/tokens` (may be empty).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueToken {
    /// What the token is for (up to 100 characters).
    label: Option<String>,
    /// Days until it stops working (1–3650); never, if omitted.
    expires_in_days: Option<u32>,
}

/// A new token: shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Issued {
    ok: bool,
    /// The token; store it now, it cannot be shown again.
    token: String,
    /// Its id (to list or revoke it).
    token_id: i64,
    /// When it stops working, if ever.
    expires_at: Option<DateTime<Utc>>,
}

/// Issue an API token to a user (admin).
#[utoipa::path(post, path = "/api/users/{id}/tokens", tag = "access", request_body = IssueToken,
    params(("id" = i64, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 201, body = Issued), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn issue_token(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    UserId(user_id): UserId,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: IssueToken = if body.iter().all(u8::is_ascii_whitespace) {
        IssueToken::default()
    } else {
        parse_json(&body)?
    };
    let issued = state
        .auth
        .store()
        .issue_token(user_id, req.label.as_deref(), req.expires_in_days)
        .await?;
    let detail = json!({
        "user": issued.user.name, "user_id": user_id, "label": req.label, "expires_at": issued.expires_at,
    });
    state
        .audit(
            &caller,
            source,
            "token.issue",
            format!("token:{}", issued.token_id),
            detail,
        )
        .await;
    let body = Issued {
        ok: true,
        token: issued.token.expose_secret().to_string(),
        token_id: issued.token_id,
        expires_at: issued.expires_at,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A user's tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    ok: bool,
    tokens: Vec<TokenInfo>,
}

/// List a user's tokens (admin), newest first: never the token, never its digest.
#[utoipa::path(get, path = "/api/users/{id}/tokens", tag = "access",
    params(("id" = i64, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
    UserId(user_id): UserId,
) -> Result<Json<TokenList>, ApiError> {
    caller.require_admin()?;
    let tokens = state.auth.store().list_tokens(user_id).await?;
    Ok(Json(TokenList { ok: true, tokens }))
}

/// A revoked token.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Revoked {
    ok: bool,
    token: TokenInfo,
}

/// Revoke a token (admin). This API process refuses it at once; other API processes within
/// 10 s (their token cache). Revoking a revoked token changes nothing.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "access",
    params(("id" = i64, Path, description = "Token id")), security(("bearer" = [])),
    responses((status = 200, body = Revoked), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    caller: Caller,
    source: Source,
    State(state): State<AppState>,
    TokenId(token_id): TokenId,
) -> Result<Json<Revoked>, ApiError> {
    caller.require_admin()?;
    let token = state.auth.revoke(token_id).await?;
    let detail = json!({"user_id": token.user_id});
    state
        .audit(
            &caller,
            source,
            "token.revoke",
            format!("token:{token_id}"),
            detail,
        )
        .await;
    Ok(Json(Revoked { ok: true, token }))
}
