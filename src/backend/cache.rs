//! The response cache of one backend: fresh for `ttl`, then servable as
//! `stale` on error for `stale_if_error` more. Bounded at `max_entries`
//! (`quick_cache`: sharded, CLOCK-style S3-FIFO eviction).
//!
//! Freshness is judged with tokio's clock (so tests can pause time). An entry
//! too old to serve is removed when a lookup finds it; until then it only
//! takes one of the bounded slots.
//!
//! Why `quick_cache` and not moka (the first version): a cached section is a
//! lookup on every page, and moka records every read for its admission
//! policy (a channel send, and maintenance run on the reader's thread from
//! time to time). A hit, key building included, cost ~240 ns there against
//! ~106 ns here (`cargo bench --bench hot_paths -- cache_lookup`,
//! BENCHMARKS.md): 0.8 µs of a ~20 µs page served from cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::page::Tier;

/// A cache key: the resolved path and the forwarded header values as
/// bytes (see `Backend::cache_key`). Bytes, not text: two header values that
/// differ only in bytes that are not UTF-8 are two users.
pub type CacheKey = Arc<[u8]>;

/// A cached 2xx answer.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The service's status.
    pub status: u16,
    /// The JSON body, as received.
    pub body: Bytes,
    /// When it was fetched (by this replica or, for an entry read from the
    /// shared tier, by whichever fetched it).
    pub fetched_at: Instant,
    /// The tier it was found in.
    pub tier: Tier,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Younger than `ttl`: serve without a call.
    Fresh(Arc<CachedResponse>),
    /// Expired, but within `stale_if_error`: serve only if the call fails.
    Stale(Arc<CachedResponse>),
    /// Nothing servable.
    Miss,
}

/// How old an answer is, against the backend's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than `ttl`.
    Fresh,
    /// Within `stale_if_error` after that.
    Stale,
    /// Too old to serve.
    Expired,
}

/// Whether a local key (the path, then `\nname=value` per header) is one of
/// `path`'s.
fn key_is_for_path(key: &[u8], path: &[u8]) -> bool {
    key.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest[0] == b'\n')
}

/// One backend's cache.
pub struct ResponseCache {
    entries: quick_cache::sync::Cache<CacheKey, Arc<CachedResponse>>,
    ttl: Duration,
    servable_for: Duration,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("entries", &self.entries.len()).finish()
    }
}

impl ResponseCache {
    /// A cache with the backend's policy.
    pub fn new(config: &CacheConfig) -> Self {
        let servable_for = config.ttl.saturating_add(config.stale_if_error);
        let capacity = usize::try_from(config.max_entries).unwrap_or(usize::MAX).max(1);
        let entries = quick_cache::sync::Cache::new(capacity);
        Self { entries, ttl: config.ttl, servable_for }
    }

    /// Looks a key up and classifies it by age.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        self.lookup_at(key, Instant::now())
    }

    /// [`ResponseCache::lookup`] with the caller's reading of the clock
    /// (a page reads it once per section, not once per step).
    pub fn lookup_at(&self, key: &[u8], now: Instant) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let age = now.saturating_duration_since(entry.fetched_at);
        if age < self.ttl {
            Lookup::Fresh(entry)
        } else if age < self.servable_for {
            Lookup::Stale(entry)
        } else {
            // Only if it is still this entry: a fresh one may have replaced it.
            self.entries.remove_if(key, |held| Arc::ptr_eq(held, &entry));
            Lookup::Miss
        }
    }

    /// Stores a fresh answer.
    pub fn insert(&self, key: CacheKey, status: u16, body: Bytes) {
        self.insert_fetched_at(key, status, body, Instant::now());
    }

    /// Stores an answer fetched at `fetched_at` (a copy of a shared entry:
    /// fresh here for what is left of its `ttl`).
    pub fn insert_fetched_at(&self, key: CacheKey, status: u16, body: Bytes, fetched_at: Instant) {
        let entry = CachedResponse { status, body, fetched_at, tier: Tier::Local };
        self.entries.insert(key, Arc::new(entry));
    }

    /// When an answer fetched `age` ago is fresh, stale or too old.
    pub fn classify_age(&self, age: Duration) -> Freshness {
        if age < self.ttl {
            Freshness::Fresh
        } else if age < self.servable_for {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// How long an entry is worth keeping anywhere: `ttl + stale_if_error`.
    pub fn servable_for(&self) -> Duration {
        self.servable_for
    }

    /// Drops the entries of `path` (every header variant), or all of them;
    /// says how many.
    pub fn purge(&self, path: Option<&str>) -> u64 {
        let before = self.entries.len();
        match path {
            None => self.entries.clear(),
            Some(path) => {
                let path = path.as_bytes();
                self.entries.retain(|key, _| !key_is_for_path(key, path));
            }
        }
        u64::try_from(before.saturating_sub(self.entries.len())).unwrap_or(0)
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        u64::try_from(self.entries.len()).unwrap_or(u64::MAX)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ResponseCache {
        ResponseCache::new(&CacheConfig {
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(3600),
            max_entries: 100,
            shared: true,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_then_stale_then_gone() {
        let c = cache();
        c.insert(Arc::from(&b"k"[..]), 200, Bytes::from_static(b"{}"));
        assert!(matches!(c.lookup(b"k"), Lookup::Fresh(_)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(c.lookup(b"k"), Lookup::Stale(_)));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(matches!(c.lookup(b"k"), Lookup::Miss));
        assert!(matches!(c.lookup(b"other"), Lookup::Miss));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_too_old_to_serve_is_dropped_when_found() {
        let c = cache();
        c.insert(Arc::from(&b"old"[..]), 200, Bytes::from_static(b"1"));
        c.insert(Arc::from(&b"kept"[..]), 200, Bytes::from_static(b"2"));
        tokio::time::advance(Duration::from_secs(3661)).await;
        c.insert(Arc::from(&b"kept"[..]), 200, Bytes::from_static(b"3"));
        assert!(matches!(c.lookup(b"old"), Lookup::Miss));
        assert_eq!(c.len(), 1, "only the refreshed entry is left");
        match c.lookup(b"kept") {
            Lookup::Fresh(entry) => assert_eq!(&entry.body[..], b"3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn purge_drops_a_path_with_every_header_variant_or_everything() {
        let c = cache();
        for key in
            [&b"/p/4"[..], b"/p/4\nauthorization=a", b"/p/4\nauthorization=b", b"/p/42", b"/p/5"]
        {
            c.insert(Arc::from(key), 200, Bytes::from_static(b"{}"));
        }
        assert_eq!(c.purge(Some("/p/4")), 3);
        assert!(matches!(c.lookup(b"/p/42"), Lookup::Fresh(_)), "a longer path is another path");
        assert!(matches!(c.lookup(b"/p/4"), Lookup::Miss));
        assert_eq!(c.purge(None), 2);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded() {
        let c = ResponseCache::new(&CacheConfig {
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::ZERO,
            max_entries: 10,
            shared: true,
        });
        for i in 0..1000 {
            c.insert(format!("k{i}").into_bytes().into(), 200, Bytes::from_static(b"{}"));
        }
        assert!(c.len() <= 10, "held {}", c.len());
    }
}
