//! One back-end service: what mosaic keeps about it and the rules every
//! call to it follows.
//!
//! [`Backend`] is the state, shared by every worker through `Arc`: instances
//! and load balancing, breaker, bulkhead, cache, shared calls, default,
//! counters and metric handles. Its fields are private: requests (sections,
//! proxy routes) and the admin API see it through `&Backend`'s read-only
//! methods, and only its supervised actor ([`actor`]) holds the
//! [`BackendControl`] that changes it (instances, discovery state, forced
//! breaker). Requests use it directly on their own worker, so a call never
//! waits for the actor or hops threads.
//!
//! What every call goes through, whoever makes it: [`Backend::admit`] (step
//! 2 of SPEC.md's failure handling: instances, breaker, bulkhead), then the
//! call procedure ([`call`]: attempts, each recorded by [`Backend::record`],
//! retries). A section's call ([`section`]) and a proxied request
//! (`edge::proxy`) are the two carriers of that procedure.

pub mod actor;
pub mod amqp;
pub mod answer;
pub mod balancer;
pub mod breaker;
pub mod bulkhead;
pub mod cache;
pub mod call;
pub mod client;
mod control;
mod error;
pub mod flight;
pub(crate) mod json_check;
pub mod section;
pub mod shared;
mod stats;

pub use answer::Fetched;
pub use control::BackendControl;
pub use error::FetchError;
pub use section::{CacheStep, CallSpec, Network, Transport};
pub use stats::{BackendSeries, BackendStats, BackendStatus};

use std::sync::Arc;
use std::time::Duration;

use crate::config::{BackendConfig, InstanceSource};
use crate::discovery::DiscoveryStatus;
use balancer::{Balancer, Instance};
use breaker::{Breaker, BreakerPermit};
use bulkhead::{Bulkhead, BulkheadSlot};
use cache::ResponseCache;
use flight::Flights;

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

/// How one attempt ended, as the breaker and the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered with this status (a 5xx is a fault).
    Answered(u16),
    /// The attempt failed.
    Failed(FetchError),
}

