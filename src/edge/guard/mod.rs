//! The edge's gate, passed before a route is served: who is calling (an
//! API key or a bearer JWT, see [`jwt`]), whether the route lets them (its
//! `auth` and `scopes`), how often (its and the consumer's `rate_limit`),
//! and what services are told about the caller (`x-consumer` and the
//! `claims_to_headers`, never a copy the client made up).
//!
//! A file without `[auth]` and without any `rate_limit` has no gate at all
//! ([`crate::gateway::runtime::Runtime::gate`] is `None`): nothing here runs
//! on such a gateway's requests.

pub mod client_ip;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod limiter;
pub mod shared_limit;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::config::{AccessConfig, Config, LimitBy, LimitPolicy, RateLimitConfig, TrustedNet};
use crate::edge::client_headers::ClientHeaders;
use crate::shared_cache::SharedTier;
use jwt::{JwtVerifier, TokenRefusal};
use keys::KeyTable;
use limiter::{LimitKey, Limiter, Verdict};
use shared_limit::SharedLimit;

/// `x-consumer`: the caller's consumer name, set by mosaic only.
pub static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
/// `X-Forwarded-For`, read when the peer is a trusted proxy.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `Authorization`, where a bearer token is read.
static AUTHORIZATION: HeaderName = header::AUTHORIZATION;
/// `RateLimit-Policy`.
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A consumer, ready for requests.
#[derive(Debug)]
pub struct Consumer {
    /// Its name (access log, limit key).
    pub name: Arc<str>,
    /// Its name as the `x-consumer` value.
    header: HeaderValue,
    /// Its own limit, across routes.
    limiter: Option<Arc<Limiter>>,
}

/// Everything the gate needs, built once per configuration.
#[derive(Debug)]
pub struct Gate {
    /// `auth.key_header`, when `[auth]` is set.
    key_header: Option<HeaderName>,
    keys: KeyTable,
    consumers: Vec<Consumer>,
    /// `[auth.jwt]`, when set.
    jwt: Option<JwtVerifier>,
    /// Headers services get from mosaic only: whatever the client sent
    /// under these names is dropped.
    reserved: Vec<HeaderName>,
    trusted: Vec<TrustedNet>,
}

/// What the gate let through: the caller, what services are told, and the
/// limit headers for the answer.
#[derive(Debug)]
pub struct Admission<'g> {
    /// The consumer, when the route asked for a key.
    pub consumer: Option<&'g Consumer>,
    /// The caller's name (an API key's consumer, a token's
    /// `consumer_claim`), for the access log.
    pub caller: Option<Arc<str>>,
    /// The identity headers services see.
    pub identity: Identity<'g>,
    /// `RateLimit-Policy` and `RateLimit`, when a limit applies.
    pub limit: Option<LimitHeaders>,
}

/// The identity headers of one request, as services see them.
#[derive(Debug)]
pub struct Identity<'g> {
    /// Names only mosaic sets (a client's copies are never passed on).
    reserved: &'g [HeaderName],
    /// The credentials mosaic checks for this route (the key header,
    /// `Authorization`): not passed on to a proxied service (a section can
    /// still ask for one by name).
    consumed: [Option<&'g HeaderName>; 2],
    /// The values mosaic sets.
    set: Vec<(HeaderName, HeaderValue)>,
    /// The client's address (see [`client_ip`]).
    pub client_ip: Option<IpAddr>,
}

impl Identity<'_> {
    /// Whether a client's header of this name is replaced by mosaic's.
    pub fn is_reserved(&self, name: &HeaderName) -> bool {
        self.reserved.contains(name)
    }

    /// Whether a proxied service is not sent the client's header `name`.
    pub fn withholds(&self, name: &HeaderName) -> bool {
        self.is_reserved(name) || self.consumed.iter().flatten().any(|c| *c == name)
    }

    /// mosaic's values for `name`.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.set.iter().filter(move |(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every header mosaic sets.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.set
    }
}

/// The limit headers of an answer (SPEC.md: on every limited route's answer).
#[derive(Debug, Clone)]
pub struct LimitHeaders {
    policy: HeaderValue,
    state: HeaderValue,
}

impl LimitHeaders {
    /// Adds them to `response`.
    pub fn apply(self, response: &mut HttpResponse) {
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY.clone(), self.policy);
        headers.insert(RATELIMIT.clone(), self.state);
    }
}

