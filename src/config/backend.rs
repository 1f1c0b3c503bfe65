//! `[defaults]` and `[backends.NAME]`: instance source, timeout, bulkhead,
//! retries, breaker, cache and default response, validated into
//! [`BackendConfig`].
//!
//! `[defaults]` is validated on its own first (its errors are reported at
//! `defaults.*`), then merged into each backend (see `merge.rs`); an error
//! in an inherited value is mapped back to `defaults.*` and reported once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::breaker::breaker;
use super::fields::{at_least_one, duration_or, int_in, positive_duration, required};
use super::merge::merge_backend;
use super::model::*;
use super::raw::{deserialize_unit, RawBackend, RawCache};
use super::sink::{index_path, is_at_or_below, key_path, Sink};

/// Keys a backend may set that `[defaults]` may not.
const BACKEND_ONLY: &[&str] = &["instances", "consul", "amqp"];

/// Validates `[defaults]` and every `[backends.NAME]`. Returns the valid
/// backends; invalid ones are reported and left out.
pub(crate) fn backends(
    defaults: Option<toml::Value>,
    backends: Option<toml::Value>,
    has_consul: bool,
    broker: Option<&AmqpConfig>,
    sink: &mut Sink,
) -> BTreeMap<String, Arc<BackendConfig>> {
    let defaults = clean_defaults(defaults, sink);
    let mut valid = BTreeMap::new();
    let backends = match backends {
        None => return valid,
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            sink.push_and_poison(
                "backends",
                format!("expected [backends.NAME] tables, found {}", other.type_str()),
            );
            return valid;
        }
    };
    for (name, value) in backends {
        let path = key_path("backends", &name);
        if !is_name(&name) {
            sink.push_and_poison(&path, format!("invalid backend name {name:?}: {NAME_RULE}"));
            continue;
        }
        let toml::Value::Table(table) = value else {
            sink.push_and_poison(&path, format!("expected a table, found {}", value.type_str()));
            continue;
        };
        let merged = merge_backend(&defaults, table);
        let mark = sink.len();
        let mut value = toml::Value::Table(merged.table);
        let backend = deserialize_unit::<RawBackend>(&path, &mut value, sink)
            .and_then(|raw| backend(&name, &path, &raw, has_consul, broker, sink));
        // Report inherited values where they were written: `defaults.timeout`.
        sink.remap_since(mark, |at| {
            let rel = at.strip_prefix(path.as_str())?;
            merged
                .inherited
                .iter()
                .any(|inherited| is_at_or_below(rel, inherited))
                .then(|| format!("defaults{rel}"))
        });
        if let Some(backend) = backend {
            valid.insert(name, Arc::new(backend));
        }
    }
    valid
}

/// What a name of a backend or section may contain.
pub(crate) const NAME_RULE: &str = "use letters, digits, '_' and '-'";

/// True for names made of `[A-Za-z0-9_-]`.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[defaults]` as a table ready to merge: checked on its own, keys with
/// serde errors removed, so each problem is reported once, at `defaults.*`.
fn clean_defaults(defaults: Option<toml::Value>, sink: &mut Sink) -> toml::Table {
    let mut value = match defaults {
        None => return toml::Table::new(),
        Some(value) => value,
    };
    if let Some(table) = value.as_table_mut() {
        for key in BACKEND_ONLY {
            if table.remove(*key).is_some() {
                sink.push_and_poison(
                    key_path("defaults", key),
                    format!("{key} cannot be inherited: each backend names its own, move it into [backends.NAME]"),
                );
            }
        }
    }
    if let Some(raw) = deserialize_unit::<RawBackend>("defaults", &mut value, sink) {
        settings("defaults", &raw, sink);
    }
    match value {
        toml::Value::Table(table) => table,
        _ => toml::Table::new(),
    }
}

fn backend(
    name: &str,
    path: &str,
    raw: &RawBackend,
    has_consul: bool,
    broker: Option<&AmqpConfig>,
    sink: &mut Sink,
) -> Option<BackendConfig> {
    let (instances, amqp) = match &raw.amqp {
        Some(target) => match amqp_source(path, raw, target, broker, sink) {
            Some((instances, target)) => (Some(instances), Some(target)),
            None => (None, None),
        },
        None => (source(path, raw, has_consul, sink), None),
    };
    let settings = settings(path, raw, sink);
    let (timeout, max_in_flight, retries, breaker, cache, default) = settings?;
    Some(BackendConfig {
        name: name.to_string(),
        instances: instances?,
        timeout,
        max_in_flight,
        retries,
        breaker,
        cache,
        default,
        amqp,
    })
}

/// `amqp = { ... }`: the broker is the backend's one instance.
fn amqp_source(
    path: &str,
    raw: &RawBackend,
    target: &super::raw::RawAmqpTarget,
    broker: Option<&AmqpConfig>,
    sink: &mut Sink,
) -> Option<(InstanceSource, AmqpTarget)> {
    let amqp_path = key_path(path, "amqp");
    if raw.instances.is_some() || raw.consul.is_some() {
        sink.push(
            path,
            "set either amqp (a service behind the broker) or instances/consul (an HTTP service), not both",
        );
        return None;
    }
    let target = super::amqp::target(&amqp_path, target, sink)?;
    let Some(broker) = broker else {
        if !sink.is_poisoned("amqp") {
            sink.push(
                &amqp_path,
                "needs an [amqp] section naming the broker (add one with url = \"amqp://guest:guest@127.0.0.1:5672/%2f\")",
            );
        }
        return None;
    };
    Some((InstanceSource::Static(vec![broker.broker.clone()]), target))
}

