//! The page envelope of SPEC.md: section bodies embedded unchanged, the
//! `_mosaic` member that labels each section, and the status rules.
//!
//! Bodies were validated as JSON when they arrived, so the page is written
//! by concatenation: nothing is parsed or re-serialised here.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::FetchError;

/// Where a section's body came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// This request's call, or a call shared with concurrent requests.
    Live,
    /// A fresh cache entry; no call was made.
    Cache,
    /// The call failed; an expired entry within `stale_if_error`.
    Stale,
    /// The call failed; the backend's configured default.
    Default,
    /// Nothing to serve: the section is `null`.
    None,
}

impl Source {
    /// Every source, for metrics.
    pub const ALL: [Source; 5] =
        [Source::Live, Source::Cache, Source::Stale, Source::Default, Source::None];

    /// The name in `_mosaic.sections.*.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Cache => "cache",
            Source::Stale => "stale",
            Source::Default => "default",
            Source::None => "none",
        }
    }

    /// The source named `label`: the inverse of [`Source::as_str`].
    pub fn parse(label: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == label)
    }
}

/// Which cache tier a `cache` or `stale` body came from (written only for
/// backends that have the shared tier, SPEC.md "Shared cache (Redis)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// This process's cache.
    Local,
    /// Redis, shared by every replica.
    Shared,
}

impl Tier {
    /// The name in `_mosaic.sections.*.tier`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Shared => "shared",
        }
    }
}

/// What one section ended up with.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionReply {
    /// Where the body came from.
    pub source: Source,
    /// The service's status (live and cached answers).
    pub status: Option<u16>,
    /// The JSON body, or `None` for `null`.
    pub body: Option<Bytes>,
    /// The fault, when the call failed or was not made.
    pub error: Option<FetchError>,
    /// Age of a cached or stale body.
    pub age: Option<Duration>,
    /// The tier a cached or stale body came from, for a backend with the
    /// shared tier (`None` otherwise: nothing is written).
    pub tier: Option<Tier>,
    /// Time spent on this section.
    pub elapsed: Duration,
}

impl SectionReply {
    /// A section that failed with nothing to serve.
    pub fn none(error: FetchError, elapsed: Duration) -> Self {
        Self {
            source: Source::None,
            status: None,
            body: None,
            error: Some(error),
            age: None,
            tier: None,
            elapsed,
        }
    }

    /// `live` or `cache` with no error.
    pub fn is_complete(&self) -> bool {
        matches!(self.source, Source::Live | Source::Cache) && self.error.is_none()
    }
}

/// What the edge sends back.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// HTTP status of the page.
    pub status: u16,
    /// Every section live or fresh from cache, none failed.
    pub complete: bool,
    /// The JSON document.
    pub body: Bytes,
}

/// A section's name as it will be written (`"name":`), precomputed per route.
#[derive(Debug, Clone)]
pub struct SectionLabel {
    /// The JSON-escaped, quoted name followed by `:`.
    pub key: String,
    /// Whether the page fails without it.
    pub required: bool,
}

impl SectionLabel {
    /// The label of a section.
    pub fn new(name: &str, required: bool) -> Self {
        let quoted = serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".to_string());
        Self { key: format!("{quoted}:"), required }
    }
}

/// The page status: 200 unless a required section lacks a body. Then a 4xx
/// answer passes through, a timeout or deadline gives 504, anything else 502;
/// the first failing required section in config order decides.
pub fn page_status(labels: &[SectionLabel], replies: &[SectionReply]) -> u16 {
    for (label, reply) in labels.iter().zip(replies) {
        if !label.required || reply.body.is_some() {
            continue;
        }
        if let Some(status) = reply.status.filter(|s| (400..500).contains(s)) {
            return status;
        }
        return match reply.error {
            Some(e) if e.is_time() => 504,
            _ => 502,
        };
    }
    200
}

/// Room for one section's `_mosaic` meta and separators:
/// `{"source":"default","status":200,"ms":..,"age_ms":..,"tier":"shared",
/// "error":"invalid_body"}` with 20-digit numbers is under 150 bytes.
pub const META_BYTES: usize = 160;

