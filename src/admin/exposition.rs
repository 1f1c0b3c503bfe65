//! Writes the Prometheus text of the families mosaic counts itself
//! ([`crate::counters`]): responses by route and status, request and
//! backend latency histograms, complete pages, section sources, cache
//! hits and misses. `/metrics` is the recorder's render (every other
//! family) followed by this text.
//!
//! Names, labels, types and number formats are those the `metrics`
//! recorder used to write for the same families (bucket bounds printed as
//! Rust prints an `f64`, series in a fixed order), so scrapes, alerts and
//! dashboards built on them read the same series.

use std::fmt::Write;

use crate::backend::BackendSeries;
use crate::counters::{LatencyHistogram, ResponseSeries, SourceCounts, LATENCY_BUCKETS};
use crate::gateway::runtime::Runtime;
use crate::page::Source;

/// The series to write, borrowed from a runtime (or built by hand in a
/// test or bench).
#[derive(Debug, Default)]
pub struct Families<'a> {
    /// Every route label (composed, proxy, `unmatched`) and its counters.
    pub responses: Vec<(&'a str, &'a ResponseSeries)>,
    /// The composed routes' labels: only they have complete pages.
    pub pages: Vec<(&'a str, &'a ResponseSeries)>,
    /// Route label, section name and its sources.
    pub sections: Vec<(&'a str, &'a str, &'a SourceCounts)>,
    /// Backend name and its series.
    pub backends: Vec<(&'a str, &'a BackendSeries)>,
}

impl<'a> Families<'a> {
    /// The series of `runtime`: its route labels, composed routes (a path
    /// listed twice is written once), sections and backends.
    pub fn of(runtime: &'a Runtime) -> Self {
        let mut families = Families {
            responses: runtime.responses.iter().map(|(label, s)| (label.as_str(), &**s)).collect(),
            ..Families::default()
        };
        for route in &runtime.routes {
            let path = route.config.path.as_str();
            if families.pages.iter().any(|(p, _)| *p == path) {
                continue;
            }
            families.pages.push((path, &route.responses));
            for section in &route.sections {
                families.sections.push((path, section.name.as_str(), &section.sources));
            }
        }
        families.backends = runtime
            .backends
            .iter()
            .map(|(name, h)| (name.as_str(), &**h.backend.series()))
            .collect();
        families
    }

    /// Appends the text of every family to `out`.
    pub fn write(&self, out: &mut String) {
        if !self.responses.is_empty() {
            header(out, REQUESTS, "counter", "Responses sent, by route template and status.");
            for (route, series) in &self.responses {
                for (status, count) in series.statuses.nonzero() {
                    let _ = writeln!(
                        out,
                        "{REQUESTS}{{route=\"{}\",status=\"{status}\"}} {count}",
                        Escaped(route)
                    );
                }
            }
            out.push('\n');
            header(
                out,
                REQUEST_DURATION,
                "histogram",
                "Time from request arrival to response (for proxies: to the response head), by route.",
            );
            for (route, series) in &self.responses {
                histogram(out, REQUEST_DURATION, "route", route, &series.duration);
            }
            out.push('\n');
        }
        if !self.pages.is_empty() {
            header(
                out,
                COMPLETE,
                "counter",
                "Composed pages with every section live or fresh from cache, by route template.",
            );
            for (route, series) in &self.pages {
                let _ = writeln!(
                    out,
                    "{COMPLETE}{{route=\"{}\"}} {}",
                    Escaped(route),
                    series.complete_pages()
                );
            }
            out.push('\n');
        }
        if !self.sections.is_empty() {
            header(
                out,
                SOURCES,
                "counter",
                "Page sections by where their body came from: live, cache, stale, default, none.",
            );
            for (route, section, sources) in &self.sections {
                for (source, count) in Source::ALL.iter().zip(sources.read()) {
                    let _ = writeln!(
                        out,
                        "{SOURCES}{{route=\"{}\",section=\"{}\",source=\"{}\"}} {count}",
                        Escaped(route),
                        Escaped(section),
                        source.as_str()
                    );
                }
            }
            out.push('\n');
        }
        if !self.backends.is_empty() {
            header(
                out,
                BACKEND_DURATION,
                "histogram",
                "Duration of each attempt against a backend instance.",
            );
            for (backend, series) in &self.backends {
                histogram(out, BACKEND_DURATION, "backend", backend, &series.latency);
            }
            out.push('\n');
            for (name, help, count) in [
                (
                    CACHE_HITS,
                    "Section calls answered from a fresh cache entry.",
                    (|s: &BackendSeries| s.cache_hits.get()) as fn(&BackendSeries) -> u64,
                ),
                (CACHE_MISSES, "Section calls that found no fresh cache entry.", |s| {
                    s.cache_misses.get()
                }),
            ] {
                header(out, name, "counter", help);
                for (backend, series) in &self.backends {
                    let _ = writeln!(
                        out,
                        "{name}{{backend=\"{}\"}} {}",
                        Escaped(backend),
                        count(series)
                    );
                }
                out.push('\n');
            }
        }
    }
}

