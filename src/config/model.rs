//! The validated configuration: what the rest of mosaic reads.
//!
//! Every value here has been checked (see `validate.rs`): durations are
//! positive, sizes parsed, backend references resolved, route templates
//! compiled. Nothing downstream re-validates. `[defaults]` has already been
//! merged into each backend.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::template::{PathTemplate, RouteTemplate};

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `admin.listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default `server.max_body`: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// Default `server.client_timeout`: time a client has to send its request headers.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `server.body_timeout`: time a client has to send a whole request
/// body (an upload of `max_body` at about 35 KB/s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `server.keep_alive`: how long an idle client connection is kept
/// open (nginx's `keepalive_timeout` default).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(75);
/// Default `server.shutdown_grace`: how long in-flight requests may run after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default per-attempt `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default bulkhead size (`max_in_flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// Default `retries` for idempotent calls.
pub const DEFAULT_RETRIES: u32 = 1;
/// Default breaker threshold for `consecutive_failures`.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
/// Default `half_open_calls`.
pub const DEFAULT_HALF_OPEN_CALLS: u32 = 1;
/// Default `breaker.backoff`: exponential from 1 s, capped at 30 s.
pub const DEFAULT_BACKOFF: Backoff =
    Backoff::Exponential { start: Duration::from_secs(1), max: Duration::from_secs(30) };
/// Default cache capacity, in entries, per backend.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 10_000;
/// Default `amqp.connect_timeout`.
pub const DEFAULT_AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `redis.timeout`: per command; a slower Redis is a miss.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(25);
/// Default `redis.connect_timeout`.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `redis.prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "mosaic:";
/// Default Consul blocking-query `wait`.
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(30);

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: the public listener.
    pub server: ServerConfig,
    /// `[admin]`: the operator listener.
    pub admin: AdminConfig,
    /// `[discovery.consul]`, when present.
    pub consul: Option<ConsulConfig>,
    /// `[amqp]`: the broker, when present.
    pub amqp: Option<AmqpConfig>,
    /// `[redis]`: the shared cache tier, when present.
    pub redis: Option<RedisConfig>,
    /// `[auth]`: API keys and consumers, when present.
    pub auth: Option<AuthConfig>,
    /// `[backends.NAME]`, defaults merged in, by name (sorted).
    pub backends: BTreeMap<String, Arc<BackendConfig>>,
    /// `[[routes]]`, composed pages, in file order.
    pub routes: Vec<Arc<RouteConfig>>,
    /// `[[proxy]]`, plain proxy routes, in file order.
    pub proxies: Vec<Arc<ProxyConfig>>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// actix-web workers; `0` in the file means one per core, resolved here to a number ≥ 1.
    pub workers: usize,
    /// Largest request body (proxy) and service response body accepted, in bytes.
    pub max_body: u64,
    /// A client must send its full request headers within this time.
    pub client_timeout: Duration,
    /// A client must send a whole request body within this time of its
    /// request's arrival (and never go silent for `client_timeout` while it
    /// does).
    pub body_timeout: Duration,
    /// An idle client connection is closed after this long.
    pub keep_alive: Duration,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_grace: Duration,
    /// Bind the listeners with `SO_REUSEPORT`, so that a new process can
    /// listen on the same addresses while this one drains (rolling restarts).
    pub reuse_port: bool,
    /// `trusted_proxies`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<TrustedNet>,
    /// `[server.tls]`: HTTPS (HTTP/1.1 and h2) on `listen` when set.
    pub tls: Option<super::TlsConfig>,
}

/// `[admin]`.
#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// Address of the admin listener (metrics, health, admin API).
    pub listen: SocketAddr,
    /// Bearer token for `/admin/*`; `None` when unset or empty. Required
    /// when `listen` is beyond loopback. Never shown (see `Debug`).
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[discovery.consul]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulConfig {
    /// Base URL of the agent, e.g. `http://127.0.0.1:8500`.
    pub address: String,
    /// ACL token sent as `X-Consul-Token`; `None` when unset or empty.
    pub token: Option<String>,
    /// `dc` query parameter, when set.
    pub datacenter: Option<String>,
    /// Blocking-query wait (at most 10 minutes).
    pub wait: Duration,
}