/// `instances = [...]` XOR `consul = { ... }`.
fn source(
    path: &str,
    raw: &RawBackend,
    has_consul: bool,
    sink: &mut Sink,
) -> Option<InstanceSource> {
    let instances_path = key_path(path, "instances");
    let consul_path = key_path(path, "consul");
    match (&raw.instances, &raw.consul) {
        (Some(_), Some(_)) => {
            sink.push(path, "set either instances or consul, not both");
            None
        }
        (None, None) => {
            if !sink.is_poisoned(&instances_path) && !sink.is_poisoned(&consul_path) {
                sink.push(
                    path,
                    "no instances: set instances = [\"host:port\"] or consul = { service = \"NAME\" }",
                );
            }
            None
        }
        (Some(list), None) => {
            if list.is_empty() {
                sink.push(&instances_path, "empty: list at least one \"host:port\"");
                return None;
            }
            let mut ok = true;
            for (i, instance) in list.iter().enumerate() {
                if let Err(why) = check_instance(instance) {
                    sink.push(
                        index_path(&instances_path, i),
                        format!("invalid instance {instance:?}: {why} (use \"host:port\", e.g. \"127.0.0.1:7001\")"),
                    );
                    ok = false;
                }
            }
            ok.then(|| InstanceSource::Static(list.clone()))
        }
        (None, Some(consul)) => {
            let service_path = key_path(&consul_path, "service");
            let service =
                required(sink, &service_path, consul.service.clone(), "service = \"reviews\"")
                    .filter(|service| {
                        if service.is_empty() {
                            sink.push(&service_path, "empty: name the Consul service");
                        }
                        !service.is_empty()
                    });
            if !has_consul {
                sink.push(
                    &consul_path,
                    "needs a [discovery.consul] section (add one with address = \"http://127.0.0.1:8500\")",
                );
                return None;
            }
            Some(InstanceSource::Consul {
                service: service?,
                tag: consul.tag.clone().filter(|t| !t.is_empty()),
            })
        }
    }
}

fn check_instance(instance: &str) -> Result<(), &'static str> {
    let (host, port) = instance.rsplit_once(':').ok_or("no port")?;
    if host.is_empty() {
        return Err("no host");
    }
    if host.chars().any(|c| c.is_whitespace() || "/?#@".contains(c)) {
        return Err("the host contains a character not allowed in a host name");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

type Settings = (Duration, usize, u32, BreakerConfig, Option<CacheConfig>, Option<Bytes>);

/// Everything but the instance source; shared by `[defaults]` and backends.
fn settings(path: &str, raw: &RawBackend, sink: &mut Sink) -> Option<Settings> {
    let timeout_path = key_path(path, "timeout");
    let timeout = match &raw.timeout {
        Some(v) => positive_duration(sink, &timeout_path, v),
        None => Some(DEFAULT_TIMEOUT),
    };
    let max_in_flight = at_least_one(
        sink,
        &key_path(path, "max_in_flight"),
        raw.max_in_flight,
        DEFAULT_MAX_IN_FLIGHT,
    );
    let retries = int_in(sink, &key_path(path, "retries"), raw.retries, (0, 10), DEFAULT_RETRIES);
    let breaker = breaker(&key_path(path, "breaker"), raw.breaker.as_ref(), sink);
    let cache = match &raw.cache {
        Some(cache) => self::cache(&key_path(path, "cache"), cache, sink).map(Some),
        None => Some(None),
    };
    let default = match &raw.default {
        Some(value) => default_response(&key_path(path, "default"), value, sink).map(Some),
        None => Some(None),
    };
    Some((timeout?, max_in_flight?, retries?, breaker?, cache?, default?))
}

fn cache(path: &str, raw: &RawCache, sink: &mut Sink) -> Option<CacheConfig> {
    let ttl_path = key_path(path, "ttl");
    let ttl = required(sink, &ttl_path, raw.ttl.as_ref(), "ttl = \"60s\"")
        .and_then(|v| positive_duration(sink, &ttl_path, v));
    let stale_if_error = duration_or(
        sink,
        &key_path(path, "stale_if_error"),
        raw.stale_if_error.as_ref(),
        Duration::ZERO,
    );
    let max_entries = at_least_one(
        sink,
        &key_path(path, "max_entries"),
        raw.max_entries,
        DEFAULT_CACHE_MAX_ENTRIES,
    );
    Some(CacheConfig {
        ttl: ttl?,
        stale_if_error: stale_if_error?,
        max_entries: max_entries?,
        shared: raw.shared.unwrap_or(true),
    })
}

/// Any TOML value, stored as compact JSON (datetimes become strings).
fn default_response(path: &str, value: &toml::Value, sink: &mut Sink) -> Option<Bytes> {
    let json = to_json(path, value, sink)?;
    match serde_json::to_vec(&json) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(e) => {
            sink.push(path, format!("cannot be written as JSON: {e}"));
            None
        }
    }
}

fn to_json(path: &str, value: &toml::Value, sink: &mut Sink) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => {
                sink.push(path, format!("{f} cannot be written in JSON: use a finite number"));
                return None;
            }
        },
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(to_json(&index_path(path, i), item, sink));
            }
            Json::Array(out.into_iter().collect::<Option<Vec<_>>>()?)
        }
        toml::Value::Table(table) => {
            let mut out = serde_json::Map::new();
            let mut ok = true;
            for (key, item) in table {
                match to_json(&key_path(path, key), item, sink) {
                    Some(v) => {
                        out.insert(key.clone(), v);
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Json::Object(out)
        }
    })
}
