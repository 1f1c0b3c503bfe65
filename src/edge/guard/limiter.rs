//! One `rate_limit`: GCRA buckets (governor) held in a bounded store, and
//! the verdict with the numbers the `RateLimit*` headers need.
//!
//! governor's own keyed stores never forget a key unless asked
//! (`retain_recent` on a timer), so a flood of distinct client addresses
//! would grow them without bound between sweeps. [`Buckets`] is our
//! `StateStore` instead: sharded maps with a fixed capacity, which make room
//! only when full, by dropping first the buckets that are as good as fresh
//! (their theoretical arrival time has passed, so dropping them loses
//! nothing) and then the half nearest to fresh. A flooder's one-request
//! buckets are the nearest to fresh, so they go before a busy client's.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock, Reference as _};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::Quota;
use parking_lot::Mutex;

use super::shared_limit::SharedLimit;
use crate::config::RateLimitConfig;

/// Most buckets one limit keeps (about 2.5 MB at most).
pub const MAX_BUCKETS: usize = 65_536;

/// Shards of the store: requests on different keys rarely wait on each other.
const SHARDS: usize = 16;

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A consumer, by name (names survive reloads; indexes do not).
    Consumer(Arc<str>),
    /// A JWT caller, by its `consumer_claim`: apart from consumers, so a
    /// token cannot draw from (or drain) an API key consumer's bucket.
    Subject(Arc<str>),
    /// A client address; IPv6 by its /64, the block one host is given.
    Ip(IpAddr),
}

impl LimitKey {
    /// The key for a client address.
    pub fn ip(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        };
        LimitKey::Ip(ip)
    }
}

/// What a limit says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; `remaining` more would be now, and the bucket is full
    /// again after `reset`.
    Allowed {
        /// Requests that would still pass at once.
        remaining: u32,
        /// Until the bucket is whole again.
        reset: Duration,
    },
    /// Refused; the next request under this key passes after `retry_after`.
    Limited {
        /// Until one more request conforms.
        retry_after: Duration,
    },
}

type Gcra<C> = governor::RateLimiter<LimitKey, Buckets<C>, C, StateInformationMiddleware>;

/// One configured limit and its buckets.
pub struct Limiter<C: Clock + Clone = MonotonicClock> {
    config: RateLimitConfig,
    /// The time one request adds to its bucket: `per / requests`.
    interval: Duration,
    gcra: Gcra<C>,
    /// The store's maps, also held here (governor keeps its store private).
    shards: Arc<Shards>,
    /// `policy = "redis"`: the buckets in Redis, asked first.
    shared: Option<SharedLimit>,
    /// `RateLimit-Policy`, the same on every answer: written once.
    policy_header: actix_web::http::header::HeaderValue,
    /// `limit=<requests>, remaining=`: the fixed start of `RateLimit`.
    state_prefix: Box<[u8]>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limit on the process's monotonic clock.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, MonotonicClock, MAX_BUCKETS)
    }

    /// A limit kept in Redis (`policy = "redis"`), with this process's
    /// own buckets for when Redis cannot answer.
    pub fn shared(config: RateLimitConfig, shared: SharedLimit) -> Self {
        Limiter { shared: Some(shared), ..Self::new(config) }
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limit on `clock`, keeping at most about `capacity` buckets.
    pub fn with_clock(config: RateLimitConfig, clock: C, capacity: usize) -> Self {
        // Validation keeps `requests` at most one a nanosecond of `per`.
        let interval = (config.per / config.requests.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(config.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let buckets = Buckets::new(clock.clone(), capacity);
        let shards = buckets.shards.clone();
        let gcra = governor::RateLimiter::new(quota, buckets, clock);
        let policy = format!("{};w={}", config.requests, super::window(config.per));
        let policy_header = actix_web::http::header::HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static(""));
        let state_prefix = format!("limit={}, remaining=", config.requests).into_bytes().into();
        Limiter { config, interval, gcra, shards, shared: None, policy_header, state_prefix }
    }

    /// `RateLimit-Policy: <requests>;w=<per in s>`.
    pub fn policy_header(&self) -> &actix_web::http::header::HeaderValue {
        &self.policy_header
    }

    /// `RateLimit: limit=<requests>, remaining=<remaining>, reset=<reset_secs>`,
    /// written without `fmt` (it is on every answer of a limited route).
    pub fn state_header(
        &self,
        remaining: u32,
        reset_secs: u64,
    ) -> actix_web::http::header::HeaderValue {
        let mut line = bytes::BytesMut::with_capacity(self.state_prefix.len() + 32);
        line.extend_from_slice(&self.state_prefix);
        let mut digits = crate::digits::Digits::default();
        line.extend_from_slice(crate::digits::decimal(remaining.into(), 1, &mut digits).as_bytes());
        line.extend_from_slice(b", reset=");
        line.extend_from_slice(crate::digits::decimal(reset_secs, 1, &mut digits).as_bytes());
        // Taken over as it is (digits and the prefix: a valid value).
        actix_web::http::header::HeaderValue::from_maybe_shared(line.freeze())
            .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static(""))
    }

    /// The limit as configured.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// The Redis side of the limit, for `policy = "redis"`.
    pub fn shared_limit(&self) -> Option<&SharedLimit> {
        self.shared.as_ref()
    }

    /// Draws one request from `key`'s bucket: in Redis for `policy =
    /// "redis"` while it answers, else here. Redis decides alone when it
    /// answers (its bucket counts every replica's requests, this one's
    /// included); the local bucket then starts from full when Redis goes
    /// away, which lets a replica through at most one burst early.
    pub async fn decide(&self, key: &LimitKey) -> Verdict {
        if let Some(shared) = &self.shared {
            if let Some(verdict) = shared.check(key).await {
                return verdict;
            }
        }
        self.check(key)
    }

    /// Draws one request from `key`'s bucket, here.
    pub fn check(&self, key: &LimitKey) -> Verdict {
        match self.gcra.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // The bucket holds `burst + 1`; each missing request is one
                // interval to wait for (rounded up: `reset` never promises
                // a full bucket early).
                let missing = (self.config.burst + 1).saturating_sub(remaining);
                Verdict::Allowed { remaining, reset: self.interval * missing }
            }
            Err(not_until) => {
                Verdict::Limited { retry_after: not_until.wait_time_from(self.gcra.clock().now()) }
            }
        }
    }

    /// Buckets held now.
    pub fn buckets(&self) -> usize {
        self.shards.len()
    }
}

