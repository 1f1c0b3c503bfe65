//! The shared cache tier (SPEC.md, "Shared cache (Redis)"): one Redis
//! that every replica reads and writes, behind each cached backend's local
//! cache.
//!
//! [`SharedTier`] owns the gateway's one Redis connection (a multiplexed
//! connection: concurrent commands from every worker are pipelined on one
//! socket), its health and its own breaker:
//! - the connection is made, watched (a `PING` every second) and remade
//!   with the broker's equal-jitter backoff by a task on the control
//!   arbiter, a runtime that outlives the workers (the connection's driver
//!   task lives on the runtime that made it; research notes, redis-rs #295);
//! - every command waits at most `timeout`; a slow Redis is a miss;
//! - a breaker (failsafe, three failures in a row open it for a second)
//!   keeps a failing Redis from costing each page its `timeout`: while it
//!   is open, or while there is no connection, the tier is skipped without
//!   a wait;
//! - writes happen off the response path, in their own tasks, at most
//!   [`MAX_WRITES_IN_FLIGHT`] and [`MAX_WRITE_BYTES_IN_FLIGHT`] at a time
//!   (more are dropped and counted).
//!
//! Metrics: `mosaic_redis_up{redis}` (0/1) and
//! `mosaic_redis_errors_total{redis,kind}` with kind `timeout`,
//! `connection`, `reply` (Redis answered an error), `garbage` (a value
//! that is not a mosaic entry) and `overload` (a write dropped).
//! `GET /admin/redis` shows the same.

pub mod entry;
pub mod key;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::ArbiterHandle;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use failsafe::StateMachine;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::backoff;
use crate::config::RedisConfig;

/// Writes in flight at once; past this a write is dropped (counted as
/// `overload`): a slow Redis must not pile up tasks.
pub const MAX_WRITES_IN_FLIGHT: usize = 256;

/// Bytes of values in flight at once, for the same reason: a few large
/// bodies must not hold hundreds of megabytes while Redis is slow.
pub const MAX_WRITE_BYTES_IN_FLIGHT: usize = 32 << 20;

/// How often a connection is checked with `PING`.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Failures in a row that open the tier's breaker.
const BREAKER_FAILURES: u32 = 3;

/// How long the tier's breaker stays open before a trial.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);

/// A purge's command wait (a `SCAN` step or an `UNLINK` batch): longer than
/// a lookup's, an operator is waiting, not a page.
const PURGE_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest purge of the shared tier, in all.
const PURGE_LIMIT: Duration = Duration::from_secs(30);

/// Keys asked per `SCAN` step.
const SCAN_COUNT: usize = 1000;

type TierBreaker = StateMachine<ConsecutiveFailures<Constant>, ()>;

/// What went wrong with Redis, as `mosaic_redis_errors_total{kind}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisError {
    /// No answer within the timeout.
    Timeout,
    /// No connection, or it failed under the command.
    Connection,
    /// Redis answered with an error (`WRONGTYPE`, `OOM`, ...).
    Reply,
    /// A value that is not a mosaic entry.
    Garbage,
    /// A write dropped: too many in flight.
    Overload,
}

impl RedisError {
    const ALL: [RedisError; 5] = [
        RedisError::Timeout,
        RedisError::Connection,
        RedisError::Reply,
        RedisError::Garbage,
        RedisError::Overload,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisError::Timeout => "timeout",
            RedisError::Connection => "connection",
            RedisError::Reply => "reply",
            RedisError::Garbage => "garbage",
            RedisError::Overload => "overload",
        }
    }
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier's state for `GET /admin/redis`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedisStatus {
    /// `host:port/db`.
    pub address: String,
    /// Connected now.
    pub up: bool,
    /// Whether pages use it now (connected and its breaker closed).
    pub usable: bool,
    /// Key prefix.
    pub prefix: String,
    /// Connections made since start.
    pub connects: u64,
    /// Errors since start, by kind.
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// Writes in flight now.
    pub writes_in_flight: usize,
}

/// What a purge of the shared tier did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Keys deleted.
    pub deleted: u64,
}