impl Gate {
    /// The gate of `config`, or `None` when nothing is asked of callers
    /// (no `[auth]`, no `rate_limit`). Limits of `previous` whose
    /// configuration is unchanged are kept (a reload does not refill
    /// everyone's bucket). A `jwks_url` is fetched from a task on
    /// `control`; `tier` holds the limits of `policy = "redis"`.
    pub fn build(
        config: &Config,
        previous: Option<&Gate>,
        control: &actix_rt::ArbiterHandle,
        tier: Option<&Arc<SharedTier>>,
    ) -> Option<Gate> {
        let limited = config.routes.iter().any(|r| r.access.rate_limit.is_some())
            || config.proxies.iter().any(|p| p.access.rate_limit.is_some());
        if config.auth.is_none() && !limited {
            return None;
        }
        let consumers_config = config.auth.as_ref().map_or(&[][..], |a| &a.consumers[..]);
        let keys = KeyTable::new(consumers_config.iter().map(|c| &c.key_digests[..]));
        let consumers = consumers_config
            .iter()
            .map(|c| {
                let kept = previous
                    .and_then(|p| p.consumers.iter().find(|old| *old.name == *c.name))
                    .and_then(|old| old.limiter.clone());
                Consumer {
                    name: c.name.as_str().into(),
                    // Validation keeps names to letters, digits, '_' and '-'.
                    header: HeaderValue::from_str(&c.name)
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                    limiter: c.rate_limit.map(|limit| keep_or_new(kept, limit, CONSUMERS, tier)),
                }
            })
            .collect();
        let key_header =
            config.auth.as_ref().and_then(|a| HeaderName::from_bytes(a.key_header.as_bytes()).ok());
        let jwt = config
            .auth
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| JwtVerifier::build(jwt, previous.and_then(|p| p.jwt.as_ref()), control));
        let mut reserved =
            if config.auth.is_some() { vec![X_CONSUMER.clone()] } else { Vec::new() };
        // Claim headers are mosaic's on every route, whatever its `auth`:
        // an open route must not pass on a client's own `x-user-id`.
        reserved.extend(jwt.iter().flat_map(JwtVerifier::header_names).cloned());
        Some(Gate {
            key_header,
            keys,
            consumers,
            jwt,
            reserved,
            trusted: config.server.trusted_proxies.clone(),
        })
    }

    /// Checks one request against a route's `access` and `limit`. Waits
    /// only when a token names a key not known yet (at most
    /// [`jwks::ON_DEMAND_WAIT`]) and for a `policy = "redis"` limit (at most
    /// `redis.timeout`).
    pub async fn admit(
        &self,
        req: &HttpRequest,
        client: &ClientHeaders<'_>,
        access: &AccessConfig,
        limit: Option<&Limiter>,
    ) -> Result<Admission<'_>, Refusal> {
        let (caller, consumed) = self.caller(req, access).await?;
        let (consumer, token) = match caller {
            Caller::Anonymous => (None, None),
            Caller::Key(consumer) => (Some(consumer), None),
            Caller::Token(verified) => (None, Some(verified)),
        };
        let subject = token.as_ref().and_then(|t| t.consumer.as_ref()).map(|(name, _)| name);
        let client_ip = req.peer_addr().map(|peer| {
            let lines = req.headers().get_all(&X_FORWARDED_FOR).map(HeaderValue::as_bytes);
            if client.forwarded_for.is_some() {
                client_ip::client_ip(peer.ip(), lines, &self.trusted)
            } else {
                peer.ip()
            }
        });
        let mut binding: Option<(Verdict, &Limiter)> = None;
        let consumer_limit = consumer.and_then(|c| Some((c.limiter.as_deref()?, c)));
        if let Some((limiter, consumer)) = consumer_limit {
            let verdict = limiter.decide(&LimitKey::Consumer(consumer.name.clone())).await;
            binding = tighter(binding, verdict, limiter);
        }
        if let Some(limiter) = limit {
            let key = match (limiter.config().by, consumer, subject) {
                (LimitBy::Consumer, Some(consumer), _) => {
                    Some(LimitKey::Consumer(consumer.name.clone()))
                }
                (LimitBy::Consumer, None, Some(subject)) => {
                    Some(LimitKey::Subject(subject.clone()))
                }
                _ => client_ip.map(LimitKey::ip),
            };
            // Without a peer address (not on TCP) there is no key to limit by.
            if let Some(key) = key {
                binding = tighter(binding, limiter.decide(&key).await, limiter);
            }
        }
        let limit = match binding {
            None => None,
            Some((Verdict::Limited { retry_after }, limiter)) => {
                let retry_after = ceil_secs(retry_after).max(1);
                return Err(Refusal::Limited {
                    config: *limiter.config(),
                    headers: limit_headers(limiter, 0, retry_after),
                    retry_after,
                });
            }
            Some((Verdict::Allowed { remaining, reset }, limiter)) => {
                Some(limit_headers(limiter, remaining, ceil_secs(reset)))
            }
        };
        let (caller, set) = match (consumer, token) {
            (Some(consumer), _) => {
                (Some(consumer.name.clone()), vec![(X_CONSUMER.clone(), consumer.header.clone())])
            }
            (None, Some(token)) => {
                let mut set = token.headers;
                let caller = token.consumer.map(|(name, value)| {
                    set.push((X_CONSUMER.clone(), value));
                    name
                });
                (caller, set)
            }
            (None, None) => (None, Vec::new()),
        };
        let identity = Identity { reserved: &self.reserved, consumed, set, client_ip };
        Ok(Admission { consumer, caller, identity, limit })
    }

    /// Who the request's credential says is calling, and which credential
    /// headers the route reads. On `key_or_jwt` a request that sends a key
    /// is judged by its key, else by its bearer token.
    async fn caller(
        &self,
        req: &HttpRequest,
        access: &AccessConfig,
    ) -> Result<(Caller<'_>, [Option<&HeaderName>; 2]), Refusal> {
        let key_header = self.key_header.as_ref().filter(|_| access.auth.takes_key());
        let jwt = self.jwt.as_ref().filter(|_| access.auth.takes_jwt());
        let consumed = [key_header, jwt.map(|_| &AUTHORIZATION)];
        if let Some(key_header) = key_header {
            if jwt.is_none() || req.headers().contains_key(key_header) {
                return Ok((Caller::Key(self.consumer_of(req, key_header)?), consumed));
            }
        }
        let Some(jwt) = jwt else { return Ok((Caller::Anonymous, consumed)) };
        let Some(token) = jwt::bearer(req.headers()).map_err(Refusal::Token)? else {
            return Err(Refusal::Token(TokenRefusal::Missing { or_key: key_header.cloned() }));
        };
        let verified = jwt.verify(token, &access.scopes).await.map_err(Refusal::Token)?;
        Ok((Caller::Token(verified), consumed))
    }

    /// The consumer whose key the request carries, or the 401 to answer.
    fn consumer_of(
        &self,
        req: &HttpRequest,
        key_header: &HeaderName,
    ) -> Result<&Consumer, Refusal> {
        let mut keys = req.headers().get_all(key_header);
        let Some(key) = keys.next() else {
            return Err(Refusal::Unauthorized {
                challenge: r#"ApiKey realm="mosaic""#,
                detail: format!("an API key is required in {key_header}"),
            });
        };
        if keys.next().is_some() {
            // Two keys: which consumer is this? Neither.
            return Err(Refusal::Unauthorized {
                challenge: r#"ApiKey realm="mosaic", error="invalid_token""#,
                detail: format!("more than one {key_header}"),
            });
        }
        self.keys.find(key.as_bytes()).and_then(|index| self.consumers.get(index)).ok_or_else(
            || Refusal::Unauthorized {
                challenge: r#"ApiKey realm="mosaic", error="invalid_token""#,
                detail: "unknown API key".to_string(),
            },
        )
    }
}