/// `[amqp]`: the RabbitMQ broker AMQP backends reach.
#[derive(Clone, PartialEq)]
pub struct AmqpConfig {
    /// `url`, credentials included (never logged: see `Debug`).
    pub url: String,
    /// `host:port/vhost`, without credentials: what the admin API and
    /// logs show.
    pub broker: String,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("broker", &self.broker)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// `[redis]`: the cache tier every replica shares (SPEC.md, "Shared cache
/// (Redis)").
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `url`, credentials included (never logged: see `Debug`).
    pub url: String,
    /// `host:port/db`, without credentials: what the admin API, metrics and
    /// logs show.
    pub address: String,
    /// Longest wait for one command; a slower answer is a miss.
    pub timeout: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// Put in front of every key mosaic writes.
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A backend's `amqp = { ... }`: where its calls are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpTarget {
    /// The exchange; `""` is the default exchange.
    pub exchange: String,
    /// The routing key (the queue's name on the default exchange).
    pub routing_key: String,
    /// Request/reply (`true`) or one-way publish with confirms (`false`,
    /// proxy routes only).
    pub reply: bool,
}

/// Where a backend's instances come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceSource {
    /// `instances = ["host:port", ...]`: a fixed list.
    Static(Vec<String>),
    /// `consul = { service, tag }`: followed through Consul.
    Consul {
        /// Consul service name.
        service: String,
        /// Only instances carrying this tag, when set.
        tag: Option<String>,
    },
}

/// One backend service, `[defaults]` merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// The name under `[backends.NAME]`.
    pub name: String,
    /// Static list or Consul service.
    pub instances: InstanceSource,
    /// Per-attempt timeout (headers and body).
    pub timeout: Duration,
    /// Bulkhead: calls in flight above this are rejected at once.
    pub max_in_flight: usize,
    /// Retries of idempotent calls, each on another instance.
    pub retries: u32,
    /// Circuit breaker policy.
    pub breaker: BreakerConfig,
    /// Response cache, when configured.
    pub cache: Option<CacheConfig>,
    /// Default response (already serialised as JSON), when configured.
    pub default: Option<Bytes>,
    /// Reached through the broker (`[amqp]`) instead of HTTP; its one
    /// instance is then the broker's `host:port/vhost`.
    pub amqp: Option<AmqpTarget>,
}

#[cfg(test)]
impl BackendConfig {
    /// A backend for unit tests: 300 ms timeout, 16 in flight, no retries,
    /// a breaker that opens only after 100 failures in a row, no cache, no
    /// default.
    pub(crate) fn for_tests(name: &str, instances: InstanceSource) -> Self {
        BackendConfig {
            name: name.into(),
            instances,
            timeout: Duration::from_millis(300),
            max_in_flight: 16,
            retries: 0,
            breaker: BreakerConfig {
                policy: BreakerPolicy::ConsecutiveFailures { threshold: 100 },
                backoff: Backoff::Constant { delay: Duration::from_secs(1) },
                half_open_calls: 1,
            },
            cache: None,
            default: None,
            amqp: None,
        }
    }
}

/// `breaker = { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// How failures are counted.
    pub policy: BreakerPolicy,
    /// How long the breaker stays open, per successive opening.
    pub backoff: Backoff,
    /// Trial calls let through at a time once the backoff ends.
    pub half_open_calls: u32,
}

/// `breaker.policy` and its knobs.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerPolicy {
    /// Open after `threshold` failures in a row.
    ConsecutiveFailures {
        /// Failures in a row that open the breaker.
        threshold: u32,
    },
    /// Open when the success rate over `window` drops below `required_success_rate`.
    SuccessRate {
        /// Between 0 and 1.
        required_success_rate: f64,
        /// Calls needed in the window before the rate counts.
        minimum_calls: u32,
        /// The window (whole seconds, at least 1 s: failsafe truncates it).
        window: Duration,
    },
}

/// `breaker.backoff`: the open interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// Always `delay`.
    Constant {
        /// The open interval.
        delay: Duration,
    },
    /// `start`, doubling up to `max`.
    Exponential {
        /// First open interval.
        start: Duration,
        /// Cap.
        max: Duration,
    },
    /// Exponential, half of it randomised.
    EqualJittered {
        /// First open interval.
        start: Duration,
        /// Cap.
        max: Duration,
    },
    /// Exponential, all of it randomised.
    FullJittered {
        /// First open interval.
        start: Duration,
        /// Cap.
        max: Duration,
    },
}

/// `cache = { ttl, stale_if_error, max_entries, shared }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// Fresh for this long after it was fetched.
    pub ttl: Duration,
    /// Then servable on error for this long.
    pub stale_if_error: Duration,
    /// Bound on the number of entries.
    pub max_entries: u64,
    /// Also kept in the shared tier when `[redis]` is set (default true).
    pub shared: bool,
}

/// `[[routes]]`: a composed page.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The path template as written, e.g. `/products/{id}` (also the metrics label).
    pub path: String,
    /// Compiled matcher for the path.
    pub template: RouteTemplate,
    /// The page is answered no later than this after the request arrived.
    pub deadline: Duration,
    /// Sections in file order.
    pub sections: Vec<SectionConfig>,
    /// Who may ask for it, and how often.
    pub access: AccessConfig,
    /// Whether `Accept: text/event-stream` gets the page as a stream of
    /// events (`stream`, default true); when false it gets the JSON page.
    pub stream: bool,
}

