//! Raw config: serde structs that mirror the TOML, one per unit, and the
//! loop that deserializes a unit while collecting all of its errors.
//!
//! Every key is optional here and durations, sizes and defaults stay TOML
//! values: whether a key is required and whether a value makes sense is
//! decided by validation, which reports every problem with its path. What
//! serde still catches is structure: unknown keys (`deny_unknown_fields`)
//! and wrong types. Fields are named after the TOML keys; what each key
//! means is documented in `model.rs` and `config/mosaic.toml`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_path_to_error::Segment;

use super::sink::{index_path, key_path, Sink};

/// Most serde errors one unit may report before we stop retrying; a bound
/// so a pathological file cannot loop.
const MAX_ERRORS_PER_UNIT: usize = 64;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub workers: Option<i64>,
    pub max_body: Option<toml::Value>,
    pub client_timeout: Option<toml::Value>,
    pub body_timeout: Option<toml::Value>,
    pub keep_alive: Option<toml::Value>,
    pub shutdown_grace: Option<toml::Value>,
    pub reuse_port: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls: Option<super::tls::RawTls>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
}

/// `[discovery]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    pub consul: Option<RawConsul>,
}

/// `[discovery.consul]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsul {
    pub address: Option<String>,
    pub token: Option<String>,
    pub datacenter: Option<String>,
    pub wait: Option<toml::Value>,
}

/// `[backends.NAME]` after `[defaults]` was merged in; also `[defaults]` itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub instances: Option<Vec<String>>,
    pub consul: Option<RawConsulService>,
    pub timeout: Option<toml::Value>,
    pub max_in_flight: Option<i64>,
    pub retries: Option<i64>,
    pub breaker: Option<RawBreaker>,
    pub cache: Option<RawCache>,
    pub default: Option<toml::Value>,
    pub amqp: Option<RawAmqpTarget>,
}

/// `amqp = { queue | exchange + routing_key, reply }` in a backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmqpTarget {
    pub queue: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub reply: Option<bool>,
}

/// `[amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmqp {
    pub url: Option<String>,
    pub connect_timeout: Option<toml::Value>,
}

/// `[redis]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub url: Option<String>,
    pub timeout: Option<toml::Value>,
    pub connect_timeout: Option<toml::Value>,
    pub prefix: Option<String>,
}

/// `consul = { service, tag }` in a backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsulService {
    pub service: Option<String>,
    pub tag: Option<String>,
}

/// `breaker = { ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub policy: Option<String>,
    pub threshold: Option<i64>,
    pub required_success_rate: Option<f64>,
    pub minimum_calls: Option<i64>,
    pub window: Option<toml::Value>,
    pub backoff: Option<RawBackoff>,
    pub half_open_calls: Option<i64>,
}

/// `breaker.backoff = { kind, ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub kind: Option<String>,
    pub delay: Option<toml::Value>,
    pub start: Option<toml::Value>,
    pub max: Option<toml::Value>,
}

/// `cache = { ttl, stale_if_error, max_entries, shared }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub ttl: Option<toml::Value>,
    pub stale_if_error: Option<toml::Value>,
    pub max_entries: Option<i64>,
    pub shared: Option<bool>,
}

/// `[[routes]]`; its sections are deserialized one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path: Option<String>,
    pub deadline: Option<toml::Value>,
    pub sections: Option<toml::Value>,
    pub auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<RawRateLimit>,
    pub stream: Option<bool>,
}

/// One entry of a route's `sections`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSection {
    pub name: Option<String>,
    pub backend: Option<String>,
    pub path: Option<String>,
    pub required: Option<bool>,
    pub forward_headers: Option<Vec<String>>,
}

/// `[[proxy]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub prefix: Option<String>,
    pub backend: Option<String>,
    pub rewrite: Option<String>,
    pub auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<RawRateLimit>,
}

/// `[auth]`; its consumers are deserialized one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub default: Option<String>,
    pub key_header: Option<String>,
    pub consumers: Option<toml::Value>,
    pub jwt: Option<toml::Value>,
}

/// One `[[auth.consumers]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsumer {
    pub name: Option<String>,
    pub keys: Option<Vec<String>>,
    pub key_sha256: Option<Vec<String>>,
    pub rate_limit: Option<RawRateLimit>,
}

/// `rate_limit = { requests, per, burst, by, policy }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub requests: Option<i64>,
    pub per: Option<toml::Value>,
    pub burst: Option<i64>,
    pub by: Option<String>,
    pub policy: Option<String>,
}

