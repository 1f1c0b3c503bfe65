//! What the gateway serves with right now: the validated configuration
//! turned into ready-to-use parts (backends with their actors, compiled
//! routes and proxies, their counters).
//!
//! The edge reads the current [`Runtime`] from an `ArcSwap` once per request,
//! so a reload can swap in a new one without stopping anything.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::{Addr, ArbiterHandle};
use actix_web::http::header::HeaderName;

use crate::backend::actor::BackendActor;
use crate::backend::Backend;
use crate::broker::Broker;
use crate::config::{Config, InstanceSource, ProxyConfig, RouteConfig};
use crate::counters::{ResponseSeries, SourceCounts};
use crate::discovery;
use crate::edge::guard::{self, limiter::Limiter, Gate};
use crate::page::SectionLabel;
use crate::shared_cache::SharedTier;
use crate::template::PathTemplate;

/// A backend and the actor that owns it.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    /// Shared state, used by requests directly.
    pub backend: Arc<Backend>,
    /// The supervised owner.
    pub actor: Addr<BackendActor>,
    /// How many times the actor was restarted.
    pub restarts: Arc<AtomicU64>,
}

/// One section, resolved.
#[derive(Debug)]
pub struct SectionRuntime {
    /// Section name.
    pub name: String,
    /// The backend to ask.
    pub backend: Arc<Backend>,
    /// The service path.
    pub template: PathTemplate,
    /// Request headers to forward.
    pub forward_headers: Vec<HeaderName>,
    /// `mosaic_section_source_total{route,section,source}`.
    pub sources: Arc<SourceCounts>,
}

/// A composed route, resolved.
#[derive(Debug)]
pub struct RouteRuntime {
    /// Its configuration.
    pub config: Arc<RouteConfig>,
    /// Sections in order.
    pub sections: Vec<SectionRuntime>,
    /// Precomputed section keys for the page.
    pub labels: Vec<SectionLabel>,
    /// Its responses, their durations and complete pages (`route` = the
    /// path template): the entry of [`Runtime::responses`].
    pub responses: Arc<ResponseSeries>,
    /// Its `rate_limit`, when set.
    pub limiter: Option<Arc<Limiter>>,
}

/// A proxy route, resolved.
#[derive(Debug)]
pub struct ProxyRuntime {
    /// Its configuration.
    pub config: Arc<ProxyConfig>,
    /// The backend to forward to.
    pub backend: Arc<Backend>,
    /// Its responses and their durations (`route` = the prefix): the
    /// entry of [`Runtime::responses`].
    pub responses: Arc<ResponseSeries>,
    /// Its `rate_limit`, when set.
    pub limiter: Option<Arc<Limiter>>,
}

/// Everything the edge needs, for one configuration.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Backends by name.
    pub backends: BTreeMap<String, BackendHandle>,
    /// Composed routes, in file order.
    pub routes: Vec<RouteRuntime>,
    /// Proxy routes, longest prefix first.
    pub proxies: Vec<ProxyRuntime>,
    /// Responses by route label: every composed route's path, every
    /// proxy's prefix, and `unmatched`. One entry per label, so two routes
    /// with the same label count into one series, as Prometheus wants.
    pub responses: BTreeMap<String, Arc<ResponseSeries>>,
    /// `route="unmatched"`: requests no route took.
    pub unmatched: Arc<ResponseSeries>,
    /// The broker connection, when `[amqp]` is set (kept across reloads
    /// that leave `[amqp]` as it is).
    pub broker: Option<Arc<Broker>>,
    /// The shared cache tier, when `[redis]` is set (kept across reloads
    /// that leave `[redis]` as it is).
    pub shared_tier: Option<Arc<SharedTier>>,
    /// API keys, consumers and limits; `None` when the file asks nothing
    /// of callers (then no request pays for it).
    pub gate: Option<Arc<Gate>>,
}