impl Outcome {
    /// Whether it counts against the breaker: a 5xx or an upstream fault;
    /// a 4xx is an answer, mosaic's own refusals are nobody's fault.
    pub fn is_fault(self) -> bool {
        match self {
            Outcome::Answered(status) => (500..600).contains(&status),
            Outcome::Failed(error) => error.is_upstream_fault(),
        }
    }
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
    /// Records the attempt's outcome, as [`Backend::record`] does.
    pub fn record(mut self, outcome: Outcome, elapsed: Duration) {
        if let Some(permit) = self.permit.take() {
            self.backend.breaker.record_detached(permit, outcome.is_fault());
            self.backend.count(outcome, elapsed);
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

/// One backend's shared state (see the module doc for who may change it).
#[derive(Debug)]
pub struct Backend {
    name: Arc<str>,
    config: Arc<BackendConfig>,
    /// Instances and round-robin.
    balancer: Balancer,
    /// Circuit breaker.
    breaker: Breaker,
    /// Calls in flight cap.
    bulkhead: Arc<Bulkhead>,
    /// Response cache, when configured.
    cache: Option<ResponseCache>,
    flights: Arc<Flights>,
    max_body: usize,
    /// Counters and metric handles.
    stats: BackendStats,
    /// Where the instances come from and how that is going.
    discovery: DiscoveryStatus,
    /// `mosaic_backend_instances{backend}`.
    instances_gauge: metrics::Gauge,
    /// The channel to the broker, for a backend behind it (`amqp = {...}`).
    amqp: Option<Arc<amqp::AmqpLink>>,
    /// The shared cache tier, for a cached backend when `[redis]` is set
    /// (and its cache does not say `shared = false`).
    shared: Option<shared::SharedSlot>,
}

impl Backend {
    /// Builds a backend from its configuration (`max_body` bounds response
    /// bodies) and the handle that changes it, for its actor. `carried`:
    /// the instances to start with when its configuration lists none (a
    /// discovered backend rebuilt by a reload keeps its predecessor's
    /// until its own watch answers). `broker`: the gateway's broker, which
    /// a backend behind it (`amqp = {...}`) publishes through. `tier`: the
    /// shared cache tier (`[redis]`), which a cached backend uses unless
    /// its cache says `shared = false`. `series`: the counters `/metrics`
    /// and the dashboard read (a predecessor's of the same name, so its
    /// counts go on across the reload).
    pub fn new(
        config: Arc<BackendConfig>,
        max_body: u64,
        carried: Option<Vec<String>>,
        broker: Option<&Arc<crate::broker::Broker>>,
        tier: Option<&Arc<crate::shared_cache::SharedTier>>,
        series: Arc<BackendSeries>,
    ) -> (Arc<Self>, BackendControl) {
        let addresses = match &config.instances {
            InstanceSource::Static(list) => list.clone(),
            // Discovery fills these in; until then, what was carried over.
            InstanceSource::Consul { .. } => carried.unwrap_or_default(),
        };
        let instances_gauge =
            metrics::gauge!("mosaic_backend_instances", "backend" => config.name.clone());
        instances_gauge.set(addresses.len() as f64);
        let amqp = match (&config.amqp, broker) {
            (Some(target), Some(broker)) => {
                Some(amqp::AmqpLink::new(&config.name, target.clone(), broker.clone()))
            }
            _ => None,
        };
        let shared = tier
            .filter(|_| config.cache.is_some_and(|cache| cache.shared))
            .map(|tier| shared::SharedSlot::new(tier.clone(), &config.name));
        let backend = Arc::new(Self {
            name: config.name.as_str().into(),
            balancer: Balancer::new(&addresses),
            breaker: Breaker::new(&config.name, &config.breaker),
            bulkhead: Bulkhead::new(config.max_in_flight),
            cache: config.cache.as_ref().map(ResponseCache::new),
            flights: Arc::new(Flights::new(config.max_in_flight.max(1))),
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            stats: BackendStats::new(&config.name, series),
            discovery: DiscoveryStatus::new(&config.name, &config.instances),
            instances_gauge,
            amqp,
            shared,
            config,
        });
        (backend.clone(), BackendControl::new(backend))
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &Arc<BackendConfig> {
        &self.config
    }

    /// The current instances' `host:port`.
    pub fn addresses(&self) -> Vec<String> {
        self.balancer.snapshot().iter().map(|i| i.address.clone()).collect()
    }

    /// Whether it can be called (for `/readyz`): it has at least one
    /// instance, and a backend behind the broker has its channel.
    pub fn has_instances(&self) -> bool {
        !self.balancer.snapshot().is_empty() && self.amqp.as_ref().is_none_or(|l| l.is_open())
    }

    /// Its link to the broker, when it is behind one.
    pub fn amqp(&self) -> Option<&Arc<amqp::AmqpLink>> {
        self.amqp.as_ref()
    }

    /// Largest response body accepted.
    pub fn max_body(&self) -> usize {
        self.max_body
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

    /// Records one attempt: its permit goes back to the breaker with the
    /// outcome (a fault or not), and the counters and latency histogram
    /// take it.
    pub fn record(&self, permit: BreakerPermit<'_>, outcome: Outcome, elapsed: Duration) {
        self.breaker.record(permit, outcome.is_fault());
        self.count(outcome, elapsed);
    }

    fn count(&self, outcome: Outcome, elapsed: Duration) {
        match outcome {
            Outcome::Answered(500..=599) => self.stats.failed(FetchError::Status5xx, elapsed),
            Outcome::Answered(status) => self.stats.answered(status, elapsed),
            Outcome::Failed(error) => self.stats.failed(error, elapsed),
        }
    }

    /// Keeps `permit` past this borrow (see [`HeldPermit`]).
    pub fn hold(self: &Arc<Self>, permit: BreakerPermit<'_>) -> HeldPermit {
        HeldPermit { backend: self.clone(), permit: Some(permit.detach()) }
    }

    /// Whether an operator forced the breaker, and which way.
    pub fn forced_breaker(&self) -> breaker::ForcedMode {
        self.breaker.forced()
    }

    /// The series `/metrics` and the dashboard read.
    pub fn series(&self) -> &Arc<BackendSeries> {
        self.stats.series()
    }

    /// Whether it has a response cache.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
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