/// Who is calling, by the credential the route took.
enum Caller<'g> {
    /// No credential asked for.
    Anonymous,
    /// An API key's consumer.
    Key(&'g Consumer),
    /// A verified bearer token.
    Token(jwt::Verified),
}

/// Why the gate refused a request.
#[derive(Debug)]
pub enum Refusal {
    /// A bearer token missing, bad, short of scopes, or not checkable yet.
    Token(TokenRefusal),
    /// No credential, or a bad one: 401.
    Unauthorized {
        /// The `WWW-Authenticate` value.
        challenge: &'static str,
        /// What was wrong, for the body.
        detail: String,
    },
    /// Over a limit: 429.
    Limited {
        /// The limit that refused.
        config: RateLimitConfig,
        /// Its `RateLimit-Policy` and `RateLimit` (nothing remaining).
        headers: LimitHeaders,
        /// Whole seconds until a request would pass (at least 1).
        retry_after: u64,
    },
}

impl Refusal {
    /// The answer sent for it.
    pub fn into_response(self) -> HttpResponse {
        match self {
            Refusal::Unauthorized { challenge, detail } => unauthorized(challenge, &detail),
            Refusal::Limited { config, headers, retry_after } => {
                too_many_requests(&config, headers, retry_after)
            }
            Refusal::Token(refusal) => refusal.into_response(),
        }
    }
}

