//! One back-end service: everything mosaic keeps about it and the call
//! procedure of SPEC.md's "Failure handling, per section".
//!
//! [`Backend`] is the state, shared by every worker through `Arc`: instances
//! and load balancing, breaker, bulkhead, cache, shared calls, default,
//! counters and metric handles. Its supervised actor ([`actor`]) owns it:
//! builds it from the configuration, changes it (instances, forced breaker)
//! and reports on it. Requests use it directly on their own worker, so a
//! call never waits for the actor or hops threads.
//!
//! A section call: fresh cache → breaker → bulkhead → attempts (per-attempt
//! timeout, never past the deadline, retried on another instance for
//! connect/timeout/5xx) → on failure stale, default or `null`.

pub mod actor;
pub mod answer;
pub mod balancer;
pub mod breaker;
pub mod bulkhead;
pub mod cache;
pub mod client;
mod error;
pub mod flight;
mod json_check;
mod stats;

pub use error::FetchError;
pub use stats::{BackendStats, BackendStatus};

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::config::{BackendConfig, InstanceSource};
use crate::discovery::DiscoveryStatus;
use crate::page::{SectionReply, Source};
pub use answer::Fetched;
use balancer::{Balancer, Instance};
use breaker::{Breaker, BreakerPermit};
use bulkhead::{Bulkhead, BulkheadSlot};
use cache::{CacheKey, Lookup, ResponseCache};
use client::Reply;
use flight::{Flights, Role};

/// How one attempt reaches an instance. Production uses [`Network`]; the
/// seam exists so that a benchmark can measure the call procedure (breaker,
/// bulkhead, timers, stats) around an answer that costs nothing.
pub trait Transport: Clone + 'static {
    /// GETs `path` from the instance at `address` once.
    fn get<'a>(
        &'a self,
        address: &'a str,
        path: &'a str,
        headers: &'a [(HeaderName, HeaderValue)],
        max_body: usize,
    ) -> impl std::future::Future<Output = Result<Reply, FetchError>> + 'a;
}

/// The real thing: this worker's pooled HTTP/1.1 connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Network;

impl Transport for Network {
    fn get<'a>(
        &'a self,
        address: &'a str,
        path: &'a str,
        headers: &'a [(HeaderName, HeaderValue)],
        max_body: usize,
    ) -> impl std::future::Future<Output = Result<Reply, FetchError>> + 'a {
        client::get(address, path, headers, max_body)
    }
}

/// A retry is not started with less time than this before the deadline.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(5);

/// What a section asks of its backend.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The rendered service path (and query).
    pub path: String,
    /// Headers to send: the request id and the section's `forward_headers`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The cache key, when the backend caches (see [`Backend::cache_key`]).
    pub cache_key: Option<CacheKey>,
}

/// What the cache says about a section's call.
#[derive(Debug)]
pub enum CacheStep {
    /// Answered from a fresh entry.
    Served(SectionReply),
    /// The call must be made; `stale` is served if it fails.
    Call {
        /// An entry past `ttl` but within `stale_if_error`.
        stale: Option<Arc<cache::CachedResponse>>,
    },
}

/// Permission for a call (step 2 of SPEC.md's failure handling passed):
/// the instances to use, a breaker permit for the first attempt and a
/// bulkhead slot held for the whole call.
#[derive(Debug)]
pub struct Admission<'a> {
    /// The instance list, as it was when the call was admitted.
    pub instances: Arc<Vec<Instance>>,
    /// Permission for the first attempt.
    pub permit: BreakerPermit<'a>,
    /// The call's place in the bulkhead.
    pub slot: BulkheadSlot,
}

/// A breaker permit held past the call that took it, for an outcome known
/// only when a streamed body ends. Dropped unrecorded (the client went
/// away), it records nothing and frees its half-open trial slot.
#[derive(Debug)]
pub struct HeldPermit {
    backend: Arc<Backend>,
    permit: Option<breaker::DetachedPermit>,
}

impl HeldPermit {
    /// Records the outcome.
    pub fn record(mut self, upstream_fault: bool) {
        if let Some(permit) = self.permit.take() {
            self.backend.breaker.record_detached(permit, upstream_fault);
        }
    }
}