/// The gateway's shared cache tier.
pub struct SharedTier {
    config: RedisConfig,
    connection: ArcSwapOption<MultiplexedConnection>,
    breaker: TierBreaker,
    /// Woken when a command saw the connection fail: check it now, not at
    /// the next ping.
    suspect: Arc<Notify>,
    writes_in_flight: AtomicUsize,
    write_bytes_in_flight: AtomicUsize,
    connects: AtomicU64,
    error_counts: [AtomicU64; 5],
    up: metrics::Gauge,
    errors: [metrics::Counter; 5],
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("address", &self.config.address)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// The tier of `config`, connecting (and reconnecting) from a task on
    /// `control`. The task ends when the tier is dropped.
    pub fn start(config: &RedisConfig, control: &ArbiterHandle) -> Arc<Self> {
        let label = config.address.clone();
        let up = metrics::gauge!("mosaic_redis_up", "redis" => label.clone());
        up.set(0.0);
        let errors = RedisError::ALL.map(|kind| {
            metrics::counter!("mosaic_redis_errors_total", "redis" => label.clone(), "kind" => kind.as_str())
        });
        let policy = failsafe::failure_policy::consecutive_failures(
            BREAKER_FAILURES,
            failsafe::backoff::constant(BREAKER_OPEN_FOR),
        );
        let tier = Arc::new(Self {
            config: config.clone(),
            connection: ArcSwapOption::empty(),
            breaker: StateMachine::new(policy, ()),
            suspect: Arc::new(Notify::new()),
            writes_in_flight: AtomicUsize::new(0),
            write_bytes_in_flight: AtomicUsize::new(0),
            connects: AtomicU64::new(0),
            error_counts: Default::default(),
            up,
            errors,
        });
        control.spawn(keep_connected(Arc::downgrade(&tier)));
        tier
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether a connection is open.
    pub fn is_up(&self) -> bool {
        self.connection.load().is_some()
    }

    /// Whether a page should ask it now: connected and its breaker lets
    /// calls through. Two atomic loads: what a page pays when Redis is down.
    pub fn usable(&self) -> bool {
        self.is_up() && self.breaker.is_call_permitted()
    }

    /// Counts an error of `kind`.
    pub fn count(&self, kind: RedisError) {
        let i = kind as usize;
        self.errors[i].increment(1);
        self.error_counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `keys` in one round trip (`MGET`), waiting until `until` at
    /// the latest (and never more than `timeout`). One value per key, in
    /// order; every one `None` when Redis could not answer.
    pub async fn get_many(&self, keys: &[&[u8]], until: Instant) -> Vec<Option<Bytes>> {
        let mut values = vec![None; keys.len()];
        if keys.is_empty() {
            return values;
        }
        let mut mget = redis::cmd("MGET");
        for key in keys {
            mget.arg(*key);
        }
        let until = until.min(Instant::now() + self.config.timeout);
        match self.run(&mget, until).await {
            Ok(Value::Array(items)) if items.len() == keys.len() => {
                for (slot, item) in values.iter_mut().zip(items) {
                    match item {
                        Value::BulkString(bytes) => *slot = Some(Bytes::from(bytes)),
                        Value::Nil => {}
                        // MGET answers strings or nil; anything else is not Redis.
                        _ => self.count(RedisError::Garbage),
                    }
                }
            }
            Ok(_) => self.count(RedisError::Garbage),
            Err(_) => {}
        }
        values
    }

    /// Writes `value` under `key` for `ttl`, in a task of its own: the
    /// caller never waits. Skipped while the tier is not usable; dropped
    /// (and counted) past [`MAX_WRITES_IN_FLIGHT`].
    pub fn put(self: &Arc<Self>, key: Vec<u8>, value: Vec<u8>, ttl: Duration) {
        if !self.usable() {
            return;
        }
        let bytes = key.len() + value.len();
        let writes = self.writes_in_flight.fetch_add(1, Ordering::AcqRel);
        let held = self.write_bytes_in_flight.fetch_add(bytes, Ordering::AcqRel);
        if writes >= MAX_WRITES_IN_FLIGHT || held + bytes > MAX_WRITE_BYTES_IN_FLIGHT {
            self.write_done(bytes);
            self.count(RedisError::Overload);
            return;
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let tier = self.clone();
        actix_rt::spawn(async move {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value).arg("PX").arg(ttl_ms);
            let until = Instant::now() + tier.config.timeout;
            let _ = tier.run(&set, until).await;
            tier.write_done(bytes);
        });
    }

    fn write_done(&self, bytes: usize) {
        self.writes_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.write_bytes_in_flight.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Deletes every key matching `pattern` (`SCAN`, never `KEYS`, then
    /// `UNLINK` per batch), bounded by [`PURGE_LIMIT`]. Runs whatever the
    /// breaker says: an operator asked.
    pub async fn purge(&self, pattern: &[u8]) -> Result<Purged, RedisError> {
        let started = Instant::now();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            if started.elapsed() > PURGE_LIMIT {
                return Err(RedisError::Timeout);
            }
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
            let answer = self.run_unguarded(&scan, Instant::now() + PURGE_COMMAND_TIMEOUT).await?;
            let (next, keys) = scan_step(answer).ok_or(RedisError::Reply)?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                for key in &keys {
                    unlink.arg(key.as_slice());
                }
                let answer =
                    self.run_unguarded(&unlink, Instant::now() + PURGE_COMMAND_TIMEOUT).await?;
                if let Value::Int(n) = answer {
                    deleted += u64::try_from(n).unwrap_or(0);
                }
            }
            if next == 0 {
                return Ok(Purged { deleted });
            }
            cursor = next;
        }
    }

    /// The state for the admin API.
    pub fn status(&self) -> RedisStatus {
        RedisStatus {
            address: self.config.address.clone(),
            up: self.is_up(),
            usable: self.usable(),
            prefix: self.config.prefix.clone(),
            connects: self.connects.load(Ordering::Relaxed),
            errors: RedisError::ALL
                .iter()
                .map(|k| (k.as_str(), self.error_counts[*k as usize].load(Ordering::Relaxed)))
                .collect(),
            writes_in_flight: self.writes_in_flight.load(Ordering::Relaxed),
        }
    }

    /// One command whose outcome feeds the breaker. Callers asked
    /// [`SharedTier::usable`] first (a page when it chose to ask, a write
    /// before it was spawned, a shared rate limit), which is the breaker's
    /// permission.
    pub async fn run(&self, cmd: &Cmd, until: Instant) -> Result<Value, RedisError> {
        let result = self.run_unguarded(cmd, until).await;
        match result {
            // An error reply is Redis answering: not a reason to stop asking.
            Ok(_) | Err(RedisError::Reply) => self.breaker.on_success(),
            Err(_) => self.breaker.on_error(),
        }
        result
    }

    /// One command on the current connection, bounded by `until`; every
    /// error counted.
    async fn run_unguarded(&self, cmd: &Cmd, until: Instant) -> Result<Value, RedisError> {
        let Some(connection) = self.connection.load_full() else {
            self.count(RedisError::Connection);
            return Err(RedisError::Connection);
        };
        let mut connection = MultiplexedConnection::clone(&connection);
        let result = match tokio::time::timeout_at(until, connection.send_packed_command(cmd)).await
        {
            Err(_) => Err(RedisError::Timeout),
            Ok(Ok(Value::ServerError(_))) => Err(RedisError::Reply),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if error.is_io_error() || error.is_connection_dropped() => {
                self.suspect.notify_one();
                Err(RedisError::Connection)
            }
            Ok(Err(_)) => Err(RedisError::Reply),
        };
        if let Err(kind) = result {
            self.count(kind);
        }
        result
    }

    fn set(&self, connection: Option<MultiplexedConnection>) {
        self.up.set(if connection.is_some() { 1.0 } else { 0.0 });
        self.connection.store(connection.map(Arc::new));
    }
}

/// `SCAN`'s answer: the next cursor and the keys of this step.
fn scan_step(answer: Value) -> Option<(u64, Vec<Vec<u8>>)> {
    let Value::Array(mut parts) = answer else { return None };
    if parts.len() != 2 {
        return None;
    }
    let keys = parts.pop()?;
    let cursor = match parts.pop()? {
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok()?,
        _ => return None,
    };
    let Value::Array(keys) = keys else { return None };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    Some((cursor, keys))
}

/// Connects, pings until the connection fails, and again, until the tier
/// is gone.
async fn keep_connected(tier: Weak<SharedTier>) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = tier.upgrade() else { return };
        let config = strong.config.clone();
        drop(strong);
        match connect(&config).await {
            Ok(connection) => {
                let Some(strong) = tier.upgrade() else { return };
                failures = 0;
                strong.connects.fetch_add(1, Ordering::Relaxed);
                strong.set(Some(connection.clone()));
                tracing::info!(redis = %config.address, "Redis connection open");
                drop(strong);
                let reason = until_failed(&tier, connection, &config).await;
                let Some(strong) = tier.upgrade() else { return };
                strong.set(None);
                tracing::warn!(redis = %config.address, %reason, "Redis connection lost; reconnecting");
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(redis = %config.address, %error, failures, "Redis unreachable; retrying");
                }
            }
        }
        tokio::time::sleep(backoff::delay(failures, fastrand::f64())).await;
    }
}

