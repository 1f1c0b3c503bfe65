//! Durations (`"250ms"`, `"1m30s"`) and sizes (`1048576`, `"64KiB"`) as
//! written in the config, and the messages that say how to write them.
//!
//! Raw structs keep these as TOML values so a bad one is reported by
//! validation with its path, alongside every other bad one.

use std::time::Duration;

/// Appended to every duration error: how to write one.
pub(crate) const DURATION_HINT: &str = "use a number and a unit: \"250ms\", \"5s\", \"1m\"";
/// Appended to every size error: how to write one.
pub(crate) const SIZE_HINT: &str =
    "use bytes as an integer, or a number and a unit: \"64KiB\", \"1MiB\", \"1MB\"";

/// Parses a duration such as `"250ms"`, `"5s"`, `"1m"`, `"1h"` or `"1m30s"`.
/// Integer amounts only; units `ms`, `s`, `m`, `h`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let part = amount.checked_mul(millis_per_unit)?;
        total = total.checked_add(Duration::from_millis(part))?;
    }
    Some(total)
}

/// Parses a size: an integer number of bytes, or a string such as `"64KiB"`
/// (units B, KB, KiB, MB, MiB, GB, GiB; KB = 1000 bytes, KiB = 1024).
pub(crate) fn parse_size(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => parse_size_str(text),
        _ => None,
    }
}

fn parse_size_str(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let amount: u64 = text[..digits].parse().ok()?;
    let multiplier: u64 = match text[digits..].trim_start() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    amount.checked_mul(multiplier)
}

/// Formats a duration the way the config writes it (`"250ms"`, `"1m30s"`).
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

/// A TOML value as it appears in an error message: strings quoted, others as written.
pub(crate) fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), ms(250));
        assert_eq!(parse_duration("5s"), ms(5_000));
        assert_eq!(parse_duration("1m"), ms(60_000));
        assert_eq!(parse_duration("1h"), ms(3_600_000));
        assert_eq!(parse_duration("1m30s"), ms(90_000));
        assert_eq!(parse_duration("1h2m3s4ms"), ms(3_723_004));
        assert_eq!(parse_duration("0s"), ms(0));
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "",
            "fast",
            "5",
            "s",
            "5 s",
            "5sec",
            "1.5s",
            "-1s",
            "5S",
            "ms5",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        let s = |t: &str| parse_size(&toml::Value::String(t.into()));
        assert_eq!(parse_size(&toml::Value::Integer(1024)), Some(1024));
        assert_eq!(s("64KiB"), Some(65_536));
        assert_eq!(s("1MiB"), Some(1_048_576));
        assert_eq!(s("1MB"), Some(1_000_000));
        assert_eq!(s("2KB"), Some(2_000));
        assert_eq!(s("3GiB"), Some(3 << 30));
        assert_eq!(s("1GB"), Some(1_000_000_000));
        assert_eq!(s("10B"), Some(10));
        assert_eq!(s("10 KiB"), Some(10_240));
        assert_eq!(s("512"), Some(512));
    }

    #[test]
    fn bad_sizes() {
        let s = |t: &str| parse_size(&toml::Value::String(t.into()));
        for bad in ["", "big", "1kb", "1.5MiB", "KiB", "1TiB", "-1B"] {
            assert_eq!(s(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size(&toml::Value::Integer(-1)), None);
        assert_eq!(parse_size(&toml::Value::Boolean(true)), None);
        assert_eq!(s("99999999999GiB"), None);
    }

    #[test]
    fn durations_format_back() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(90_000)), "1m30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
