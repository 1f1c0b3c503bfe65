//! A section's call (SPEC.md, "Failure handling, per section"): fresh cache
//! → breaker → bulkhead → attempts (per-attempt timeout, never past the
//! deadline, retried on another instance for connect/timeout/5xx) → on
//! failure stale, default or `null`; concurrent calls for one cached key
//! share one call.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

use super::amqp::AmqpTransport;
use super::answer::{self, Fetched};
use super::cache::{self, CacheKey, Lookup};
use super::call::{Attempts, Judged};
use super::client::{self, Reply};
use super::flight::{self, Role};
use super::{Admission, Backend, FetchError, Outcome};
use crate::page::{SectionReply, Source, Tier};

/// How one attempt reaches an instance. Production uses [`Network`]; the
/// seam exists so that a benchmark can measure the call procedure (breaker,
/// bulkhead, timers, stats) around an answer that costs nothing.
pub trait Transport: Clone + 'static {
    /// GETs `path` from the instance at `address` once; the caller stops
    /// waiting at `until` (a transport that can tell the service when to
    /// give up, as AMQP's `expiration`, says so).
    fn get<'a>(
        &'a self,
        address: &'a str,
        path: &'a str,
        headers: &'a [(HeaderName, HeaderValue)],
        max_body: usize,
        until: Instant,
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
        _until: Instant,
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
    /// No fresh local entry, and the backend has the shared tier: ask it
    /// (with the other sections of the page, in one round trip) before
    /// calling; then [`Backend::adopt_shared`] says which step follows.
    AskShared {
        /// The local entry past `ttl` but within `stale_if_error`.
        stale: Option<Arc<cache::CachedResponse>>,
    },
}

impl Backend {
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
            Lookup::Fresh(entry) => return CacheStep::Served(self.local_hit(&entry, started)),
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        // Skipped at no cost while Redis is down or its breaker is open.
        if self.shared.as_ref().is_some_and(|slot| slot.tier().usable()) {
            return CacheStep::AskShared { stale };
        }
        self.stats.cache_miss();
        CacheStep::Call { stale }
    }

    /// A section served from a fresh local entry (counted as a hit).
    pub(super) fn local_hit(
        &self,
        entry: &cache::CachedResponse,
        started: Instant,
    ) -> SectionReply {
        self.stats.cache_hit();
        SectionReply {
            source: Source::Cache,
            status: Some(entry.status),
            body: Some(entry.body.clone()),
            error: None,
            age: Some(started.saturating_duration_since(entry.fetched_at)),
            tier: self.shared.as_ref().map(|_| Tier::Local),
            elapsed: started.elapsed(),
        }
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
                tier: None,
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
                tier: self.shared.as_ref().map(|_| entry.tier),
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
                tier: None,
                elapsed,
            };
        }
        SectionReply::none(error, elapsed)
    }

    /// The fallback for a section whose time ran out, looked up afresh in
    /// the local tier; `shared_stale`, a stale entry the shared tier gave,
    /// comes after it.
    pub fn fallback_for_key(
        &self,
        error: FetchError,
        key: Option<&[u8]>,
        shared_stale: Option<Arc<cache::CachedResponse>>,
        elapsed: Duration,
    ) -> SectionReply {
        let stale = match (&self.cache, key) {
            (Some(cache), Some(key)) => match cache.lookup(key) {
                Lookup::Fresh(e) | Lookup::Stale(e) => Some(e),
                Lookup::Miss => None,
            },
            _ => None,
        };
        self.fallback(error, stale.or(shared_stale), elapsed)
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
                self.share(key, fetched.status, &fetched.body);
            }
        }
    }

    /// The attempts of one idempotent GET over `transport` (admission,
    /// then the call procedure of [`call`](super::call)), each bounded by
    /// the backend's timeout and by the deadline.
    pub async fn call_via<T: Transport>(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        transport: &T,
    ) -> Result<Fetched, FetchError> {
        if let Some(link) = &self.amqp {
            // Behind the broker: the same procedure over the AMQP transport
            // (boxed, so an HTTP call's future does not grow by its size).
            let amqp = AmqpTransport(link.clone());
            return Box::pin(self.call_over(path, headers, deadline, &amqp)).await;
        }
        self.call_over(path, headers, deadline, transport).await
    }

    async fn call_over<T: Transport>(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        transport: &T,
    ) -> Result<Fetched, FetchError> {
        let Admission { instances, permit, slot: _slot } = self.admit()?;
        let mut get = SectionGet { backend: self, transport, path, headers, deadline };
        let called = self.call(&instances, permit, &mut get, Instant::now()).await?;
        Ok(called.output)
    }

    /// One attempt, bounded by `timeout` and by the deadline, judged by
    /// SPEC.md's status rules (`answer`).
    /// (An `async fn` that `SectionGet::attempt` calls: written as an async
    /// block there instead, a page measured dearer; BENCHMARKS.md.)
    async fn attempt<T: Transport>(
        &self,
        transport: &T,
        address: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        started: Instant,
    ) -> Result<Fetched, FetchError> {
        let timeout_at = started + self.config.timeout;
        let (limit, on_expiry) = if deadline < timeout_at {
            (deadline, FetchError::Deadline)
        } else {
            (timeout_at, FetchError::Timeout)
        };
        tokio::time::timeout_at(limit, transport.get(address, path, headers, self.max_body, limit))
            .await
            .unwrap_or(Err(on_expiry))
            .and_then(answer::judge)
    }
}

/// A section's GET, attempt by attempt.
struct SectionGet<'a, T> {
    backend: &'a Backend,
    transport: &'a T,
    path: &'a str,
    headers: &'a [(HeaderName, HeaderValue)],
    deadline: Instant,
}

impl<T: Transport> Attempts for SectionGet<'_, T> {
    type Output = Fetched;
    type Error = FetchError;

    fn repeatable(&self) -> bool {
        true
    }

    fn attempt<'s>(
        &'s mut self,
        address: &'s str,
        started: Instant,
    ) -> impl std::future::Future<Output = Result<Fetched, FetchError>> + 's {
        self.backend.attempt(
            self.transport,
            address,
            self.path,
            self.headers,
            self.deadline,
            started,
        )
    }

    fn judge(
        &self,
        result: Result<Fetched, FetchError>,
        started: Instant,
    ) -> Judged<Fetched, FetchError> {
        let elapsed = started.elapsed();
        match result {
            Ok(fetched) => {
                let outcome = Outcome::Answered(fetched.status);
                Judged::Settled(fetched, outcome, elapsed)
            }
            Err(error) => Judged::Fault {
                outcome: Outcome::Failed(error),
                elapsed,
                retryable: error.is_retryable(),
                last: Err(error),
            },
        }
    }

    fn time_for_retry(&self) -> bool {
        self.deadline.saturating_duration_since(Instant::now()) >= MIN_RETRY_BUDGET
    }
}