impl Runtime {
    /// Builds the runtime, starting one supervised actor per backend on `control`.
    /// Backends in `reuse` whose configuration is unchanged are kept as they
    /// are (breaker state, cache, counters): that is what a reload needs.
    pub fn build(config: Arc<Config>, control: &ArbiterHandle, reuse: Option<&Runtime>) -> Self {
        let mut backends = BTreeMap::new();
        // A Consul backend is kept only if the agent settings are unchanged
        // too, and an AMQP backend only if the broker is.
        let same_consul = reuse.is_some_and(|old| old.config.consul == config.consul);
        let kept_broker =
            reuse.filter(|old| old.config.amqp == config.amqp).and_then(|old| old.broker.clone());
        let same_broker = kept_broker.is_some();
        let kept_tier = reuse
            .filter(|old| old.config.redis == config.redis)
            .and_then(|old| old.shared_tier.clone());
        // `[redis]` as it was (set or not): a cached backend keeps its tier.
        let same_tier = reuse.is_some_and(|old| old.config.redis == config.redis);
        let tier = kept_tier
            .or_else(|| config.redis.as_ref().map(|redis| SharedTier::start(redis, control)));
        let broker =
            kept_broker.or_else(|| config.amqp.as_ref().map(|amqp| Broker::start(amqp, control)));
        for (name, backend_config) in &config.backends {
            let kept = reuse.and_then(|old| old.backends.get(name)).filter(|old| {
                old.backend.config() == backend_config
                    && old.backend.max_body() as u64 == config.server.max_body
                    && (same_consul
                        || matches!(backend_config.instances, InstanceSource::Static(_)))
                    && (same_broker || backend_config.amqp.is_none())
                    // A cached backend holds the tier it was built with.
                    && (same_tier || backend_config.cache.is_none())
            });
            let handle = match kept {
                Some(old) => old.clone(),
                None => {
                    // A rebuilt Consul backend starts from the instances its
                    // predecessor knew for the same service, until its own
                    // watch answers: a reload never leaves it without any.
                    let carried = reuse
                        .and_then(|old| old.backends.get(name))
                        .filter(|old| {
                            matches!(backend_config.instances, InstanceSource::Consul { .. })
                                && old.backend.config().instances == backend_config.instances
                        })
                        .map(|old| old.backend.addresses());
                    // Its counters go on from its predecessor's, if any.
                    let series = reuse
                        .and_then(|old| old.backends.get(name))
                        .map(|old| old.backend.series().clone())
                        .unwrap_or_default();
                    let (backend, backend_control) = Backend::new(
                        backend_config.clone(),
                        config.server.max_body,
                        carried,
                        broker.as_ref(),
                        tier.as_ref(),
                        series,
                    );
                    let restarts = Arc::new(AtomicU64::new(0));
                    let watch = discovery::watch_factory(backend_config, config.consul.as_ref());
                    let actor = BackendActor::start_watched(
                        backend_control,
                        restarts.clone(),
                        control,
                        watch,
                    );
                    BackendHandle { backend, actor, restarts }
                }
            };
            backends.insert(name.clone(), handle);
        }
        let previous_route =
            |path: &str| reuse.and_then(|old| old.routes.iter().find(|r| r.config.path == path));
        // Counters by label, carried over from the runtime before: a route
        // that survives a reload keeps counting where it was.
        let mut responses: BTreeMap<String, Arc<ResponseSeries>> = BTreeMap::new();
        let mut series_for = |label: &str| {
            responses
                .entry(label.to_string())
                .or_insert_with(|| {
                    reuse.and_then(|old| old.responses.get(label).cloned()).unwrap_or_default()
                })
                .clone()
        };
        let routes: Vec<RouteRuntime> = config
            .routes
            .iter()
            .filter_map(|route| {
                let previous = previous_route(&route.path);
                let mut built = build_route(route, &backends, series_for(&route.path), previous)?;
                built.limiter = guard::route_limiter(
                    route.access.rate_limit,
                    previous_route(&route.path).and_then(|old| old.limiter.as_ref()),
                    &route.path,
                    tier.as_ref(),
                );
                Some(built)
            })
            .collect();
        let mut proxies: Vec<ProxyRuntime> = config
            .proxies
            .iter()
            .filter_map(|proxy| {
                let backend = backends.get(&proxy.backend)?.backend.clone();
                let previous = reuse
                    .and_then(|old| old.proxies.iter().find(|p| p.config.prefix == proxy.prefix));
                Some(ProxyRuntime {
                    limiter: guard::route_limiter(
                        proxy.access.rate_limit,
                        previous.and_then(|old| old.limiter.as_ref()),
                        &proxy.prefix,
                        tier.as_ref(),
                    ),
                    config: proxy.clone(),
                    backend,
                    responses: series_for(&proxy.prefix),
                })
            })
            .collect();
        proxies.sort_by_key(|p| std::cmp::Reverse(p.config.prefix.len()));
        let unmatched = series_for("unmatched");
        let previous_gate = reuse.and_then(|old| old.gate.as_deref());
        let gate = Gate::build(&config, previous_gate, control, tier.as_ref()).map(Arc::new);
        Self {
            config,
            backends,
            routes,
            proxies,
            responses,
            unmatched,
            broker,
            shared_tier: tier,
            gate,
        }
    }

    /// Whether every backend can be called: each has at least one instance,
    /// and the broker, when configured, is connected.
    pub fn ready(&self) -> bool {
        self.broker.as_ref().is_none_or(|b| b.is_up())
            && self.backends.values().all(|h| h.backend.has_instances())
    }
}

/// `responses`: the route's counters; `previous`: the route of the same
/// path before a reload, whose sections' counters go on.
fn build_route(
    route: &Arc<RouteConfig>,
    backends: &BTreeMap<String, BackendHandle>,
    responses: Arc<ResponseSeries>,
    previous: Option<&RouteRuntime>,
) -> Option<RouteRuntime> {
    let mut sections = Vec::with_capacity(route.sections.len());
    for section in &route.sections {
        // Validation guarantees the backend exists.
        let backend = backends.get(&section.backend)?.backend.clone();
        let forward_headers = section
            .forward_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let sources = previous
            .and_then(|old| old.sections.iter().find(|s| s.name == section.name))
            .map(|old| old.sources.clone())
            .unwrap_or_default();
        sections.push(SectionRuntime {
            name: section.name.clone(),
            backend,
            template: section.template.clone(),
            forward_headers,
            sources,
        });
    }
    let labels = route.sections.iter().map(|s| SectionLabel::new(&s.name, s.required)).collect();
    Some(RouteRuntime { config: route.clone(), sections, labels, responses, limiter: None })
}
