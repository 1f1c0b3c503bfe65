//! Checks for single values: required keys, durations, sizes, integer
//! ranges, listen addresses. Each error names the bad value and the fix.

use std::net::SocketAddr;
use std::time::Duration;

use super::sink::Sink;
use super::units::{format_duration, parse_duration, parse_size, show, DURATION_HINT, SIZE_HINT};

/// The value, or an error at `path` saying it is required (with an example).
pub(crate) fn required<T>(
    sink: &mut Sink,
    path: &str,
    value: Option<T>,
    example: &str,
) -> Option<T> {
    if value.is_none() {
        sink.push(path, format!("missing: this key is required (e.g. {example})"));
    }
    value
}

/// A duration written as a string such as `"250ms"`.
pub(crate) fn duration(sink: &mut Sink, path: &str, value: &toml::Value) -> Option<Duration> {
    let parsed = value.as_str().and_then(parse_duration);
    if parsed.is_none() {
        sink.push(path, format!("invalid duration {} ({DURATION_HINT})", show(value)));
    }
    parsed
}

/// A duration that must be more than zero.
pub(crate) fn positive_duration(
    sink: &mut Sink,
    path: &str,
    value: &toml::Value,
) -> Option<Duration> {
    let d = duration(sink, path, value)?;
    if d.is_zero() {
        sink.push(path, format!("invalid duration {}: must be more than zero", show(value)));
        return None;
    }
    Some(d)
}

/// An optional duration: `default` when absent.
pub(crate) fn duration_or(
    sink: &mut Sink,
    path: &str,
    value: Option<&toml::Value>,
    default: Duration,
) -> Option<Duration> {
    value.map_or(Some(default), |v| duration(sink, path, v))
}

/// A duration at most `max`.
pub(crate) fn at_most(
    sink: &mut Sink,
    path: &str,
    value: Duration,
    max: Duration,
) -> Option<Duration> {
    if value > max {
        sink.push(
            path,
            format!("{:?} is too long: at most {:?}", format_duration(value), format_duration(max)),
        );
        return None;
    }
    Some(value)
}

/// A size: integer bytes or a string such as `"64KiB"`, more than zero.
pub(crate) fn positive_size(sink: &mut Sink, path: &str, value: &toml::Value) -> Option<u64> {
    match parse_size(value) {
        None => {
            sink.push(path, format!("invalid size {} ({SIZE_HINT})", show(value)));
            None
        }
        Some(0) => {
            sink.push(path, format!("invalid size {}: must be more than zero", show(value)));
            None
        }
        Some(size) => Some(size),
    }
}

/// A count of at least 1 at `path` (see [`int_in`]).
pub(crate) fn at_least_one<T: TryFrom<i64>>(
    sink: &mut Sink,
    path: &str,
    value: Option<i64>,
    default: T,
) -> Option<T> {
    int_in(sink, path, value, (1, i64::MAX), default)
}

/// An integer in `min..=max` (or `default` when absent).
pub(crate) fn int_in<T: TryFrom<i64>>(
    sink: &mut Sink,
    path: &str,
    value: Option<i64>,
    range: (i64, i64),
    default: T,
) -> Option<T> {
    let Some(value) = value else { return Some(default) };
    let (min, max) = range;
    if value < min || value > max {
        let bound = if max == i64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        };
        sink.push(path, format!("invalid value {value}: {bound}"));
        return None;
    }
    let converted = T::try_from(value).ok();
    if converted.is_none() {
        sink.push(path, format!("invalid value {value}: too large"));
    }
    converted
}

/// An `ip:port` listen address, or `default` when absent.
pub(crate) fn listen(
    sink: &mut Sink,
    path: &str,
    value: Option<&str>,
    default: &str,
) -> Option<SocketAddr> {
    let text = value.unwrap_or(default);
    let parsed = text.parse::<SocketAddr>().ok();
    if parsed.is_none() {
        sink.push(
            path,
            format!("invalid listen address {text:?} (use ip:port, e.g. \"127.0.0.1:8080\")"),
        );
    }
    parsed
}

/// `Some(text)` unless the text is empty, so `"${TOKEN:-}"` means "no token".
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// The bytes of the file at `path` that a config key names (`at`), at most
/// `max` of them (`what` says what the file should be, for the error when
/// it is larger): `None` after reporting why it cannot be used.
pub(crate) fn read_bounded_file(
    path: &str,
    max: u64,
    what: &str,
    at: &str,
    sink: &mut super::sink::Sink,
) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let read = std::fs::File::open(path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(max + 1).read_to_end(&mut bytes).map(|_| bytes)
    });
    match read {
        Ok(bytes) if bytes.len() as u64 > max => {
            let limit = if max.is_multiple_of(1 << 20) {
                format!("{} MiB", max >> 20)
            } else {
                format!("{} KiB", max >> 10)
            };
            sink.push(at, format!("{path:?} is larger than {limit}: not {what}"));
            None
        }
        Ok(bytes) => Some(bytes),
        Err(e) => {
            sink.push(at, format!("cannot read {path:?}: {e}"));
            None
        }
    }
}

/// Whether `name` is an HTTP header name (RFC 9110 `token`).
pub(crate) fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(f: impl FnOnce(&mut Sink)) -> Vec<String> {
        let mut sink = Sink::default();
        f(&mut sink);
        match sink.finish() {
            Ok(()) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn messages_name_the_value_and_the_fix() {
        let s = |t: &str| toml::Value::String(t.into());
        assert_eq!(
            errors(|k| {
                duration(k, "backends.reviews.timeout", &s("fast"));
            }),
            ["backends.reviews.timeout: invalid duration \"fast\" (use a number and a unit: \"250ms\", \"5s\", \"1m\")"]
        );
        assert_eq!(
            errors(|k| {
                duration(k, "x", &toml::Value::Integer(5));
            }),
            ["x: invalid duration 5 (use a number and a unit: \"250ms\", \"5s\", \"1m\")"]
        );
        assert_eq!(
            errors(|k| {
                positive_duration(k, "x", &s("0ms"));
            }),
            ["x: invalid duration \"0ms\": must be more than zero"]
        );
        assert_eq!(
            errors(|k| {
                at_most(k, "x", Duration::from_secs(700), Duration::from_secs(600));
            }),
            ["x: \"11m40s\" is too long: at most \"10m\""]
        );
        assert_eq!(
            errors(|k| {
                positive_size(k, "server.max_body", &s("1MIB"));
            }),
            ["server.max_body: invalid size \"1MIB\" (use bytes as an integer, or a number and a unit: \"64KiB\", \"1MiB\", \"1MB\")"]
        );
        assert_eq!(
            errors(|k| {
                int_in::<u32>(k, "r", Some(11), (0, 10), 1);
                int_in::<u32>(k, "t", Some(0), (1, i64::MAX), 1);
            }),
            [
                "r: invalid value 11: must be between 0 and 10",
                "t: invalid value 0: must be at least 1"
            ]
        );
        assert_eq!(
            errors(|k| {
                listen(k, "server.listen", Some("localhost:80"), "");
            }),
            ["server.listen: invalid listen address \"localhost:80\" (use ip:port, e.g. \"127.0.0.1:8080\")"]
        );
    }
}
