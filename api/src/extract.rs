//! Reading request bodies, query strings and path ids with errors that name the offending field
//! (axum's own extractors answer with plain text and no field).

use axum::{
    extract::{FromRequestParts, Path},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// Parses a JSON body into `T`, naming the field that is missing, unknown or of the wrong type.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest {
            message: "the request body is empty; a JSON object is expected".into(),
            field: None,
        });
    }
    // Every body is a JSON object: say so in those words rather than naming our Rust type.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let got = match value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Array(_) => Some("an array"),
            serde_json::Value::String(_) => Some("a string"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::Bool(_) => Some("a boolean"),
            serde_json::Value::Null => Some("null"),
        };
        if let Some(got) = got {
            return Err(ApiError::BadRequest {
                message: format!("the request body must be a JSON object, not {got}"),
                field: Some("body".into()),
            });
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports some type mismatches (a number where an enum's name belongs) as
        // syntax errors: only a body that is not JSON at all is malformed.
        let malformed = (inner.is_syntax() || inner.is_eof())
            && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err();
        if malformed {
            ApiError::BadRequest {
                message: format!("malformed JSON: {inner}"),
                field: None,
            }
        } else {
            field_error(&path, &inner.to_string())
        }
    })
}

/// Parses a JSON value (for example a job's `args`) into `T`, naming fields under `prefix`.
pub(crate) fn parse_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        field_error(&path, &e.into_inner().to_string())
    })
}

/// Turns a serde message into a 400 naming the field: for a missing or unknown field the
/// message names it, the path only names its parent.
fn field_error(path: &str, message: &str) -> ApiError {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.split(p).nth(1))
        .and_then(|rest| rest.split('`').next());
    let parent = if path == "." { "" } else { path };
    let field = match named {
        // For an unknown field the path already ends with it; for a missing one it does not.
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_string(),
        Some(name) if parent.is_empty() => name.to_string(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_string(),
        None => parent.to_string(),
    };
    let message = message.split(" at line ").next().unwrap_or(message);
    ApiError::bad_field(field.clone(), format!("{field}: {message}"))
}

/// A query string parsed into `T`, naming the offending parameter on error.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                field_error(&path, &e.into_inner().to_string())
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// The `{id}` path segment as a job id.
pub(crate) struct JobId(pub Uuid);

/// A positive integer id in the path, or a 400 naming `field`.
pub(crate) fn positive_id(raw: Option<String>, field: &str, what: &str) -> Result<i64, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::bad_field(field, "the path must end with one id"))?;
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_field(
            field,
            format!("`{raw}` is not a {what} (a positive integer)"),
        )
    })
}

/// The `{id}` path segment of a class.
pub(crate) struct ClassId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ClassId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_positive_id(parts, state, "id", "class id")
            .await
            .map(ClassId)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_field("id", "the path must end with one id"))?;
        Uuid::parse_str(&raw)
            .map(JobId)
            .map_err(|_| ApiError::bad_field("id", format!("`{raw}` is not a job id (a UUID)")))
    }
}

/// The single path segment as a positive row id (see `positive_id`).
pub(crate) async fn path_positive_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    field: &str,
    what: &str,
) -> Result<i64, ApiError> {
    let raw = Path::<String>::from_request_parts(parts, state)
        .await
        .ok()
        .map(|Path(raw)| raw);
    positive_id(raw, field, what)
}

/// Largest page of a list.
const MAX_PAGE: u64 = 1_000;
/// Largest offset accepted (beyond any real table, and within the database's integer range).
const MAX_OFFSET: u64 = 1_000_000_000;

/// A page size (1–1000, default 100), naming `field` when out of range.
pub(crate) fn page_size(limit: Option<u64>, field: &str) -> Result<u64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=MAX_PAGE) => Ok(n),
        Some(n) => Err(ApiError::invalid(
            field,
            format!("{field} must be between 1 and {MAX_PAGE}, got {n}"),
        )),
    }
}

/// A paging offset (0 by default), naming `field` when out of range.
pub(crate) fn page_offset(offset: Option<u64>, field: &str) -> Result<u64, ApiError> {
    match offset {
        None => Ok(0),
        Some(n @ 0..=MAX_OFFSET) => Ok(n),
        Some(n) => Err(ApiError::invalid(
            field,
            format!("{field} must be at most {MAX_OFFSET}, got {n}"),
        )),
    }
}

/// Where a request came from: the TCP peer's address (the server is run with connect info).
/// Behind a proxy this is the proxy; `X-Forwarded-For` is not trusted, as any client can set it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unknown"),
        }
    }
}
