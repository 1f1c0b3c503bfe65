//! The whole pipeline after parsing: top-level tables, `[server]`,
//! `[admin]`, `[discovery]`, then backends, routes and proxies in that
//! order, into a validated [`Config`]. Nothing stops at the first error.

use std::time::Duration;

use super::auth::{trusted_proxies, AccessContext};
use super::backend::backends;
use super::env::expand_table;
use super::error::ConfigErrors;
use super::fields::{at_most, duration_or, int_in, listen, non_empty, positive_size, required};
use super::model::*;
use super::raw::{
    deserialize_unit, unknown_key, RawAdmin, RawAmqp, RawAuth, RawConsul, RawDiscovery, RawRedis,
    RawServer,
};
use super::routes::{proxies, routes, Backends};
use super::sink::{key_path, Sink};

/// The tables a config file may have.
const TOP_LEVEL: &[&str] = &[
    "server",
    "admin",
    "discovery",
    "amqp",
    "redis",
    "auth",
    "defaults",
    "backends",
    "routes",
    "proxy",
];

/// Longest Consul blocking-query wait Consul itself accepts.
const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);

/// Largest `server.workers`: more is a typo, not a machine.
const MAX_WORKERS: i64 = 1024;

/// Smallest `server.client_timeout` honoured precisely by the HTTP server.
const MIN_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Validates parsed TOML, reading `${VAR}` through `env`.
pub(crate) fn validate(
    mut table: toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut sink = Sink::default();
    expand_table(&mut table, "", env, &mut sink);
    for key in table.keys().filter(|k| !TOP_LEVEL.contains(&k.as_str())) {
        sink.push(key_path("", key), unknown_key(key, TOP_LEVEL));
    }
    let server = server(unit(&mut table, "server", &mut sink), &mut sink);
    let admin = admin(unit(&mut table, "admin", &mut sink), &mut sink);
    let discovery: Option<RawDiscovery> = unit(&mut table, "discovery", &mut sink);
    let has_consul = discovery.as_ref().is_some_and(|d| d.consul.is_some());
    let consul = match discovery.and_then(|d| d.consul) {
        Some(raw) => consul(raw, &mut sink).map(Some),
        None => Some(None),
    };
    let amqp = if table.contains_key("amqp") {
        let raw: Option<RawAmqp> = unit(&mut table, "amqp", &mut sink);
        let broker = raw.and_then(|raw| super::amqp::broker(raw, &mut sink));
        if broker.is_none() {
            // Backends that name `amqp` are not reported again.
            sink.poison("amqp");
        }
        broker
    } else {
        None
    };
    // Asked before `[redis]` is taken out of the table below.
    let has_redis = table.contains_key("redis");
    let redis = match has_redis {
        true => {
            let raw: Option<RawRedis> = unit(&mut table, "redis", &mut sink);
            raw.and_then(|raw| super::redis::redis(raw, &mut sink)).map(Some)
        }
        false => Some(None),
    };
    let auth = match table.contains_key("auth") {
        true => {
            let raw: Option<RawAuth> = unit(&mut table, "auth", &mut sink);
            let auth = raw.and_then(|raw| super::auth::auth(raw, has_redis, &mut sink));
            if auth.is_none() {
                // Routes that ask for keys are not reported again.
                sink.poison("auth");
            }
            auth.map(Some)
        }
        false => Some(None),
    };
    let access = AccessContext {
        has_consumers: auth
            .as_ref()
            .is_some_and(|a| a.as_ref().is_some_and(|a| !a.consumers.is_empty())),
        has_jwt: auth.as_ref().is_some_and(|a| a.as_ref().is_some_and(|a| a.jwt.is_some())),
        has_redis,
        default: auth.as_ref().and_then(|a| a.as_ref()).map_or(AuthKind::None, |a| a.default),
    };
    if let (Some(server), Some(admin)) = (&server, &admin) {
        if server.listen == admin.listen && server.listen.port() != 0 {
            sink.push(
                "admin.listen",
                format!("{} is also server.listen: use another port", admin.listen),
            );
        }
    }
    let names: Vec<String> = match table.get("backends") {
        Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let backends = backends(
        table.remove("defaults"),
        table.remove("backends"),
        has_consul,
        amqp.as_ref(),
        &mut sink,
    );
    let known = Backends(&names);
    let routes = routes(table.remove("routes"), &known, &access, &mut sink);
    super::amqp::sections_need_replies(&routes, &backends, &mut sink);
    let proxies = proxies(table.remove("proxy"), &known, &access, &mut sink);
    sink.finish()?;
    match (server, admin, consul, redis, auth) {
        (Some(server), Some(admin), Some(consul), Some(redis), Some(auth)) => {
            Ok(Config { server, admin, consul, amqp, redis, auth, backends, routes, proxies })
        }
        // Every `None` above pushed an error, so this is unreachable; still
        // an error, never a panic.
        _ => Err(ConfigErrors::single("", "internal error: invalid config without a message")),
    }
}

/// Deserializes an optional top-level table; absent means all defaults.
fn unit<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    sink: &mut Sink,
) -> Option<T> {
    match table.remove(key) {
        None => Some(T::default()),
        Some(mut value) => deserialize_unit(key, &mut value, sink),
    }
}

