//! Turning a presented token into a principal: shape check, SHA-256, then the cache
//! (`cache.rs`) or, on a miss, one database read. Expired and revoked tokens and disabled users
//! are refused. `last_used_at` is written lazily, at most once a minute per token, in a task of
//! its own, never on the request path.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::DbErr;

use crate::{
    cache::{TokenCache, Verdict},
    error::AccessError,
    role::Role,
    store::AccessStore,
    tokens::{digest, looks_like_token, TokenInfo},
    users::User,
};

/// How long a verdict on a token is trusted without asking the database again: also how long a
/// revoke made through another process may take to reach this one.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Who a valid token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The user's role.
    pub role: Role,
    /// The token presented.
    pub token_id: i64,
}

/// Verifies tokens; revokes and disables through here so this process forgets them at once.
#[derive(Clone)]
pub struct Authenticator {
    store: AccessStore,
    cache: Arc<Mutex<TokenCache>>,
}

impl Authenticator {
    /// An authenticator with the standard TTL.
    pub fn new(store: AccessStore) -> Self {
        Self::with_ttl(store, CACHE_TTL)
    }

    /// An authenticator trusting verdicts for `ttl`.
    pub fn with_ttl(store: AccessStore, ttl: Duration) -> Self {
        Authenticator {
            store,
            cache: Arc::new(Mutex::new(TokenCache::new(ttl))),
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &AccessStore {
        &self.store
    }

    fn cache(&self) -> MutexGuard<'_, TokenCache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The principal `presented` stands for, or `None` when it is not a valid token. Errs only
    /// when the database cannot be read.
    pub async fn verify(&self, presented: &str) -> Result<Option<Principal>, DbErr> {
        if !looks_like_token(presented) {
            return Ok(None);
        }
        let key = digest(presented);
        let now = Instant::now();
        let (cached, generation) = {
            let cache = self.cache();
            (cache.get(&key, now), cache.generation())
        };
        let verdict = match cached {
            Some(v) => v,
            None => {
                let v = self.lookup(&key).await?;
                self.cache().put(key, v.clone(), generation, now);
                v
            }
        };
        match verdict {
            Verdict::Valid(p, expires_at) if expires_at.is_none_or(|e| e > Utc::now()) => {
                self.touch_soon(p.token_id, now);
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }

    async fn lookup(&self, key: &[u8; 32]) -> Result<Verdict, DbErr> {
        let Some(found) = self.store.find_token(key).await? else {
            return Ok(Verdict::Refused);
        };
        if found.token.revoked_at.is_some() || found.user.disabled_at.is_some() {
            return Ok(Verdict::Refused);
        }
        let Some(role) = Role::parse(&found.user.role) else {
            tracing::warn!(user.id = found.user.id, role = %found.user.role, "user has an unknown role; refusing their token");
            return Ok(Verdict::Refused);
        };
        Ok(Verdict::Valid(
            Principal {
                user_id: found.user.id,
                name: found.user.name,
                role,
                token_id: found.token.id,
            },
            found.token.expires_at,
        ))
    }

    fn touch_soon(&self, token_id: i64, now: Instant) {
        if !self.cache().should_touch(token_id, now) {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(token_id).await {
                tracing::warn!(token.id = token_id, error = %e, "could not record a token's last use");
            }
        });
    }

    /// Revokes a token; this process refuses it from now on, others within `CACHE_TTL`.
    pub async fn revoke(&self, token_id: i64) -> Result<TokenInfo, AccessError> {
        let token = self.store.revoke_token(token_id).await?;
        self.cache().evict_token(token_id);
        Ok(token)
    }

    /// Disables a user; this process refuses their tokens from now on, others within `CACHE_TTL`.
    pub async fn disable_user(&self, user_id: i64) -> Result<User, AccessError> {
        let user = self.store.disable_user(user_id).await?;
        self.cache().evict_user(user_id);
        Ok(user)
    }
}