/// The buckets of one limit: each key's theoretical arrival time (TAT), in
/// nanoseconds since the store's start, in [`SHARDS`] maps.
struct Shards {
    maps: Vec<Mutex<HashMap<LimitKey, u64, foldhash::fast::RandomState>>>,
    hasher: foldhash::fast::RandomState,
    /// Most keys a shard holds.
    per_shard: usize,
}

impl Shards {
    fn len(&self) -> usize {
        self.maps.iter().map(|m| m.lock().len()).sum()
    }
}

/// The `StateStore` governor runs its GCRA over (see the module's doc).
struct Buckets<C: Clock> {
    shards: Arc<Shards>,
    clock: C,
    /// Made just before governor's own start, so "now" here is never
    /// earlier than governor's: a bucket is dropped as fresh only once it
    /// truly is (or within the microseconds between the two).
    start: C::Instant,
}

impl<C: Clock> Buckets<C> {
    fn new(clock: C, capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let maps = (0..SHARDS).map(|_| Mutex::new(HashMap::default())).collect();
        let shards = Arc::new(Shards { maps, hasher: Default::default(), per_shard });
        let start = clock.now();
        Buckets { shards, clock, start }
    }

    /// Frees room in a full shard: the buckets already fresh, then (if that
    /// was not a quarter of it) the half nearest to fresh.
    fn make_room(&self, map: &mut HashMap<LimitKey, u64, foldhash::fast::RandomState>) {
        let now = u64::from(self.clock.now().duration_since(self.start));
        map.retain(|_, tat| *tat > now);
        if map.len() * 4 > self.shards.per_shard * 3 {
            let mut tats: Vec<u64> = map.values().copied().collect();
            let middle = tats.len() / 2;
            let (_, &mut threshold, _) = tats.select_nth_unstable(middle);
            map.retain(|_, tat| *tat > threshold);
        }
    }
}

impl<C: Clock> StateStore for Buckets<C> {
    type Key = LimitKey;

    fn measure_and_replace<T, F, E>(&self, key: &LimitKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let index = (self.shards.hasher.hash_one(key) as usize) % SHARDS;
        let mut map = self.shards.maps[index].lock();
        if let Some(tat) = map.get_mut(key) {
            let (outcome, next) = f(Some(Nanos::from(*tat)))?;
            *tat = next.into();
            return Ok(outcome);
        }
        let (outcome, next) = f(None)?;
        if map.len() >= self.shards.per_shard {
            self.make_room(&mut map);
        }
        map.insert(key.clone(), next.into());
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