const REQUESTS: &str = "mosaic_requests_total";
const REQUEST_DURATION: &str = "mosaic_request_duration_seconds";
const COMPLETE: &str = "mosaic_pages_complete_total";
const SOURCES: &str = "mosaic_section_source_total";
const BACKEND_DURATION: &str = "mosaic_backend_duration_seconds";
const CACHE_HITS: &str = "mosaic_cache_hits_total";
const CACHE_MISSES: &str = "mosaic_cache_misses_total";

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, label: &str, value: &str, h: &LatencyHistogram) {
    let reading = h.read();
    let value = Escaped(value);
    for (le, count) in LATENCY_BUCKETS.iter().zip(&reading.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {count}\n{name}_sum{{{label}=\"{value}\"}} {sum}\n{name}_count{{{label}=\"{value}\"}} {count}",
        count = reading.count(),
        sum = reading.sum_seconds,
    );
}

/// A label value escaped for the text format: `\`, `"` and newline.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every family in the format the recorder wrote: HELP and TYPE, the
    /// labels in order, statuses seen only, all five sources, cumulative
    /// buckets with the bounds as `f64`s print, `_sum` in seconds.
    #[test]
    fn writes_each_family() {
        let route = ResponseSeries::default();
        for status in [200, 200, 502] {
            route.statuses.record(status);
        }
        route.duration.record(Duration::from_millis(20));
        route.complete_page();
        let sources = SourceCounts::default();
        sources.record(Source::Stale);
        let backend = BackendSeries::default();
        backend.latency.record(Duration::from_micros(1500));
        backend.latency.record(Duration::from_secs(20));
        backend.cache_hits.bump();
        let families = Families {
            responses: vec![("/p/{id}", &route)],
            pages: vec![("/p/{id}", &route)],
            sections: vec![("/p/{id}", "price", &sources)],
            backends: vec![("pricing", &backend)],
        };
        let mut text = String::new();
        families.write(&mut text);
        for line in [
            "# TYPE mosaic_requests_total counter",
            "mosaic_requests_total{route=\"/p/{id}\",status=\"200\"} 2",
            "mosaic_requests_total{route=\"/p/{id}\",status=\"502\"} 1",
            "# TYPE mosaic_request_duration_seconds histogram",
            "mosaic_request_duration_seconds_bucket{route=\"/p/{id}\",le=\"0.01\"} 0",
            "mosaic_request_duration_seconds_bucket{route=\"/p/{id}\",le=\"0.025\"} 1",
            "mosaic_request_duration_seconds_sum{route=\"/p/{id}\"} 0.02",
            "mosaic_request_duration_seconds_count{route=\"/p/{id}\"} 1",
            "mosaic_pages_complete_total{route=\"/p/{id}\"} 1",
            "mosaic_section_source_total{route=\"/p/{id}\",section=\"price\",source=\"live\"} 0",
            "mosaic_section_source_total{route=\"/p/{id}\",section=\"price\",source=\"stale\"} 1",
            "mosaic_backend_duration_seconds_bucket{backend=\"pricing\",le=\"0.001\"} 0",
            "mosaic_backend_duration_seconds_bucket{backend=\"pricing\",le=\"0.0025\"} 1",
            "mosaic_backend_duration_seconds_bucket{backend=\"pricing\",le=\"1\"} 1",
            "mosaic_backend_duration_seconds_bucket{backend=\"pricing\",le=\"10\"} 1",
            "mosaic_backend_duration_seconds_bucket{backend=\"pricing\",le=\"+Inf\"} 2",
            "mosaic_backend_duration_seconds_count{backend=\"pricing\"} 2",
            "mosaic_cache_hits_total{backend=\"pricing\"} 1",
            "mosaic_cache_misses_total{backend=\"pricing\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("status=\"404\""), "unseen statuses are not written");
        // Each family's HELP and TYPE once, every line a comment, a blank
        // or a sample.
        assert_eq!(text.matches("# TYPE mosaic_cache_hits_total").count(), 1);
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            assert!(series.starts_with("mosaic_") && series.ends_with('}'), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    /// Label values are escaped as the text format requires.
    #[test]
    fn escapes_label_values() {
        assert_eq!(Escaped("/a\"b\\c\nd").to_string(), "/a\\\"b\\\\c\\nd");
        assert_eq!(Escaped("/plain/{id}").to_string(), "/plain/{id}");
    }

    /// Nothing configured, nothing written (no family without series).
    #[test]
    fn empty_families_write_nothing() {
        let mut text = String::new();
        Families::default().write(&mut text);
        assert_eq!(text, "");
    }
}