/// One section of a composed page.
#[derive(Debug, Clone)]
pub struct SectionConfig {
    /// Member name in the page.
    pub name: String,
    /// Backend name (exists in `Config::backends`).
    pub backend: String,
    /// The service path as written, e.g. `/orders?product={id}`.
    pub path: String,
    /// Compiled service path; its parameters index into the route's parameters.
    pub template: PathTemplate,
    /// A required section that fails with nothing to serve fails the page.
    pub required: bool,
    /// Request headers passed to the service (lowercase names); part of the cache key.
    pub forward_headers: Vec<String>,
}

/// `[[proxy]]`: plain request routing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Path prefix, matched at a segment boundary.
    pub prefix: String,
    /// Backend name (exists in `Config::backends`).
    pub backend: String,
    /// Replaces the prefix; `None` keeps the path as it is.
    pub rewrite: Option<String>,
    /// Who may call it, and how often.
    pub access: AccessConfig,
}

/// `[auth]`: who may call which route (SPEC.md, "Edge security").
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The `auth` of a route or proxy that does not say.
    pub default: AuthKind,
    /// The request header an API key is read from (lowercase); never the
    /// query string, which ends up in logs.
    pub key_header: String,
    /// `[[auth.consumers]]`, in file order.
    pub consumers: Vec<Arc<ConsumerConfig>>,
    /// `[auth.jwt]`: how bearer tokens are verified.
    pub jwt: Option<Arc<super::jwt::JwtConfig>>,
}

/// A route's `auth`: which credential it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// Anyone (identity headers are still cleaned).
    None,
    /// An API key of a consumer.
    Key,
    /// A bearer JWT.
    Jwt,
    /// Either.
    KeyOrJwt,
}

impl AuthKind {
    /// The word used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::Key => "key",
            AuthKind::Jwt => "jwt",
            AuthKind::KeyOrJwt => "key_or_jwt",
        }
    }

    /// Whether an API key is accepted.
    pub fn takes_key(self) -> bool {
        matches!(self, AuthKind::Key | AuthKind::KeyOrJwt)
    }

    /// Whether a bearer JWT is accepted.
    pub fn takes_jwt(self) -> bool {
        matches!(self, AuthKind::Jwt | AuthKind::KeyOrJwt)
    }
}

/// One `[[auth.consumers]]`: a calling application.
#[derive(Clone, PartialEq)]
pub struct ConsumerConfig {
    /// Its name: the `x-consumer` services see and the access log's `consumer`.
    pub name: String,
    /// SHA-256 of each of its keys (`keys` are hashed when the file is
    /// read, `key_sha256` are taken as written): the keys themselves are
    /// not kept. Never shown (see `Debug`).
    pub key_digests: Vec<[u8; 32]>,
    /// Its own limit, across every route it calls.
    pub rate_limit: Option<RateLimitConfig>,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("name", &self.name)
            .field("keys", &self.key_digests.len())
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// `rate_limit = { requests, per, burst, by, policy }`: GCRA, `requests`
/// per `per` sustained and `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period `requests` is counted over.
    pub per: Duration,
    /// Requests allowed beyond the steady rate, at once.
    pub burst: u32,
    /// Whose requests share a bucket.
    pub by: LimitBy,
    /// Where the buckets are kept.
    pub policy: LimitPolicy,
}

/// `rate_limit.by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBy {
    /// One bucket per consumer (anonymous callers: per client IP).
    Consumer,
    /// One bucket per client IP.
    Ip,
}

/// `rate_limit.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    /// Per replica, in memory.
    Local,
    /// One limit across replicas, in `[redis]` (local when Redis is down).
    Redis,
}

/// What a route or proxy asks of its callers: `auth`, `scopes`, `rate_limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessConfig {
    /// The credential asked for.
    pub auth: AuthKind,
    /// JWT scopes the caller needs, all of them.
    pub scopes: Vec<String>,
    /// The route's own limit.
    pub rate_limit: Option<RateLimitConfig>,
}

impl AccessConfig {
    /// Open to anyone, unlimited (a file without `[auth]`).
    pub const OPEN: AccessConfig =
        AccessConfig { auth: AuthKind::None, scopes: Vec::new(), rate_limit: None };
}

/// One `server.trusted_proxies` entry: an address block whose
/// `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    /// The block's first address.
    pub network: std::net::IpAddr,
    /// Its prefix length in bits.
    pub prefix: u8,
}

impl TrustedNet {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
