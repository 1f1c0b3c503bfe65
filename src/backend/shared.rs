//! One backend's use of the shared cache tier (SPEC.md, "Shared cache
//! (Redis)"): which key a call has there, what a value read from it means
//! for the section (fresh: served and copied into the local cache for the
//! rest of its `ttl`; stale: kept as the fallback after the local one), and
//! the write of a live answer (off the response path, for `ttl +
//! stale_if_error`, with its fetch time).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::cache::{CacheKey, CachedResponse, Freshness, Lookup};
use super::section::CacheStep;
use super::Backend;
use crate::clock::unix_ms;
use crate::page::{SectionReply, Source, Tier};
use crate::shared_cache::{entry, key, RedisError, SharedTier};

/// A backend's handle on the shared tier.
#[derive(Debug)]
pub struct SharedSlot {
    tier: Arc<SharedTier>,
    /// `prefix` + backend + `|`.
    key_prefix: Box<[u8]>,
}

impl SharedSlot {
    /// The slot of backend `name` in `tier`.
    pub fn new(tier: Arc<SharedTier>, name: &str) -> Self {
        let key_prefix = key::backend_prefix(&tier.config().prefix, name);
        Self { tier, key_prefix }
    }

    /// The tier.
    pub fn tier(&self) -> &Arc<SharedTier> {
        &self.tier
    }

    /// The Redis key of a local cache key.
    pub fn key(&self, local: &[u8]) -> Vec<u8> {
        key::shared_key(&self.key_prefix, local)
    }

    /// The `SCAN` pattern of this backend's keys (of one path, or all).
    pub fn pattern(&self, path: Option<&str>) -> Vec<u8> {
        key::pattern(&self.key_prefix, path)
    }
}

impl Backend {
    /// The shared tier, when this backend uses it.
    pub fn shared(&self) -> Option<&SharedSlot> {
        self.shared.as_ref()
    }

    /// What a value read from the shared tier for `key` means, after the
    /// local tier had no fresh entry (`local_stale`: its stale one, if
    /// any). Fresh: the section is served from it (`tier: shared`) and it
    /// is copied into the local tier for what is left of its `ttl`. Stale:
    /// the call is made, with the local stale entry, or else this one, as
    /// its fallback (SPEC.md's order).
    pub fn adopt_shared(
        &self,
        key: &CacheKey,
        found: Option<Bytes>,
        local_stale: Option<Arc<CachedResponse>>,
        asked: Instant,
    ) -> CacheStep {
        let (Some(cache), Some(slot)) = (&self.cache, &self.shared) else {
            return CacheStep::Call { stale: local_stale };
        };
        let decoded = found.and_then(|raw| match entry::decode(raw, self.max_body) {
            Ok(entry) => Some(entry),
            Err(why) => {
                slot.tier.count(RedisError::Garbage);
                tracing::debug!(backend = %self.name, %why, "shared cache value ignored");
                None
            }
        });
        let Some(found) = decoded else {
            return self.after_shared_miss(key, local_stale, asked);
        };
        // Clocks of replicas differ a little: an entry "from the future" is
        // as old as zero.
        let age = Duration::from_millis(unix_ms().saturating_sub(found.fetched_unix_ms));
        // An `Instant` before boot is representable on Linux; where a fetch
        // time is not, the entry is not used (never taken as younger).
        let Some(fetched_at) = asked.checked_sub(age) else {
            self.stats.cache_miss();
            return CacheStep::Call { stale: local_stale };
        };
        match cache.classify_age(age) {
            Freshness::Fresh => {
                cache.insert_fetched_at(key.clone(), found.status, found.body.clone(), fetched_at);
                self.stats.cache_hit();
                CacheStep::Served(SectionReply {
                    source: Source::Cache,
                    status: Some(found.status),
                    body: Some(found.body),
                    error: None,
                    age: Some(age),
                    tier: Some(Tier::Shared),
                    elapsed: asked.elapsed(),
                })
            }
            Freshness::Stale => {
                self.stats.cache_miss();
                let shared = CachedResponse {
                    status: found.status,
                    body: found.body,
                    fetched_at,
                    tier: Tier::Shared,
                };
                CacheStep::Call { stale: local_stale.or(Some(Arc::new(shared))) }
            }
            Freshness::Expired => self.after_shared_miss(key, local_stale, asked),
        }
    }

    /// Nothing fresh in Redis: the call is made, unless a concurrent
    /// request filled the local tier while this one waited for Redis (then
    /// its answer is served: concurrent requests stay one call).
    fn after_shared_miss(
        &self,
        key: &CacheKey,
        local_stale: Option<Arc<CachedResponse>>,
        asked: Instant,
    ) -> CacheStep {
        if let Some(cache) = &self.cache {
            if let Lookup::Fresh(entry) = cache.lookup(key) {
                return CacheStep::Served(self.local_hit(&entry, asked));
            }
        }
        self.stats.cache_miss();
        CacheStep::Call { stale: local_stale }
    }

    /// Drops the local entries of `path` (all header variants) or all of
    /// them; how many, or `None` without a cache.
    pub fn purge_local(&self, path: Option<&str>) -> Option<u64> {
        Some(self.cache.as_ref()?.purge(path))
    }

    /// Writes a live answer to the shared tier, off the response path.
    pub(super) fn share(&self, key: &CacheKey, status: u16, body: &Bytes) {
        let (Some(cache), Some(slot)) = (&self.cache, &self.shared) else { return };
        let value = entry::encode(status, unix_ms(), body);
        slot.tier.put(slot.key(key), value, cache.servable_for());
    }
}