/// The Redis scope of consumers' own limits (routes use their path or prefix,
/// which always starts with `/`).
const CONSUMERS: &str = "consumer";

/// `kept` when it is the same limit on the same tier, else a new one.
fn keep_or_new(
    kept: Option<Arc<Limiter>>,
    limit: RateLimitConfig,
    scope: &str,
    tier: Option<&Arc<SharedTier>>,
) -> Arc<Limiter> {
    let tier = tier.filter(|_| limit.policy == LimitPolicy::Redis);
    let same_tier = |old: &Limiter| match (old.shared_limit(), tier) {
        (None, None) => true,
        (Some(shared), Some(tier)) => Arc::ptr_eq(shared.tier(), tier),
        _ => false,
    };
    kept.filter(|old| *old.config() == limit && same_tier(old)).unwrap_or_else(|| {
        Arc::new(match tier {
            Some(tier) => Limiter::shared(limit, SharedLimit::new(tier.clone(), scope, &limit)),
            None => Limiter::new(limit),
        })
    })
}

/// A route's limiter (`scope`: its path or prefix), kept from `previous`
/// when its configuration is unchanged.
pub fn route_limiter(
    limit: Option<RateLimitConfig>,
    previous: Option<&Arc<Limiter>>,
    scope: &str,
    tier: Option<&Arc<SharedTier>>,
) -> Option<Arc<Limiter>> {
    limit.map(|limit| keep_or_new(previous.cloned(), limit, scope, tier))
}

/// The limit that binds: a refusal over a pass, else the fewer remaining.
fn tighter<'c>(
    current: Option<(Verdict, &'c Limiter)>,
    verdict: Verdict,
    config: &'c Limiter,
) -> Option<(Verdict, &'c Limiter)> {
    let rank = |v: &Verdict| match v {
        Verdict::Limited { .. } => 0,
        Verdict::Allowed { remaining, .. } => u64::from(*remaining) + 1,
    };
    match current {
        Some(current) if rank(&current.0) <= rank(&verdict) => Some(current),
        _ => Some((verdict, config)),
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `per` in seconds as the `w` of `RateLimit-Policy`: whole seconds when
/// it is, else with the fraction (`0.5`).
pub(super) fn window(per: std::time::Duration) -> String {
    if per.subsec_nanos() == 0 {
        per.as_secs().to_string()
    } else {
        let text = format!("{:.3}", per.as_secs_f64());
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `RateLimit-Policy` and `RateLimit` of `limiter` with `remaining`
/// requests left and the bucket whole again in `reset_secs`.
fn limit_headers(limiter: &Limiter, remaining: u32, reset_secs: u64) -> LimitHeaders {
    LimitHeaders {
        policy: limiter.policy_header().clone(),
        state: limiter.state_header(remaining, reset_secs),
    }
}

/// 429; `seconds`: whole seconds until a request would pass (at least 1).
fn too_many_requests(
    config: &RateLimitConfig,
    headers: LimitHeaders,
    seconds: u64,
) -> HttpResponse {
    let mut response = super::error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        Some(&format!("{} requests per {}s", config.requests, window(config.per))),
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    headers.apply(&mut response);
    response
}

fn unauthorized(challenge: &'static str, detail: &str) -> HttpResponse {
    let mut response =
        super::error_response(StatusCode::UNAUTHORIZED, "unauthorized", Some(detail));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_seconds_read_as_the_spec_writes_them() {
        use std::time::Duration;
        assert_eq!(window(Duration::from_secs(1)), "1");
        assert_eq!(window(Duration::from_secs(60)), "60");
        assert_eq!(window(Duration::from_millis(500)), "0.5");
        assert_eq!(window(Duration::from_millis(1250)), "1.25");
        assert_eq!(ceil_secs(Duration::from_millis(10)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
