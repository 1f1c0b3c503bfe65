//! Reads back the few series the dashboard needs from the Prometheus text
//! that `/metrics` serves.
//!
//! The request path only bumps `metrics` handles, which cannot be read
//! back; the recorder's rendered text is the one place their values can
//! be seen. The dashboard's sampler renders it once a second and keeps,
//! from it, only what a snapshot needs: backend latency buckets, cache hits
//! and misses, responses per route and section sources per route. Nothing
//! here runs per request.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::page::Source;

/// Cumulative latency counts of one backend: one per
/// [`super::metrics::LATENCY_BUCKETS`] bound, then `+Inf`.
pub type Buckets = Vec<u64>;

/// The dashboard's series, as cumulative counts at the time of rendering.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    /// `mosaic_backend_duration_seconds_bucket`, by backend.
    pub latency: HashMap<String, Buckets>,
    /// `mosaic_cache_hits_total`, by backend.
    pub cache_hits: HashMap<String, u64>,
    /// `mosaic_cache_misses_total`, by backend.
    pub cache_misses: HashMap<String, u64>,
    /// `mosaic_requests_total` summed over statuses, by route.
    pub responses: HashMap<String, u64>,
    /// `mosaic_pages_complete_total`, by route.
    pub complete: HashMap<String, u64>,
    /// `mosaic_section_source_total`, by route then section, in
    /// [`Source::ALL`] order.
    pub sources: HashMap<String, HashMap<String, [u64; 5]>>,
}

const LATENCY: &str = "mosaic_backend_duration_seconds_bucket{";
const CACHE_HITS: &str = "mosaic_cache_hits_total{";
const CACHE_MISSES: &str = "mosaic_cache_misses_total{";
const RESPONSES: &str = "mosaic_requests_total{";
const SOURCES: &str = "mosaic_section_source_total{";
const COMPLETE: &str = "mosaic_pages_complete_total{";

impl Exposition {
    /// Keeps the dashboard's series from a Prometheus text exposition;
    /// lines it does not need, or cannot read, are skipped.
    pub fn parse(text: &str) -> Self {
        let mut out = Exposition::default();
        let bounds = super::metrics::LATENCY_BUCKETS;
        for line in text.lines() {
            if !line.starts_with("mosaic_") {
                continue;
            }
            if let Some(rest) = line.strip_prefix(LATENCY) {
                let Some((labels, value)) = sample(rest) else { continue };
                let (Some(backend), Some(le)) = (label(&labels, "backend"), label(&labels, "le"))
                else {
                    continue;
                };
                // Exact text match on the bound: the recorder writes the
                // configured bounds back as they were given.
                let index = if le == "+Inf" {
                    Some(bounds.len())
                } else {
                    le.parse::<f64>().ok().and_then(|le| bounds.iter().position(|b| *b == le))
                };
                if let Some(index) = index {
                    // Nineteen lines per backend: allocate its key once.
                    if !out.latency.contains_key(backend.as_ref()) {
                        out.latency.insert(backend.to_string(), vec![0; bounds.len() + 1]);
                    }
                    if let Some(buckets) = out.latency.get_mut(backend.as_ref()) {
                        buckets[index] = value;
                    }
                }
            } else if let Some(rest) = line.strip_prefix(CACHE_HITS) {
                by_label(&mut out.cache_hits, rest, "backend");
            } else if let Some(rest) = line.strip_prefix(CACHE_MISSES) {
                by_label(&mut out.cache_misses, rest, "backend");
            } else if let Some(rest) = line.strip_prefix(RESPONSES) {
                let Some((labels, value)) = sample(rest) else { continue };
                if let Some(route) = label(&labels, "route") {
                    match out.responses.get_mut(route.as_ref()) {
                        Some(total) => *total += value,
                        None => {
                            out.responses.insert(route.into_owned(), value);
                        }
                    }
                }
            } else if let Some(rest) = line.strip_prefix(COMPLETE) {
                let Some((labels, value)) = sample(rest) else { continue };
                if let Some(route) = label(&labels, "route") {
                    out.complete.insert(route.into_owned(), value);
                }
            } else if let Some(rest) = line.strip_prefix(SOURCES) {
                let Some((labels, value)) = sample(rest) else { continue };
                let (Some(route), Some(section), Some(source)) =
                    (label(&labels, "route"), label(&labels, "section"), label(&labels, "source"))
                else {
                    continue;
                };
                let Some(index) = Source::ALL.iter().position(|s| s.as_str() == source) else {
                    continue;
                };
                // Five lines per section: allocate the keys once.
                if !out.sources.contains_key(route.as_ref()) {
                    out.sources.insert(route.to_string(), HashMap::new());
                }
                let Some(sections) = out.sources.get_mut(route.as_ref()) else { continue };
                if !sections.contains_key(section.as_ref()) {
                    sections.insert(section.to_string(), [0; 5]);
                }
                if let Some(counts) = sections.get_mut(section.as_ref()) {
                    counts[index] = value;
                }
            }
        }
        out
    }
}

