//! `[auth]` (consumers and their API keys), each route's and proxy's
//! `auth`/`scopes`/`rate_limit`, and `server.trusted_proxies`, validated
//! (SPEC.md, "Edge security: TLS, consumers, rate limits").
//!
//! Keys are hashed here, once: the validated config keeps SHA-256 digests
//! only, so no key is ever in memory longer than reading the file takes,
//! and none can reach a log or an admin answer by a stray `Debug`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::backend::{is_name, NAME_RULE};
use super::fields::{is_header_token, positive_duration, required};
use super::jwt::RawJwt;
use super::model::{
    AccessConfig, AuthConfig, AuthKind, ConsumerConfig, LimitBy, LimitPolicy, RateLimitConfig,
    TrustedNet,
};
use super::raw::{deserialize_unit, RawAuth, RawConsumer, RawRateLimit};
use super::routes::array_of_tables;
use super::sink::{index_path, key_path, Sink};

/// Default `auth.key_header`.
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";

/// Shortest API key: a key is a password every request carries, and one
/// short enough to guess is not a credential.
const MIN_KEY_LEN: usize = 16;

/// Longest `per`: a limit counted over more than a day is a quota, which
/// GCRA buckets held in memory are not meant for.
const MAX_PER: Duration = Duration::from_secs(86_400);

/// Largest `burst`: more is a typo (and keeps `(burst + 1) * per / requests`
/// far from overflowing nanoseconds).
const MAX_BURST: i64 = 1_000_000;

/// Largest `requests`.
const MAX_REQUESTS: i64 = 1_000_000_000;

/// Request headers that cannot carry an API key: they frame or route the
/// request, or are rewritten on the way.
const NOT_A_KEY_HEADER: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "x-consumer",
];

/// What routes and proxies need to know of `[auth]` and `[redis]` to check
/// their own keys.
pub(crate) struct AccessContext {
    /// `[auth]` is valid and has consumers.
    pub has_consumers: bool,
    /// `[auth.jwt]` is valid.
    pub has_jwt: bool,
    /// `[redis]` was written.
    pub has_redis: bool,
    /// `auth.default`.
    pub default: AuthKind,
}

/// `[auth]`.
pub(crate) fn auth(raw: RawAuth, has_redis: bool, sink: &mut Sink) -> Option<AuthConfig> {
    let default = match raw.default.as_deref() {
        None => Some(AuthKind::None),
        Some(word) => auth_kind(sink, "auth.default", word),
    };
    let key_header = key_header(sink, raw.key_header);
    let jwt = match raw.jwt {
        None => Some(None),
        Some(mut value) => deserialize_unit::<RawJwt>("auth.jwt", &mut value, sink)
            .and_then(|raw| super::jwt::jwt(raw, key_header.as_deref(), sink))
            .map(|jwt| Some(Arc::new(jwt))),
    };
    let consumers = consumers(raw.consumers, has_redis, sink);
    if let Some(AuthKind::Key | AuthKind::KeyOrJwt) = default {
        if consumers.as_ref().is_some_and(Vec::is_empty) {
            sink.push(
                "auth.default",
                "asks for API keys but there are no [[auth.consumers]] to hold any",
            );
        }
    }
    if let (Some(AuthKind::Jwt | AuthKind::KeyOrJwt), Some(None)) = (default, &jwt) {
        sink.push("auth.default", "asks for JWTs but there is no [auth.jwt] to verify them");
    }
    Some(AuthConfig {
        default: default?,
        key_header: key_header?,
        consumers: consumers?,
        jwt: jwt?,
    })
}

fn auth_kind(sink: &mut Sink, path: &str, word: &str) -> Option<AuthKind> {
    let kind = match word {
        "none" => AuthKind::None,
        "key" => AuthKind::Key,
        "jwt" => AuthKind::Jwt,
        "key_or_jwt" => AuthKind::KeyOrJwt,
        _ => {
            sink.push(
                path,
                format!("unknown auth {word:?} (use \"none\", \"key\", \"jwt\" or \"key_or_jwt\")"),
            );
            return None;
        }
    };
    Some(kind)
}

