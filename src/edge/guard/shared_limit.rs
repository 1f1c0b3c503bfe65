//! `policy = "redis"`: one GCRA bucket per key in the shared Redis, so a
//! limit holds across every replica (SPEC.md, "Edge security").
//!
//! The whole decision is one Lua script run by Redis (atomic: two replicas
//! drawing from one bucket at once cannot both take its last request), on
//! Redis's own clock (`TIME`), so replicas whose clocks disagree still
//! agree on a bucket. The bucket is the key's theoretical arrival time, in
//! microseconds (a Lua number is a double: nanoseconds since 1970 would not
//! fit its 53 bits), kept with an expiry of the time it takes to refill, so
//! idle keys leave Redis by themselves.
//!
//! Redis down, slow or refusing: [`SharedLimit::check`] says `None` and the
//! caller applies its local limit instead. It asks only while the tier is
//! usable (connected, its breaker closed), and waits at most the tier's
//! `timeout`, so a dead Redis costs a request nothing once the tier's
//! breaker has seen it (three failures).

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::limiter::{LimitKey, Verdict};
use crate::config::RateLimitConfig;
use crate::shared_cache::SharedTier;

/// GCRA on Redis. `KEYS[1]`: the bucket; `ARGV[1]`: the emission interval
/// (µs a request adds); `ARGV[2]`: the tolerance (µs, `burst` intervals).
/// Answers `{1, remaining, reset_us}` or `{0, retry_after_us, 0}`.
/// Written with `string.format('%.0f')`: `tostring` would print a TAT in
/// exponent notation and lose its last digits.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local earliest = tat - tolerance
if now < earliest then
  return {0, earliest - now, 0}
end
local next_tat = tat + emission
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
local remaining = math.floor((now + tolerance - next_tat) / emission)
if remaining < 0 then remaining = 0 end
return {1, remaining, next_tat - now}
";

/// One limit's buckets in Redis.
pub struct SharedLimit {
    tier: Arc<SharedTier>,
    /// `<redis.prefix>rl|<scope>|<requests>/<per µs>/<burst>|`: the scope
    /// keeps routes apart, the settings make a changed limit start afresh
    /// (as a reload does locally).
    key_prefix: Vec<u8>,
    emission_us: u64,
    tolerance_us: u64,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimit")
            .field("key_prefix", &String::from_utf8_lossy(&self.key_prefix))
            .finish_non_exhaustive()
    }
}

impl SharedLimit {
    /// The Redis side of `config`, for the limit named `scope` (a route's
    /// path, a proxy's prefix, `consumer`).
    pub fn new(tier: Arc<SharedTier>, scope: &str, config: &RateLimitConfig) -> Self {
        let per_us = u64::try_from(config.per.as_micros()).unwrap_or(u64::MAX);
        // A limit finer than a microsecond a request is counted at 1 µs.
        let emission_us = (per_us / u64::from(config.requests.max(1))).max(1);
        let key_prefix = format!(
            "{}rl|{scope}|{}/{per_us}/{}|",
            tier.config().prefix,
            config.requests,
            config.burst
        )
        .into_bytes();
        SharedLimit {
            tier,
            key_prefix,
            emission_us,
            tolerance_us: emission_us.saturating_mul(u64::from(config.burst)),
        }
    }

    /// The tier it uses (a reload keeps a limit only on the same tier).
    pub fn tier(&self) -> &Arc<SharedTier> {
        &self.tier
    }

    /// Draws one request from `key`'s bucket in Redis, or `None` when Redis
    /// cannot say now (the caller's local limit decides).
    pub async fn check(&self, key: &LimitKey) -> Option<Verdict> {
        if !self.tier.usable() {
            return None;
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(GCRA).arg(1).arg(self.bucket(key)).arg(self.emission_us).arg(self.tolerance_us);
        let until = Instant::now() + self.tier.config().timeout;
        let answer = self.tier.run(&eval, until).await.ok()?;
        let verdict = verdict(answer);
        if verdict.is_none() {
            self.tier.count(crate::shared_cache::RedisError::Garbage);
        }
        verdict
    }

    fn bucket(&self, key: &LimitKey) -> Vec<u8> {
        let mut bucket = Vec::with_capacity(self.key_prefix.len() + 48);
        bucket.extend_from_slice(&self.key_prefix);
        match key {
            LimitKey::Consumer(name) => {
                bucket.extend_from_slice(b"c:");
                bucket.extend_from_slice(name.as_bytes());
            }
            LimitKey::Subject(subject) => {
                bucket.extend_from_slice(b"s:");
                bucket.extend_from_slice(subject.as_bytes());
            }
            LimitKey::Ip(ip) => {
                bucket.extend_from_slice(b"ip:");
                // Writing to a Vec cannot fail.
                let _ = match ip {
                    IpAddr::V4(v4) => write!(bucket, "{v4}"),
                    IpAddr::V6(v6) => write!(bucket, "{v6}"),
                };
            }
        }
        bucket
    }
}

/// The script's answer as a verdict; `None` for anything else.
fn verdict(answer: Value) -> Option<Verdict> {
    let Value::Array(items) = answer else { return None };
    let [Value::Int(allowed), Value::Int(a), Value::Int(b)] = items.as_slice() else {
        return None;
    };
    let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
    match allowed {
        1 => Some(Verdict::Allowed {
            remaining: u32::try_from(*a).unwrap_or(u32::MAX),
            reset: micros(*b),
        }),
        0 => Some(Verdict::Limited { retry_after: micros(*a) }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_answers_read_as_verdicts() {
        let allowed = Value::Array(vec![Value::Int(1), Value::Int(3), Value::Int(1_500_000)]);
        assert_eq!(
            verdict(allowed),
            Some(Verdict::Allowed { remaining: 3, reset: Duration::from_millis(1500) })
        );
        let limited = Value::Array(vec![Value::Int(0), Value::Int(250_000), Value::Int(0)]);
        assert_eq!(
            verdict(limited),
            Some(Verdict::Limited { retry_after: Duration::from_millis(250) })
        );
        for junk in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![Value::Int(2), Value::Int(0), Value::Int(0)]),
            Value::Array(vec![Value::Int(1), Value::Nil, Value::Int(0)]),
        ] {
            assert_eq!(verdict(junk), None);
        }
    }
}