/// What a page can take, so that it is never copied to grow (a copy of the
/// whole page was 20 % of a cached page's instructions): the bodies, each
/// name twice, the longest meta per section.
fn page_capacity(labels: &[SectionLabel], replies: &[SectionReply]) -> usize {
    let bodies: usize = replies.iter().map(|r| r.body.as_ref().map_or(4, |b| b.len())).sum();
    let names: usize = labels.iter().map(|l| l.key.len()).sum();
    bodies + 2 * names + labels.len() * META_BYTES + 64
}

/// Writes the page: sections in config order, then `_mosaic`.
pub fn assemble(labels: &[SectionLabel], replies: &[SectionReply], elapsed: Duration) -> Page {
    let complete = replies.iter().all(SectionReply::is_complete);
    let status = page_status(labels, replies);
    let mut out = BytesMut::with_capacity(page_capacity(labels, replies));
    out.put_u8(b'{');
    for (label, reply) in labels.iter().zip(replies) {
        out.put_slice(label.key.as_bytes());
        match &reply.body {
            Some(body) => out.put_slice(body),
            None => out.put_slice(b"null"),
        }
        out.put_u8(b',');
    }
    out.put_slice(b"\"_mosaic\":");
    put_envelope(&mut out, labels, replies, complete, elapsed);
    out.put_u8(b'}');
    Page { status, complete, body: out.freeze() }
}

/// Writes the value of `_mosaic`: `{"complete":..,"elapsed_ms":..,"sections":{..}}`
/// (also the `page` event of a streamed page).
#[inline]
pub fn put_envelope(
    out: &mut BytesMut,
    labels: &[SectionLabel],
    replies: &[SectionReply],
    complete: bool,
    elapsed: Duration,
) {
    // Written straight into the page, numbers without the formatting
    // machinery: this runs for every page.
    out.put_slice(b"{\"complete\":");
    out.put_slice(if complete { b"true" } else { b"false" });
    out.put_slice(b",\"elapsed_ms\":");
    put_uint(out, millis(elapsed));
    out.put_slice(b",\"sections\":{");
    for (i, (label, reply)) in labels.iter().zip(replies).enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(label.key.as_bytes());
        put_meta(out, reply);
    }
    out.put_slice(b"}}");
}