/// Deserializes one unit (a table such as `[server]` or one route) at
/// `path`. On each serde error the offending key is reported, removed from
/// `value` and poisoned, and deserialization retried, so one unit reports
/// all its unknown keys and wrong types at once. `None` when the unit is
/// not a table at all (reported too).
pub(crate) fn deserialize_unit<T: DeserializeOwned>(
    path: &str,
    value: &mut toml::Value,
    sink: &mut Sink,
) -> Option<T> {
    if !value.is_table() {
        sink.push_and_poison(path, format!("expected a table, found {}", value.type_str()));
        return None;
    }
    for _ in 0..MAX_ERRORS_PER_UNIT {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(unit) => return Some(unit),
            Err(error) => {
                let segments: Vec<Segment> = error.path().iter().cloned().collect();
                let at = join(path, &segments);
                sink.push(at.clone(), explain(error.inner().message()));
                // Removing an array element would shift the indices of the
                // next errors, so a bad element removes its whole array.
                let keys: Vec<&str> = segments
                    .iter()
                    .map_while(|s| match s {
                        Segment::Map { key } => Some(key.as_str()),
                        _ => None,
                    })
                    .collect();
                sink.poison(join_keys(path, &keys));
                if keys.is_empty() || !remove(value, &keys) {
                    sink.poison(path);
                    return None;
                }
            }
        }
    }
    sink.push_and_poison(path, "too many errors in this table; fix the ones above first");
    None
}

fn join(path: &str, segments: &[Segment]) -> String {
    segments.iter().fold(path.to_string(), |acc, segment| match segment {
        Segment::Map { key } => key_path(&acc, key),
        Segment::Seq { index } => index_path(&acc, *index),
        Segment::Enum { variant } => key_path(&acc, variant),
        Segment::Unknown => acc,
    })
}

fn join_keys(path: &str, keys: &[&str]) -> String {
    keys.iter().fold(path.to_string(), |acc, key| key_path(&acc, key))
}

fn remove(value: &mut toml::Value, keys: &[&str]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut table = value;
    for key in parents {
        match table.get_mut(*key) {
            Some(next) => table = next,
            None => return false,
        }
    }
    table.as_table_mut().and_then(|t| t.remove(*last)).is_some()
}

/// Rewrites serde's messages in the config's vocabulary: `unknown field
/// `tiemout`, expected one of ...` becomes `unknown key "tiemout" (did you
/// mean "timeout"?)`; type names like `u32` become words.
pub(crate) fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let Some((key, expected)) = rest.split_once('`') else {
            return message.to_string();
        };
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return unknown_key(key, &known);
    }
    // `expected struct RawBreaker` names our type, not the user's table.
    let message = match message.find("expected struct ") {
        Some(at) => format!("{}expected a table", &message[..at]),
        None => message.to_string(),
    };
    message
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
}

/// `unknown key "x"`, with the closest known key or the list of known keys.
pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    let closest = known.iter().map(|k| (edit_distance(key, k), *k)).filter(|(d, _)| *d <= 2).min();
    match closest {
        Some((_, suggestion)) => format!("unknown key {key:?} (did you mean {suggestion:?}?)"),
        None if known.is_empty() => format!("unknown key {key:?} (this table takes no keys)"),
        None => format!("unknown key {key:?} (known keys: {})", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<String>) {
        let mut sink = Sink::default();
        let mut value = toml::Value::Table(text.parse().unwrap());
        let unit = deserialize_unit("backends.a", &mut value, &mut sink);
        let errors = match sink.finish() {
            Ok(()) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        };
        (unit, errors)
    }

    #[test]
    fn every_bad_key_of_a_unit_is_reported() {
        let (raw, errors) = unit::<RawBackend>(
            "tiemout = \"1s\"\nretries = \"two\"\nbreaker = { treshold = 3, half_open_calls = 2 }\nmax_in_flight = 4",
        );
        assert_eq!(
            errors,
            [
                "backends.a.breaker.treshold: unknown key \"treshold\" (did you mean \"threshold\"?)",
                "backends.a.retries: invalid type: string \"two\", expected an integer",
                "backends.a.tiemout: unknown key \"tiemout\" (did you mean \"timeout\"?)",
            ]
        );
        let raw = raw.unwrap();
        assert_eq!(raw.max_in_flight, Some(4));
        assert_eq!(raw.breaker.unwrap().half_open_calls, Some(2));
    }

    #[test]
    fn a_bad_array_element_removes_the_array() {
        let (raw, errors) = unit::<RawBackend>("instances = [\"a:1\", 2]");
        assert_eq!(
            errors,
            ["backends.a.instances[1]: invalid type: integer `2`, expected a string"]
        );
        assert!(raw.unwrap().instances.is_none());
    }

    #[test]
    fn a_scalar_where_a_table_belongs_is_reported_in_toml_words() {
        let (_, errors) = unit::<RawBackend>("breaker = 5");
        assert_eq!(errors, ["backends.a.breaker: invalid type: integer `5`, expected a table"]);
    }

    #[test]
    fn unknown_keys_list_the_known_ones_when_nothing_is_close() {
        assert_eq!(unknown_key("zzzzzz", &["a", "b"]), "unknown key \"zzzzzz\" (known keys: a, b)");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
