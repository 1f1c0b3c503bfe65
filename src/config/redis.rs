//! `[redis]`, the shared cache tier, validated into [`RedisConfig`].
//! SPEC.md, "Shared cache (Redis)".

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};

use super::fields::{duration_or, required};
use super::model::{
    RedisConfig, DEFAULT_REDIS_CONNECT_TIMEOUT, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_TIMEOUT,
};
use super::raw::RawRedis;
use super::sink::Sink;

/// Longest `redis.timeout`: a lookup waits at most this long on every page
/// that misses locally, so more than a second is a typo.
const MAX_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest `redis.prefix`: it is in every key.
const MAX_PREFIX: usize = 128;

/// `[redis]`.
pub(crate) fn redis(raw: RawRedis, sink: &mut Sink) -> Option<RedisConfig> {
    let path = "redis.url";
    let url = required(sink, path, raw.url, "url = \"redis://127.0.0.1:6379/0\"");
    let address = url.as_deref().and_then(|url| match address_of(url) {
        Ok(address) => Some(address),
        Err(why) => {
            // The URL may hold a password: say what is wrong, not what it is.
            sink.push(
                path,
                format!("not a Redis URL ({why}): use redis://[:password@]host:port/db, e.g. \"redis://127.0.0.1:6379/0\""),
            );
            None
        }
    });
    let timeout = bounded(sink, "redis.timeout", raw.timeout.as_ref(), DEFAULT_REDIS_TIMEOUT);
    let connect_timeout = bounded_by(
        sink,
        "redis.connect_timeout",
        raw.connect_timeout.as_ref(),
        DEFAULT_REDIS_CONNECT_TIMEOUT,
        Duration::from_secs(60),
    );
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
    let prefix_ok = if prefix.is_empty() {
        sink.push(
            "redis.prefix",
            "empty: mosaic's keys need a prefix of their own, e.g. \"mosaic:\"",
        );
        false
    } else if prefix.len() > MAX_PREFIX || prefix.chars().any(char::is_control) {
        sink.push("redis.prefix", "at most 128 bytes, no control characters, e.g. \"mosaic:\"");
        false
    } else {
        true
    };
    Some(RedisConfig {
        url: url?,
        address: address?,
        timeout: timeout?,
        connect_timeout: connect_timeout?,
        prefix: prefix_ok.then_some(prefix)?,
    })
}

/// The `[redis]` of a URL and a prefix, the other keys at their defaults
/// (for `mosaic demo --redis URL`); the error says what is wrong without
/// the URL's password.
pub fn from_url(url: &str, prefix: &str) -> Result<RedisConfig, super::ConfigErrors> {
    let mut sink = Sink::default();
    let raw = RawRedis {
        url: Some(url.to_string()),
        prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    let config = redis(raw, &mut sink);
    sink.finish()?;
    config.ok_or_else(|| super::ConfigErrors::single("redis.url", "invalid"))
}

/// `host:port/db` (or the socket path) of a Redis URL, without credentials.
fn address_of(url: &str) -> Result<String, String> {
    if !(url.starts_with("redis://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        return Err("the scheme must be redis:// or unix:// (TLS is not built in)".into());
    }
    let info = url.into_connection_info().map_err(|e| {
        // Its message can quote the URL; keep only the kind.
        format!("{:?}", e.kind())
    })?;
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok(format!("{host}:{port}/{db}")),
        ConnectionAddr::Unix(path) => Ok(format!("{}/{db}", path.display())),
        _ => Err("only plain TCP and Unix sockets are supported".into()),
    }
}

fn bounded(
    sink: &mut Sink,
    path: &str,
    value: Option<&toml::Value>,
    default: Duration,
) -> Option<Duration> {
    bounded_by(sink, path, value, default, MAX_TIMEOUT)
}

/// A duration more than zero and at most `max`.
fn bounded_by(
    sink: &mut Sink,
    path: &str,
    value: Option<&toml::Value>,
    default: Duration,
    max: Duration,
) -> Option<Duration> {
    let d = duration_or(sink, path, value, default)?;
    if d.is_zero() || d > max {
        sink.push(
            path,
            format!("must be more than zero and at most {max:?}, e.g. \"{}\"", example(default)),
        );
        return None;
    }
    Some(d)
}

fn example(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::address_of;

    #[test]
    fn the_address_never_holds_the_password() {
        assert_eq!(address_of("redis://127.0.0.1:6379/0").as_deref(), Ok("127.0.0.1:6379/0"));
        assert_eq!(
            address_of("redis://:s3cret@cache.internal:6380/2").as_deref(),
            Ok("cache.internal:6380/2")
        );
        assert_eq!(address_of("redis://user:s3cret@10.0.0.1/").as_deref(), Ok("10.0.0.1:6379/0"));
        let bad = address_of("redis://:s3cret@host:notaport/0").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert!(address_of("http://127.0.0.1:6379").is_err());
        assert!(address_of("rediss://127.0.0.1:6379").is_err());
    }
}