/// Writes a section's `_mosaic` meta: `{"source":"live","status":200,"ms":12}`
/// (also the `meta` of a streamed page's `section` event).
pub fn put_meta(out: &mut BytesMut, reply: &SectionReply) {
    out.put_slice(b"{\"source\":\"");
    out.put_slice(reply.source.as_str().as_bytes());
    out.put_u8(b'"');
    if let Some(status) = reply.status {
        out.put_slice(b",\"status\":");
        put_uint(out, u64::from(status));
    }
    if reply.source != Source::Cache {
        out.put_slice(b",\"ms\":");
        put_uint(out, millis(reply.elapsed));
    }
    if let Some(age) = reply.age {
        out.put_slice(b",\"age_ms\":");
        put_uint(out, millis(age));
    }
    if let Some(tier) = reply.tier {
        out.put_slice(b",\"tier\":\"");
        out.put_slice(tier.as_str().as_bytes());
        out.put_u8(b'"');
    }
    if let Some(error) = reply.error {
        out.put_slice(b",\"error\":\"");
        out.put_slice(error.as_str().as_bytes());
        out.put_u8(b'"');
    }
    out.put_u8(b'}');
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A decimal integer.
fn put_uint(out: &mut BytesMut, n: u64) {
    out.put_slice(crate::digits::decimal(n, 1, &mut Default::default()).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(body: &'static str) -> SectionReply {
        SectionReply {
            source: Source::Live,
            status: Some(200),
            body: Some(Bytes::from_static(body.as_bytes())),
            error: None,
            age: None,
            tier: None,
            elapsed: Duration::from_millis(12),
        }
    }

    fn labels() -> Vec<SectionLabel> {
        vec![SectionLabel::new("product", true), SectionLabel::new("price", false)]
    }

    #[test]
    fn complete_page_embeds_bodies_unchanged() {
        let page = assemble(
            &labels(),
            &[live("{\"id\": \"42\"}"), live("[1, 2]")],
            Duration::from_millis(15),
        );
        assert_eq!(page.status, 200);
        assert!(page.complete);
        let text = std::str::from_utf8(&page.body).expect("utf8");
        assert!(text.starts_with("{\"product\":{\"id\": \"42\"},\"price\":[1, 2],"), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&page.body).expect("valid JSON");
        assert_eq!(v["_mosaic"]["complete"], true);
        assert_eq!(v["_mosaic"]["elapsed_ms"], 15);
        assert_eq!(v["_mosaic"]["sections"]["product"]["source"], "live");
        assert_eq!(v["_mosaic"]["sections"]["product"]["status"], 200);
        assert_eq!(v["_mosaic"]["sections"]["product"]["ms"], 12);
    }

    #[test]
    fn degraded_optional_section_keeps_200_and_labels_it() {
        let stale = SectionReply {
            source: Source::Stale,
            status: Some(200),
            body: Some(Bytes::from_static(b"{\"amount\":1}")),
            error: Some(FetchError::Timeout),
            age: Some(Duration::from_millis(41_000)),
            tier: Some(Tier::Shared),
            elapsed: Duration::from_millis(300),
        };
        let page = assemble(&labels(), &[live("{}"), stale], Duration::from_millis(301));
        assert_eq!(page.status, 200);
        assert!(!page.complete);
        let v: serde_json::Value = serde_json::from_slice(&page.body).expect("valid JSON");
        assert_eq!(v["_mosaic"]["sections"]["price"]["tier"], "shared");
        assert!(
            v["_mosaic"]["sections"]["product"].get("tier").is_none(),
            "no tier on a live section"
        );
        assert_eq!(v["_mosaic"]["sections"]["price"]["source"], "stale");
        assert_eq!(v["_mosaic"]["sections"]["price"]["age_ms"], 41_000);
        assert_eq!(v["_mosaic"]["sections"]["price"]["error"], "timeout");
        assert_eq!(v["price"]["amount"], 1);
    }

    #[test]
    fn the_longest_page_fits_the_room_made_for_it() {
        let labels = vec![SectionLabel::new("a-rather-long-section-name", false); 7];
        let worst = SectionReply {
            source: Source::Default,
            status: Some(200),
            body: None,
            error: Some(FetchError::InvalidBody),
            age: Some(Duration::from_millis(u64::MAX)),
            tier: Some(Tier::Shared),
            elapsed: Duration::from_millis(u64::MAX),
        };
        let replies = vec![worst; 7];
        let page = assemble(&labels, &replies, Duration::from_millis(u64::MAX));
        assert!(page.body.len() <= page_capacity(&labels, &replies), "{}", page.body.len());
    }

    #[test]
    fn status_rules() {
        let none = |e| SectionReply::none(e, Duration::ZERO);
        let four = |s| SectionReply { status: Some(s), body: None, ..live("{}") };
        let l = labels();
        assert_eq!(page_status(&l, &[none(FetchError::Timeout), live("{}")]), 504);
        assert_eq!(page_status(&l, &[none(FetchError::Deadline), live("{}")]), 504);
        assert_eq!(page_status(&l, &[none(FetchError::Connect), live("{}")]), 502);
        assert_eq!(page_status(&l, &[none(FetchError::CircuitOpen), live("{}")]), 502);
        assert_eq!(page_status(&l, &[four(404), live("{}")]), 404);
        assert_eq!(page_status(&l, &[live("{}"), four(404)]), 200);
        assert_eq!(page_status(&l, &[live("{}"), none(FetchError::Connect)]), 200);
        let both = vec![SectionLabel::new("a", true), SectionLabel::new("b", true)];
        assert_eq!(
            page_status(&both, &[none(FetchError::Connect), none(FetchError::Timeout)]),
            502
        );
        assert_eq!(page_status(&both, &[live("{}"), none(FetchError::Timeout)]), 504);
    }

    #[test]
    fn source_names_round_trip() {
        for source in Source::ALL {
            assert_eq!(Source::parse(source.as_str()), Some(source));
        }
        assert_eq!(Source::parse("Live"), None);
        assert_eq!(Source::parse(""), None);
    }

    #[test]
    fn numbers_are_plain_decimals() {
        for n in [0u64, 7, 10, 99, 100, 1234, 4_294_967_296, u64::MAX] {
            let mut out = BytesMut::new();
            put_uint(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn names_are_escaped() {
        let l = vec![SectionLabel::new("we\"ird", false)];
        let page = assemble(&l, &[live("1")], Duration::ZERO);
        let v: serde_json::Value = serde_json::from_slice(&page.body).expect("valid JSON");
        assert_eq!(v["we\"ird"], 1);
    }
}