impl Drop for HeldPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.backend.breaker.release_detached(permit);
        }
    }
}

/// One backend's shared state.
#[derive(Debug)]
pub struct Backend {
    name: Arc<str>,
    config: Arc<BackendConfig>,
    /// Instances and round-robin.
    pub balancer: Balancer,
    /// Circuit breaker.
    pub breaker: Breaker,
    /// Calls in flight cap.
    pub bulkhead: Arc<Bulkhead>,
    /// Response cache, when configured.
    pub cache: Option<ResponseCache>,
    flights: Arc<Flights>,
    max_body: usize,
    /// Counters and metric handles.
    pub stats: BackendStats,
    /// Where the instances come from and how that is going.
    pub discovery: DiscoveryStatus,
    /// `mosaic_backend_instances{backend}`.
    instances_gauge: metrics::Gauge,
}

impl Backend {
    /// Builds a backend from its configuration. `max_body` bounds response bodies.
    pub fn new(config: Arc<BackendConfig>, max_body: u64) -> Arc<Self> {
        let addresses = match &config.instances {
            InstanceSource::Static(list) => list.clone(),
            // Discovery fills these in; until then there is no instance.
            InstanceSource::Consul { .. } => Vec::new(),
        };
        let instances_gauge =
            metrics::gauge!("mosaic_backend_instances", "backend" => config.name.clone());
        instances_gauge.set(addresses.len() as f64);
        Arc::new(Self {
            name: config.name.as_str().into(),
            balancer: Balancer::new(&addresses),
            breaker: Breaker::new(&config.name, &config.breaker),
            bulkhead: Bulkhead::new(config.max_in_flight),
            cache: config.cache.as_ref().map(ResponseCache::new),
            flights: Arc::new(Flights::new(config.max_in_flight.max(1))),
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            stats: BackendStats::new(&config.name),
            discovery: DiscoveryStatus::new(&config.name, &config.instances),
            instances_gauge,
            config,
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &Arc<BackendConfig> {
        &self.config
    }

    /// Replaces the instance list (calls in flight keep their snapshot).
    /// Only the backend's actor calls this.
    pub fn set_instances(&self, addresses: &[String]) {
        self.balancer.set(addresses);
        self.instances_gauge.set(addresses.len() as f64);
    }

    /// The current instances' `host:port`.
    pub fn addresses(&self) -> Vec<String> {
        self.balancer.snapshot().iter().map(|i| i.address.clone()).collect()
    }

    /// Largest response body accepted.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The cache key of a call: the path and the section's forwarded header
    /// values (pass exactly those), so one user's answer is never served to
    /// another. `None` without a cache.
    ///
    /// The bytes are `path`, then `\nname=value` per header: a rendered path
    /// holds no LF, a name no `=` or LF and a value no LF, so two different
    /// calls never share a key. Values are taken as bytes, never decoded.
    pub fn cache_key(&self, path: &str, headers: &[(HeaderName, HeaderValue)]) -> Option<CacheKey> {
        self.cache.as_ref()?;
        let mut key = Vec::with_capacity(path.len() + 32);
        key.extend_from_slice(path.as_bytes());
        for (name, value) in headers {
            key.push(b'\n');
            key.extend_from_slice(name.as_str().as_bytes());
            key.push(b'=');
            key.extend_from_slice(value.as_bytes());
        }
        Some(key.into())
    }

    /// Step 1 of a section's call, synchronous: a fresh cache entry answers
    /// it at once; otherwise the call goes ahead, with the stale entry (if
    /// any) kept as its fallback. The coordinator runs this before it starts
    /// any future, so a section served from cache costs no task machinery.
    pub fn consult_cache(&self, spec: &CallSpec, started: Instant) -> CacheStep {
        let (Some(cache), Some(key)) = (&self.cache, &spec.cache_key) else {
            return CacheStep::Call { stale: None };
        };
        let stale = match cache.lookup_at(key, started) {
            Lookup::Fresh(entry) => {
                self.stats.cache_hit();
                return CacheStep::Served(SectionReply {
                    source: Source::Cache,
                    status: Some(entry.status),
                    body: Some(entry.body.clone()),
                    error: None,
                    age: Some(started.saturating_duration_since(entry.fetched_at)),
                    elapsed: started.elapsed(),
                });
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        self.stats.cache_miss();
        CacheStep::Call { stale }
    }

    /// The rest of a section's call after [`Backend::consult_cache`] said to
    /// make it: live (shared with concurrent identical calls when cached),
    /// else stale, default or `null`.
    pub async fn fetch_uncached<T: Transport>(
        self: &Arc<Self>,
        spec: CallSpec,
        stale: Option<Arc<cache::CachedResponse>>,
        started: Instant,
        deadline: Instant,
        transport: &T,
    ) -> SectionReply {
        let result = match spec.cache_key.clone() {
            Some(key) if self.cache.is_some() => {
                self.shared_call(key, spec, deadline, transport).await
            }
            _ => self.call_via(&spec.path, &spec.headers, deadline, transport).await,
        };
        match result {
            // A 4xx is an answer: live, no body, no error.
            Ok(fetched) => SectionReply {
                source: Source::Live,
                status: Some(fetched.status),
                body: fetched.is_success().then_some(fetched.body),
                error: None,
                age: None,
                elapsed: started.elapsed(),
            },
            Err(error) => self.fallback(error, stale, started.elapsed()),
        }
    }

    /// What to serve when the call failed or never happened: stale, default or null.
    pub fn fallback(
        &self,
        error: FetchError,
        stale: Option<Arc<cache::CachedResponse>>,
        elapsed: Duration,
    ) -> SectionReply {
        if let Some(entry) = stale {
            return SectionReply {
                source: Source::Stale,
                status: Some(entry.status),
                body: Some(entry.body.clone()),
                error: Some(error),
                age: Some(entry.fetched_at.elapsed()),
                elapsed,
            };
        }
        if let Some(default) = &self.config.default {
            return SectionReply {
                source: Source::Default,
                status: None,
                body: Some(default.clone()),
                error: Some(error),
                age: None,
                elapsed,
            };
        }
        SectionReply::none(error, elapsed)
    }

    /// The fallback for a section whose time ran out, looked up afresh.
    pub fn fallback_for_key(
        &self,
        error: FetchError,
        key: Option<&[u8]>,
        elapsed: Duration,
    ) -> SectionReply {
        let stale = match (&self.cache, key) {
            (Some(cache), Some(key)) => match cache.lookup(key) {
                Lookup::Fresh(e) | Lookup::Stale(e) => Some(e),
                Lookup::Miss => None,
            },
            _ => None,
        };
        self.fallback(error, stale, elapsed)
    }

    async fn shared_call<T: Transport>(
        self: &Arc<Self>,
        key: CacheKey,
        spec: CallSpec,
        deadline: Instant,
        transport: &T,
    ) -> Result<Fetched, FetchError> {
        let slot = match self.flights.join(&key) {
            Role::Follow(slot) => slot,
            Role::Alone => {
                let result = self.call_via(&spec.path, &spec.headers, deadline, transport).await;
                self.store(&key, &result);
                return result;
            }
            Role::Lead(lead) => {
                let slot = lead.subscribe();
                let backend = self.clone();
                let transport = transport.clone();
                // A shared call serves every waiter, not only the request
                // that started it: it gets at least one full attempt even if
                // the leader's deadline is nearer. Each waiter still stops
                // waiting at its own deadline (the coordinator cuts it).
                let deadline = deadline.max(Instant::now() + self.config.timeout);
                // Its own task: the call completes and fills the cache even if
                // this request goes away; the lead publishes to every waiter.
                actix_rt::spawn(async move {
                    let result =
                        backend.call_via(&spec.path, &spec.headers, deadline, &transport).await;
                    backend.store(&key, &result);
                    lead.publish(result);
                });
                slot
            }
        };
        flight::wait(slot).await
    }

    fn store(&self, key: &CacheKey, result: &Result<Fetched, FetchError>) {
        if let (Some(cache), Ok(fetched)) = (&self.cache, result) {
            if fetched.is_success() {
                cache.insert(key.clone(), fetched.status, fetched.body.clone());
            }
        }
    }

    /// The attempts of one idempotent GET over `transport`: breaker,
    /// bulkhead, per-attempt timeout, retries on other instances while the
    /// deadline allows.
    pub async fn call_via<T: Transport>(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        transport: &T,
    ) -> Result<Fetched, FetchError> {
        let Admission { instances, mut permit, slot: _slot } = self.admit()?;
        let mut retries_left = self.retry_budget(&instances, true);
        let mut previous = None;
        loop {
            let Some(index) = self.balancer.pick(&instances, previous) else {
                return Err(FetchError::NoInstances);
            };
            let address = &instances[index].address;
            let result = self.attempt(transport, address, path, headers, deadline).await;
            let fault = matches!(&result, Err(e) if e.is_upstream_fault());
            self.breaker.record(permit, fault);
            let error = match result {
                Ok(fetched) => return Ok(fetched),
                Err(error) => error,
            };
            let time_left = deadline.saturating_duration_since(Instant::now());
            if !error.is_retryable() || time_left < MIN_RETRY_BUDGET {
                return Err(error);
            }
            permit = match self.permit_retry(&mut retries_left) {
                Some(p) => p,
                None => return Err(error),
            };
            previous = Some(index);
        }
    }

    /// Step 2 of the failure handling, shared by sections and proxy routes:
    /// no instance, an open breaker or a full bulkhead refuse the call at
    /// once (counted as rejections, never as failures).
    pub fn admit(&self) -> Result<Admission<'_>, FetchError> {
        let instances = self.balancer.snapshot();
        if instances.is_empty() {
            self.stats.rejected(FetchError::NoInstances);
            return Err(FetchError::NoInstances);
        }
        let Some(permit) = self.breaker.try_acquire() else {
            self.stats.rejected(FetchError::CircuitOpen);
            return Err(FetchError::CircuitOpen);
        };
        let Some(slot) = self.bulkhead.try_enter() else {
            self.stats.rejected(FetchError::Rejected);
            return Err(FetchError::Rejected);
        };
        Ok(Admission { instances, permit, slot })
    }

    /// How many retries a call may make: `retries` for a repeatable request
    /// when there is another instance to go to, else none.
    pub fn retry_budget(&self, instances: &[Instance], repeatable: bool) -> u32 {
        if repeatable && instances.len() > 1 {
            self.config.retries
        } else {
            0
        }
    }

    /// Permission for one more attempt, if the budget and the breaker allow
    /// (every attempt needs a permit; if the last failure opened the breaker,
    /// the caller reports that failure rather than `circuit_open`).
    pub fn permit_retry(&self, retries_left: &mut u32) -> Option<BreakerPermit<'_>> {
        if *retries_left == 0 {
            return None;
        }
        let permit = self.breaker.try_acquire()?;
        *retries_left -= 1;
        self.stats.retry();
        Some(permit)
    }

    /// One attempt, bounded by `timeout` and by the deadline.
    async fn attempt<T: Transport>(
        &self,
        transport: &T,
        address: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        deadline: Instant,
    ) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let timeout_at = started + self.config.timeout;
        let (limit, on_expiry) = if deadline < timeout_at {
            (deadline, FetchError::Deadline)
        } else {
            (timeout_at, FetchError::Timeout)
        };
        let result =
            tokio::time::timeout_at(limit, transport.get(address, path, headers, self.max_body))
                .await
                .unwrap_or(Err(on_expiry))
                .and_then(answer::judge);
        self.stats.attempt(&result, started.elapsed());
        result
    }

    /// Keeps `permit` past this borrow (see [`HeldPermit`]).
    pub fn hold(self: &Arc<Self>, permit: BreakerPermit<'_>) -> HeldPermit {
        HeldPermit { backend: self.clone(), permit: Some(permit.detach()) }
    }

    /// A snapshot for the admin API.
    pub fn status(&self) -> BackendStatus {
        BackendStatus {
            name: self.name.to_string(),
            instances: self.addresses(),
            breaker: self.breaker.effective_state().as_str(),
            breaker_since_unix_ms: self.breaker.since_unix_ms(),
            in_flight: self.bulkhead.in_flight(),
            successes: self.stats.successes(),
            failures: self.stats.failures(),
            rejections: self.stats.rejections(),
            cache_entries: self.cache.as_ref().map_or(0, |c| c.len()),
            discovery: self.discovery.snapshot(),
        }
    }
}