fn by_label(map: &mut HashMap<String, u64>, rest: &str, name: &str) {
    if let Some((labels, value)) = sample(rest) {
        if let Some(key) = label(&labels, name) {
            *map.entry(key.into_owned()).or_insert(0) += value;
        }
    }
}

/// A series' labels: name and (unescaped) value.
type Labels<'a> = Vec<(&'a str, Cow<'a, str>)>;

fn label<'a>(labels: &'a [(&'a str, Cow<'a, str>)], name: &str) -> Option<Cow<'a, str>> {
    labels.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}

/// Splits `a="x",b="y"} 12` (the text after the opening brace) into its
/// labels and its value. Counts are written as integers; anything else
/// (a float, NaN) is read as a float and truncated.
fn sample(rest: &str) -> Option<(Labels<'_>, u64)> {
    let mut labels = Vec::with_capacity(3);
    let mut at = rest;
    loop {
        if let Some(after) = at.strip_prefix('}') {
            let value = after.trim();
            let value = value.parse::<u64>().ok().or_else(|| {
                value.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64)
            })?;
            return Some((labels, value));
        }
        let at_name = at.strip_prefix(',').unwrap_or(at);
        let (name, after_name) = at_name.split_once("=\"")?;
        let (value, after_value) = quoted(after_name)?;
        labels.push((name, value));
        at = after_value;
    }
}

/// A label value up to its closing quote, unescaped (`\\`, `\"`, `\n`),
/// and the text after the quote.
fn quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let end = text.find(['"', '\\'])?;
    if text.as_bytes()[end] == b'"' {
        return Some((Cow::Borrowed(&text[..end]), &text[end + 1..]));
    }
    let mut value = String::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(value), &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series the dashboard needs are read with their labels; other
    /// families, comments and malformed lines are skipped.
    #[test]
    fn reads_the_dashboard_series() {
        let text = r#"# HELP mosaic_cache_hits_total Section calls answered from a fresh cache entry.
# TYPE mosaic_cache_hits_total counter
mosaic_cache_hits_total{backend="pricing"} 7
mosaic_cache_misses_total{backend="pricing"} 3
mosaic_requests_total{route="/products/{id}",status="200"} 40
mosaic_requests_total{route="/products/{id}",status="404"} 2
mosaic_pages_complete_total{route="/products/{id}"} 33
mosaic_section_source_total{route="/products/{id}",section="price",source="stale"} 5
mosaic_section_source_total{route="/products/{id}",section="price",source="live"} 37
mosaic_backend_duration_seconds_bucket{backend="pricing",le="0.001"} 1
mosaic_backend_duration_seconds_bucket{backend="pricing",le="0.25"} 9
mosaic_backend_duration_seconds_bucket{backend="pricing",le="+Inf"} 10
mosaic_backend_duration_seconds_sum{backend="pricing"} 0.5
mosaic_backend_requests_total{backend="pricing",outcome="success"} 10
mosaic_requests_total{route="broken} 3
"#;
        let e = Exposition::parse(text);
        assert_eq!(e.cache_hits["pricing"], 7);
        assert_eq!(e.cache_misses["pricing"], 3);
        assert_eq!(e.responses["/products/{id}"], 42);
        assert_eq!(e.complete["/products/{id}"], 33);
        let price = e.sources["/products/{id}"]["price"];
        assert_eq!(price, [37, 0, 5, 0, 0]);
        let buckets = &e.latency["pricing"];
        assert_eq!(buckets.len(), super::super::metrics::LATENCY_BUCKETS.len() + 1);
        assert_eq!((buckets[0], buckets[10], buckets[17]), (1, 9, 10));
    }

    /// Escaped label values come back as they were registered.
    #[test]
    fn unescapes_label_values() {
        let text = "mosaic_requests_total{route=\"/a\\\"b\\\\c\",status=\"200\"} 1\n";
        let e = Exposition::parse(text);
        assert_eq!(e.responses.get("/a\"b\\c"), Some(&1));
    }
}