fn key_header(sink: &mut Sink, raw: Option<String>) -> Option<String> {
    let Some(name) = raw else { return Some(DEFAULT_KEY_HEADER.to_string()) };
    let lower = name.to_ascii_lowercase();
    if !is_header_token(&name) {
        sink.push("auth.key_header", format!("invalid header name {name:?} (e.g. \"x-api-key\")"));
        return None;
    }
    if NOT_A_KEY_HEADER.contains(&lower.as_str()) {
        sink.push(
            "auth.key_header",
            format!("{name:?} cannot carry an API key (it frames, routes or identifies the request): use e.g. \"x-api-key\""),
        );
        return None;
    }
    Some(lower)
}

fn consumers(
    value: Option<toml::Value>,
    has_redis: bool,
    sink: &mut Sink,
) -> Option<Vec<Arc<ConsumerConfig>>> {
    let items = array_of_tables(value, "auth.consumers", sink);
    let mut valid = Vec::with_capacity(items.len());
    let mut names: HashMap<String, String> = HashMap::new();
    // Digest → the path of the key that has it: a key held twice would make
    // a request's consumer depend on file order.
    let mut digests: HashMap<[u8; 32], String> = HashMap::new();
    let mut ok = true;
    for (i, mut value) in items.into_iter().enumerate() {
        let path = index_path("auth.consumers", i);
        let consumer = deserialize_unit::<RawConsumer>(&path, &mut value, sink)
            .and_then(|raw| consumer(&path, raw, has_redis, &mut names, &mut digests, sink));
        match consumer {
            Some(consumer) => valid.push(Arc::new(consumer)),
            None => ok = false,
        }
    }
    ok.then_some(valid)
}