/// One connection attempt, bounded by `connect_timeout` (the handshake's
/// `SELECT` and `AUTH` included).
async fn connect(config: &RedisConfig) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("{:?}", e.kind()))?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        // Each command is bounded by its caller (`timeout_at`).
        .set_response_timeout(None);
    let attempt = client.get_multiplexed_async_connection_with_config(&settings);
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        // The error text may quote the URL (and its password): its kind only.
        Ok(Err(error)) => Err(format!("{:?}: {}", error.kind(), error.detail().unwrap_or(""))),
        Err(_) => Err(format!("no connection within {:?}", config.connect_timeout)),
    }
}

/// Pings the connection every [`PING_EVERY`] (or at once when a command
/// saw it fail) until a ping fails twice in a row or the tier is dropped;
/// says why.
async fn until_failed(
    tier: &Weak<SharedTier>,
    mut connection: MultiplexedConnection,
    config: &RedisConfig,
) -> String {
    let ping_limit = config.connect_timeout.max(config.timeout);
    let Some(suspect) = tier.upgrade().map(|t| t.suspect.clone()) else {
        return "gateway stopped".into();
    };
    let ping = redis::cmd("PING");
    let mut missed = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PING_EVERY) => {}
            _ = suspect.notified() => {}
        }
        if tier.strong_count() == 0 {
            return "gateway stopped".into();
        }
        match tokio::time::timeout(ping_limit, connection.send_packed_command(&ping)).await {
            Ok(Ok(_)) => missed = 0,
            Ok(Err(error)) if error.is_io_error() || error.is_connection_dropped() => {
                return format!("{:?}", error.kind());
            }
            Ok(Err(_)) => missed = 0,
            Err(_) => {
                missed += 1;
                if missed >= 2 {
                    return format!("no PING answer within {ping_limit:?}, twice");
                }
            }
        }
    }
}