fn server(raw: Option<RawServer>, sink: &mut Sink) -> Option<ServerConfig> {
    let raw = raw?;
    let listen = listen(sink, "server.listen", raw.listen.as_deref(), DEFAULT_LISTEN);
    let workers = int_in::<usize>(sink, "server.workers", raw.workers, (0, MAX_WORKERS), 0)
        .map(|n| if n == 0 { available_cores() } else { n });
    let max_body = match &raw.max_body {
        Some(v) => positive_size(sink, "server.max_body", v),
        None => Some(DEFAULT_MAX_BODY),
    };
    let client_timeout = duration_or(
        sink,
        "server.client_timeout",
        raw.client_timeout.as_ref(),
        DEFAULT_CLIENT_TIMEOUT,
    )
    .filter(|d| {
        // actix-http checks this timeout against a clock it refreshes every
        // 500 ms, so shorter values fire early (even on prompt clients).
        let ok = *d >= MIN_CLIENT_TIMEOUT;
        if !ok {
            sink.push(
                "server.client_timeout",
                "must be at least 1s (shorter values are not honoured precisely), e.g. \"5s\"",
            );
        }
        ok
    });
    let body_timeout =
        duration_or(sink, "server.body_timeout", raw.body_timeout.as_ref(), DEFAULT_BODY_TIMEOUT)
            .filter(|d| {
                let ok = *d >= MIN_CLIENT_TIMEOUT;
                if !ok {
                    sink.push("server.body_timeout", "must be at least 1s, e.g. \"30s\"");
                }
                ok
            });
    let keep_alive =
        duration_or(sink, "server.keep_alive", raw.keep_alive.as_ref(), DEFAULT_KEEP_ALIVE);
    let shutdown_grace = duration_or(
        sink,
        "server.shutdown_grace",
        raw.shutdown_grace.as_ref(),
        DEFAULT_SHUTDOWN_GRACE,
    );
    let trusted_proxies = trusted_proxies(sink, raw.trusted_proxies);
    let tls = match raw.tls {
        None => Some(None),
        Some(tls) => super::tls::tls(tls, sink).map(Some),
    };
    Some(ServerConfig {
        listen: listen?,
        workers: workers?,
        max_body: max_body?,
        client_timeout: client_timeout?,
        body_timeout: body_timeout?,
        keep_alive: keep_alive?,
        shutdown_grace: shutdown_grace?,
        reuse_port: raw.reuse_port.unwrap_or(false),
        trusted_proxies: trusted_proxies?,
        tls: tls?,
    })
}

/// One worker per core; 1 when the platform cannot say.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn admin(raw: Option<RawAdmin>, sink: &mut Sink) -> Option<AdminConfig> {
    let raw = raw?;
    let listen = listen(sink, "admin.listen", raw.listen.as_deref(), DEFAULT_ADMIN_LISTEN);
    let token = non_empty(raw.token);
    // The admin API forces breakers, reloads and purges: reachable beyond
    // this host, it must not be open to whoever can connect.
    if let (Some(addr), None) = (listen, &token) {
        if !addr.ip().is_loopback() {
            sink.push(
                "admin.token",
                format!("required when admin.listen is beyond loopback ({addr}): set token = \"${{MOSAIC_ADMIN_TOKEN}}\" or listen on 127.0.0.1"),
            );
            return None;
        }
    }
    Some(AdminConfig { listen: listen?, token })
}

fn consul(raw: RawConsul, sink: &mut Sink) -> Option<ConsulConfig> {
    let path = "discovery.consul.address";
    let address = required(sink, path, raw.address, "address = \"http://127.0.0.1:8500\"")
        .filter(|address| {
            // The Consul client is awc built without TLS: talk to the local
            // agent over http://, as Consul recommends.
            if address.starts_with("https://") {
                sink.push(
                    path,
                    format!("https is not supported: {address:?} (use the local agent over http://, e.g. \"http://127.0.0.1:8500\")"),
                );
                return false;
            }
            let host =
                address.strip_prefix("http://").map(|rest| rest.split('/').next().unwrap_or_default());
            let ok = host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace));
            if !ok {
                sink.push(
                    path,
                    format!("invalid address {address:?} (use an http:// URL, e.g. \"http://127.0.0.1:8500\")"),
                );
            }
            ok
        })
        .map(|address| address.trim_end_matches('/').to_string());
    let wait_path = "discovery.consul.wait";
    let wait = duration_or(sink, wait_path, raw.wait.as_ref(), DEFAULT_CONSUL_WAIT)
        .filter(|w| {
            if w.is_zero() {
                sink.push(wait_path, "must be more than zero, e.g. \"30s\"");
            }
            !w.is_zero()
        })
        .and_then(|w| at_most(sink, wait_path, w, MAX_CONSUL_WAIT));
    Some(ConsulConfig {
        address: address?,
        token: non_empty(raw.token),
        datacenter: non_empty(raw.datacenter),
        wait: wait?,
    })
}