fn consumer(
    path: &str,
    raw: RawConsumer,
    has_redis: bool,
    names: &mut HashMap<String, String>,
    digests: &mut HashMap<[u8; 32], String>,
    sink: &mut Sink,
) -> Option<ConsumerConfig> {
    let name_path = key_path(path, "name");
    let name = required(sink, &name_path, raw.name, "name = \"mobile-app\"").filter(|name| {
        let problem = if !is_name(name) || name.len() > 64 {
            Some(format!("invalid consumer name {name:?}: {NAME_RULE}, at most 64"))
        } else if let Some(other) = names.get(name) {
            Some(format!("duplicate consumer name {name:?} (also {other})"))
        } else {
            names.insert(name.clone(), name_path.clone());
            None
        };
        problem.map(|p| sink.push(&name_path, p)).is_none()
    });
    let mut key_digests = Vec::new();
    let mut ok = true;
    for (i, key) in raw.keys.iter().flatten().enumerate() {
        let key_path_i = index_path(&key_path(path, "keys"), i);
        // The key itself is never quoted in an error.
        let problem = if key.len() < MIN_KEY_LEN {
            Some(format!(
                "too short ({} characters): use at least {MIN_KEY_LEN}, e.g. 32 random hex digits",
                key.len()
            ))
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            Some("only visible ASCII characters (no spaces): it travels in a header".to_string())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                sink.push(key_path_i, problem);
                ok = false;
            }
            None => key_digests.push((key_path_i, Sha256::digest(key.as_bytes()).into())),
        }
    }
    for (i, hex) in raw.key_sha256.iter().flatten().enumerate() {
        let key_path_i = index_path(&key_path(path, "key_sha256"), i);
        match parse_digest(hex) {
            Some(digest) => key_digests.push((key_path_i, digest)),
            None => {
                sink.push(
                    key_path_i,
                    "not a SHA-256 digest: 64 hex digits, e.g. from `printf %s \"$KEY\" | sha256sum`",
                );
                ok = false;
            }
        }
    }
    if ok && key_digests.is_empty() {
        sink.push(
            path,
            "a consumer needs a key: keys = [\"${MOBILE_APP_KEY}\"] or key_sha256 = [\"<hex>\"]",
        );
        ok = false;
    }
    for (at, digest) in &key_digests {
        if let Some(other) = digests.get(digest) {
            sink.push(at, format!("the same key as {other}: each key names one consumer"));
            ok = false;
        } else {
            digests.insert(*digest, at.clone());
        }
    }
    let rate_limit = match raw.rate_limit {
        Some(raw) => {
            rate_limit(sink, &key_path(path, "rate_limit"), raw, has_redis, false).map(Some)
        }
        None => Some(None),
    };
    let name = name?;
    ok.then_some(ConsumerConfig {
        name,
        key_digests: key_digests.into_iter().map(|(_, d)| d).collect(),
        rate_limit: rate_limit?,
    })
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        digest[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

/// A `rate_limit` table at `path`. `by` is a route's choice only
/// (`takes_by`): a consumer's limit is by consumer.
pub(crate) fn rate_limit(
    sink: &mut Sink,
    path: &str,
    raw: RawRateLimit,
    has_redis: bool,
    takes_by: bool,
) -> Option<RateLimitConfig> {
    let requests_path = key_path(path, "requests");
    let requests = required(sink, &requests_path, raw.requests, "requests = 100").and_then(|n| {
        let ok = (1..=MAX_REQUESTS).contains(&n);
        if !ok {
            sink.push(
                &requests_path,
                format!("invalid value {n}: must be between 1 and {MAX_REQUESTS}"),
            );
        }
        ok.then_some(n as u32)
    });
    let per_path = key_path(path, "per");
    let per = required(sink, &per_path, raw.per.as_ref(), "per = \"1s\"")
        .and_then(|v| positive_duration(sink, &per_path, v))
        .filter(|per| {
            let ok = *per <= MAX_PER;
            if !ok {
                sink.push(&per_path, "at most 1 day (\"24h\"), e.g. \"1s\" or \"1m\"");
            }
            ok
        });
    let burst_path = key_path(path, "burst");
    let burst = match raw.burst {
        None => Some(0),
        Some(n) if (0..=MAX_BURST).contains(&n) => Some(n as u32),
        Some(n) => {
            sink.push(&burst_path, format!("invalid value {n}: must be between 0 and {MAX_BURST}"));
            None
        }
    };
    if let (Some(requests), Some(per)) = (requests, per) {
        if per.as_nanos() < u128::from(requests) {
            sink.push(
                &requests_path,
                format!("{requests} per {per:?} is more than one request a nanosecond"),
            );
            return None;
        }
    }
    let by = match (raw.by.as_deref(), takes_by) {
        (None, _) | (Some("consumer"), true) => Some(LimitBy::Consumer),
        (Some("ip"), true) => Some(LimitBy::Ip),
        (Some(_), false) => {
            sink.push(
                key_path(path, "by"),
                "a consumer's limit is always by consumer: put by = \"ip\" on a route's rate_limit",
            );
            None
        }
        (Some(other), true) => {
            sink.push(
                key_path(path, "by"),
                format!("unknown {other:?} (use \"consumer\" or \"ip\")"),
            );
            None
        }
    };
    let policy_path = key_path(path, "policy");
    let policy = match raw.policy.as_deref() {
        None | Some("local") => Some(LimitPolicy::Local),
        Some("redis") if has_redis => Some(LimitPolicy::Redis),
        Some("redis") => {
            sink.push(
                &policy_path,
                "\"redis\" needs a [redis] table (url = \"redis://127.0.0.1:6379/0\")",
            );
            None
        }
        Some(other) => {
            sink.push(
                &policy_path,
                format!("unknown policy {other:?} (use \"local\" or \"redis\")"),
            );
            None
        }
    };
    Some(RateLimitConfig {
        requests: requests?,
        per: per?,
        burst: burst?,
        by: by?,
        policy: policy?,
    })
}

/// A route's or proxy's `auth`, `scopes` and `rate_limit`, at `path`.
pub(crate) fn access(
    sink: &mut Sink,
    path: &str,
    auth: Option<String>,
    scopes: Option<Vec<String>>,
    limit: Option<RawRateLimit>,
    context: &AccessContext,
) -> Option<AccessConfig> {
    let auth_path = key_path(path, "auth");
    let kind = match auth.as_deref() {
        None => Some(context.default),
        Some(word) => auth_kind(sink, &auth_path, word),
    };
    let kind = kind.filter(|kind| {
        let problem = if sink.is_poisoned("auth") {
            // [auth] itself was refused: that error is enough.
            None
        } else if kind.takes_key() && !context.has_consumers {
            Some(format!("auth = {:?} needs [[auth.consumers]] with keys", kind.as_str()))
        } else if kind.takes_jwt() && !context.has_jwt {
            Some(format!("auth = {:?} needs [auth.jwt] to verify tokens", kind.as_str()))
        } else {
            None
        };
        problem.map(|p| sink.push(&auth_path, p)).is_none()
    });
    let scopes_path = key_path(path, "scopes");
    let scopes = match scopes {
        None => Some(Vec::new()),
        Some(scopes) if scopes.is_empty() => Some(scopes),
        Some(scopes) => {
            let bad = scopes.iter().position(|s| {
                s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            });
            if let Some(i) = bad {
                sink.push(
                    index_path(&scopes_path, i),
                    "a scope is one word of visible characters, e.g. \"orders:read\"",
                );
                None
            } else if kind.is_some_and(|k| k != AuthKind::Jwt) {
                // An API key carries no scopes: with key_or_jwt a key would
                // walk past them. Refused here rather than answering a key
                // with 403 at run time: the file says what it means.
                sink.push(
                    &scopes_path,
                    "scopes need auth = \"jwt\" (an API key carries no scopes)",
                );
                None
            } else {
                Some(scopes)
            }
        }
    };
    let rate_limit = match limit {
        Some(raw) => {
            rate_limit(sink, &key_path(path, "rate_limit"), raw, context.has_redis, true).map(Some)
        }
        None => Some(None),
    };
    Some(AccessConfig { auth: kind?, scopes: scopes?, rate_limit: rate_limit? })
}

/// `server.trusted_proxies`: addresses (`10.0.0.7`) and blocks (`10.0.0.0/8`,
/// `fd00::/8`).
pub(crate) fn trusted_proxies(
    sink: &mut Sink,
    raw: Option<Vec<String>>,
) -> Option<Vec<TrustedNet>> {
    let mut nets = Vec::new();
    let mut ok = true;
    for (i, text) in raw.unwrap_or_default().iter().enumerate() {
        match parse_net(text) {
            Some(net) => nets.push(net),
            None => {
                sink.push(
                    index_path("server.trusted_proxies", i),
                    format!("invalid address or CIDR block {text:?} (e.g. \"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\")"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(nets)
}

fn parse_net(text: &str) -> Option<TrustedNet> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let network: std::net::IpAddr = address.parse().ok()?;
    let bits = if network.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    (prefix <= bits).then_some(TrustedNet { network, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_nets_hold_their_addresses_only() {
        let net = parse_net("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped");
        let one = parse_net("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let all = parse_net("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6 = parse_net("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "fd00::/129", "x", "10.0.0.0/+8"] {
            assert!(parse_net(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(parse_digest(hex).map(|d| d[0]), Some(0x9f));
        assert!(parse_digest(&hex[1..]).is_none());
        assert!(parse_digest(&hex.replace('9', "g")).is_none());
        assert!(parse_digest(&format!("+{}", &hex[1..])).is_none());
    }
}
