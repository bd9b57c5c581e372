//! API tokens: issued to a user, shown once, stored as a digest, listed without the secret,
//! revoked.
//!
//! A token is `lf_` followed by 256 random bits in base64url. Only its SHA-256 (hex) is stored. A
//! fast hash is the right choice here: slow password hashes (argon2, bcrypt) exist to make
//! guessing low-entropy human passwords expensive, but nobody can guess 256 random bits, so a
//! single SHA-256 already makes a leaked table useless, and verification stays cheap enough to
//! run on every request.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Duration, Utc};
use labfleet_entities::{api_token, user};
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder,
};
use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{error::AccessError, store::AccessStore, users::User};

/// What every labfleet token starts with (lets secret scanners and people recognise one).
pub const TOKEN_PREFIX: &str = "lf_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Length of a token: the prefix and 32 bytes in unpadded base64 (43 characters).
const TOKEN_LEN: usize = 3 + 43;
/// Characters of the token kept for display: the prefix and five random characters, too few to
/// help anyone guess the rest.
const DISPLAY_LEN: usize = 8;
/// Longest lifetime a token may be given.
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

/// The SHA-256 digest of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `s` has the shape of a labfleet token (checked before any lookup, so junk costs
/// nothing).
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.starts_with(TOKEN_PREFIX)
        && s[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn generate() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A token just issued: the only time the token itself exists outside its owner's hands.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token (show it once, never log it).
    pub token: SecretString,
    /// Its row id (to list or revoke it).
    pub token_id: i64,
    /// Its owner.
    pub user: User,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as listed: never the token, never its digest.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Row id.
    pub id: i64,
    /// Owner's user id.
    pub user_id: i64,
    /// What it is for.
    pub label: Option<String>,
    /// Its first characters.
    pub prefix: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (updated about once a minute at most).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<api_token::Model> for TokenInfo {
    fn from(t: api_token::Model) -> Self {
        TokenInfo {
            id: t.id,
            user_id: t.user_id,
            label: t.label,
            prefix: t.prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A stored token with its owner, as found by its digest.
pub(crate) struct FoundToken {
    pub token: api_token::Model,
    pub user: user::Model,
}

fn clean_label(label: Option<&str>) -> Result<Option<String>, AccessError> {
    let Some(label) = label.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(AccessError::input(
            "label",
            "label must be at most 100 characters, without control characters",
        ));
    }
    Ok(Some(label.to_string()))
}

impl AccessStore {
    /// Issues a new token to user `user_id`, valid for `expires_in_days` (1–3650) or forever.
    pub async fn issue_token(
        &self,
        user_id: i64,
        label: Option<&str>,
        expires_in_days: Option<u32>,
    ) -> Result<IssuedToken, AccessError> {
        let label = clean_label(label)?;
        let now = Utc::now();
        let expires_at = match expires_in_days {
            None => None,
            Some(d @ 1..=MAX_EXPIRES_IN_DAYS) => Some(now + Duration::days(i64::from(d))),
            Some(d) => {
                return Err(AccessError::input(
                    "expires_in_days",
                    format!("expires_in_days must be between 1 and {MAX_EXPIRES_IN_DAYS}, got {d}"),
                ))
            }
        };
        let user = self.user(user_id).await?;
        if user.disabled_at.is_some() {
            return Err(AccessError::Conflict(format!(
                "user `{}` is disabled; tokens cannot be issued to them",
                user.name
            )));
        }
        let token = generate();
        let row = api_token::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            user_id: Set(user.id),
            token_hash: Set(hex::encode(digest(&token))),
            label: Set(label),
            prefix: Set(token[..DISPLAY_LEN].to_string()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            last_used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            token_id: row.id,
            user,
            expires_at,
        })
    }

    /// A user's tokens, newest first.
    pub async fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, AccessError> {
        self.user(user_id).await?;
        Ok(api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(user_id))
            .order_by_desc(api_token::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(TokenInfo::from)
            .collect())
    }

    /// Revokes a token (revoking it again changes nothing). Returns it as it is now.
    pub async fn revoke_token(&self, token_id: i64) -> Result<TokenInfo, AccessError> {
        api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(api_token::Column::Id.eq(token_id))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        api_token::Entity::find_by_id(token_id)
            .one(&self.db)
            .await?
            .map(TokenInfo::from)
            .ok_or_else(|| AccessError::NotFound(format!("token {token_id} not found")))
    }

    /// The token whose digest is `digest`, with its owner.
    pub(crate) async fn find_token(&self, digest: &[u8; 32]) -> Result<Option<FoundToken>, DbErr> {
        Ok(api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(hex::encode(digest)))
            .find_also_related(user::Entity)
            .one(&self.db)
            .await?
            .and_then(|(token, user)| Some(FoundToken { token, user: user? })))
    }

    /// Records that a token was used now.
    pub(crate) async fn touch_token(&self, token_id: i64) -> Result<(), DbErr> {
        api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUsedAt, Expr::value(Utc::now()))
            .filter(api_token::Column::Id.eq(token_id))
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_well_formed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(!looks_like_token(&a[..TOKEN_LEN - 1]));
        assert!(!looks_like_token(&format!("xx_{}", &a[3..])));
        assert!(!looks_like_token(&format!("{}!", &a[..TOKEN_LEN - 1])));
    }

    #[test]
    fn the_digest_is_sha256_of_the_whole_token() {
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(
            clean_label(Some("  ci  ")).ok().flatten().as_deref(),
            Some("ci")
        );
        assert_eq!(clean_label(Some("   ")).ok().flatten(), None);
        assert!(clean_label(Some(&"x".repeat(101))).is_err());
        assert!(clean_label(Some("a\nb")).is_err());
    }
}
