//! The in-memory verdicts on recently presented tokens, so that a request costs no database
//! round trip (`GET /api/jobs/{id}` must keep its p99 under 10 ms at 1,000 requests/s).
//!
//! Verdicts are kept for a short TTL. A revoke or disable made through this process evicts the
//! token's entries at once; one made through another process (another API replica, the CLI)
//! takes effect here when the entry's TTL runs out. Expiry needs no eviction: it is checked
//! against the entry's `expires_at` on every use.
//!
//! Refusals are cached too (by digest), so repeating a bad token does not reach the database
//! either. That is safe because a digest only becomes valid when its token is issued, and tokens
//! are 256 random bits: nobody presents one before it exists.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::verify::Principal;

/// Most entries kept; beyond that the stale ones go, and if that is not enough, all of them (a
/// flood of distinct bad tokens must not grow the process without bound).
const MAX_ENTRIES: usize = 10_000;
/// `last_used_at` is written at most this often per token.
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What the database said about a token.
#[derive(Clone, Debug)]
pub(crate) enum Verdict {
    /// Accepted for this principal until `expires_at` (if any).
    Valid(Principal, Option<DateTime<Utc>>),
    /// Unknown, revoked, or its user is disabled.
    Refused,
}

pub(crate) struct TokenCache {
    ttl: Duration,
    entries: HashMap<[u8; 32], (Verdict, Instant)>,
    touched: HashMap<i64, Instant>,
    /// Bumped by every eviction, so a lookup that raced with one does not store its stale verdict.
    generation: u64,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            ttl,
            entries: HashMap::new(),
            touched: HashMap::new(),
            generation: 0,
        }
    }

    /// The verdict on `key` if it is younger than the TTL.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Verdict> {
        self.entries
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(v, _)| v.clone())
    }

    /// The current generation, taken before a lookup.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stores a verdict looked up while the generation was `generation` (dropped if an eviction
    /// happened meanwhile: the lookup may have read the state before it).
    pub fn put(&mut self, key: [u8; 32], verdict: Verdict, generation: u64, now: Instant) {
        if generation != self.generation {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (verdict, now));
    }

    /// Forgets every verdict for which `matches` holds.
    fn evict(&mut self, matches: impl Fn(&Principal) -> bool) {
        self.generation += 1;
        self.entries
            .retain(|_, (v, _)| !matches!(v, Verdict::Valid(p, _) if matches(p)));
    }

    /// Forgets a token (revoked).
    pub fn evict_token(&mut self, token_id: i64) {
        self.evict(|p| p.token_id == token_id);
    }

    /// Forgets every token of a user (disabled).
    pub fn evict_user(&mut self, user_id: i64) {
        self.evict(|p| p.user_id == user_id);
    }

    /// Whether the token's last use should be written now (at most once per `TOUCH_EVERY`).
    pub fn should_touch(&mut self, token_id: i64, now: Instant) -> bool {
        if self.touched.len() >= MAX_ENTRIES {
            self.touched.clear();
        }
        match self.touched.get(&token_id) {
            Some(at) if now.saturating_duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                self.touched.insert(token_id, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn principal(token_id: i64, user_id: i64) -> Principal {
        Principal {
            user_id,
            name: format!("u{user_id}"),
            role: Role::Teacher,
            token_id,
        }
    }

    #[test]
    fn verdicts_live_for_the_ttl() {
        let mut cache = TokenCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let g = cache.generation();
        cache.put([1; 32], Verdict::Valid(principal(1, 1), None), g, t0);
        assert!(matches!(
            cache.get(&[1; 32], t0 + Duration::from_secs(9)),
            Some(Verdict::Valid(..))
        ));
        assert!(cache.get(&[1; 32], t0 + Duration::from_secs(10)).is_none());
        assert!(cache.get(&[2; 32], t0).is_none());
    }

    #[test]
    fn revoking_or_disabling_evicts_at_once() {
        let mut cache = TokenCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let g = cache.generation();
        cache.put([1; 32], Verdict::Valid(principal(1, 7), None), g, t0);
        cache.put([2; 32], Verdict::Valid(principal(2, 7), None), g, t0);
        cache.put([3; 32], Verdict::Valid(principal(3, 8), None), g, t0);
        cache.evict_token(1);
        assert!(cache.get(&[1; 32], t0).is_none());
        assert!(cache.get(&[2; 32], t0).is_some());
        cache.evict_user(7);
        assert!(cache.get(&[2; 32], t0).is_none());
        assert!(cache.get(&[3; 32], t0).is_some());
    }

    #[test]
    fn a_lookup_that_raced_with_an_eviction_is_not_stored() {
        let mut cache = TokenCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let before = cache.generation();
        cache.evict_token(1);
        cache.put([1; 32], Verdict::Valid(principal(1, 1), None), before, t0);
        assert!(cache.get(&[1; 32], t0).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = TokenCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 5) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache.put(key, Verdict::Refused, 0, t0);
        }
        assert!(cache.entries.len() <= MAX_ENTRIES);
    }

    #[test]
    fn last_use_is_written_at_most_once_a_minute() {
        let mut cache = TokenCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(cache.should_touch(1, t0));
        assert!(!cache.should_touch(1, t0 + Duration::from_secs(59)));
        assert!(cache.should_touch(2, t0));
        assert!(cache.should_touch(1, t0 + TOUCH_EVERY));
    }
}
