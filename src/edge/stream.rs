//! Streamed pages (SPEC.md "Streaming to the client"): a composed route
//! asked with `Accept: text/event-stream` answers as server-sent events.
//!
//! The same coordinator ([`coordinator::collect`]) builds both answers; the
//! stream listens to it (`Emitter` is its [`SectionEvents`]) and writes
//! one `section` event per section the moment that section is final, then
//! the `page` event with the envelope. The head goes out once every
//! `required` section has a body; a required section that fails makes the
//! answer the ordinary JSON page (4xx/502/504), so the client never gets a
//! 200 stream for a page that failed.
//!
//! No task is spawned: the coordinator's future is polled by the handler
//! until the head is decided and then by the response body, on the
//! connection's own task. A client that goes away drops the body and with
//! it the section calls still in flight, as it would for the JSON page.
//! The events wait in a queue bounded by the number of sections plus one
//! (each section is final once, then the page): it cannot grow. The stream
//! holds the runtime it was matched in until it ends (by the deadline), so
//! a reload meanwhile changes nothing under it.
//!
//! Headers: `Content-Type: text/event-stream`, `Cache-Control: no-store`,
//! `X-Accel-Buffering: no` (a proxy in front must not buffer the stream),
//! `Vary: Accept`, no `Content-Length` (chunked). `X-Mosaic-Complete` is not
//! sent: it is not known when the head leaves; the `page` event's
//! `_mosaic.complete` says it.
//!
//! A section body goes into its event unchanged. An SSE `data:` line cannot
//! hold a line break, so a body with line breaks is continued on further
//! `data:` lines (the standard's way: a client joins them with LF); the
//! joined data then holds the body byte for byte, except that a CR (in JSON
//! only ever whitespace between tokens) arrives as LF.

use std::cell::Cell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

use super::compose::PageLog;
use super::proxy::relay::DeferredAccess;
use crate::backend::{CallSpec, Network};
use crate::coordinator::{self, SectionEvents};
use crate::gateway::runtime::{RouteRuntime, Runtime};
use crate::page::{self, Page, SectionLabel, SectionReply};

/// `X-Accel-Buffering: no`: nginx (and proxies that copy it) pass the
/// stream on as it comes instead of buffering it.
static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether the client asks for an event stream: `text/event-stream` among
/// the media ranges of any `Accept` header, with a `q` other than 0.
/// Wildcards (`*/*`, `text/*`) do not count: they keep the JSON page.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).any(|value| accepts_event_stream(value.as_bytes()))
}

fn accepts_event_stream(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|range| {
        let mut parts = range.split(|&b| b == b';');
        let media = parts.next().map(trim).unwrap_or_default();
        if !media.eq_ignore_ascii_case(b"text/event-stream") {
            return false;
        }
        for param in parts {
            let mut pair = param.splitn(2, |&b| b == b'=');
            let name = pair.next().map(trim).unwrap_or_default();
            if name.eq_ignore_ascii_case(b"q") {
                return !is_zero_q(pair.next().map(trim).unwrap_or_default());
            }
        }
        true
    })
}

/// `0`, `0.`, `0.0`, ... `0.000`: "not acceptable" (RFC 9110 §12.4.2).
fn is_zero_q(q: &[u8]) -> bool {
    match q.split_first() {
        Some((b'0', rest)) => match rest.split_first() {
            None => true,
            Some((b'.', decimals)) => decimals.len() <= 3 && decimals.iter().all(|&d| d == b'0'),
            Some(_) => false,
        },
        _ => false,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// What a stream request ended with before its body: the stream, or the
/// ordinary page (a required section failed).
pub enum Opened {
    /// `200`, the events follow in the body.
    Stream(HttpResponse),
    /// A required section failed: the page and its replies, to be answered
    /// as JSON like any page.
    Page(Page, Vec<SectionReply>),
}

/// The coordinator's future, owned (it holds the runtime it composes from).
type Driver = Pin<Box<dyn Future<Output = Vec<SectionReply>>>>;

/// Asks the route's sections and waits until every required one is final:
/// then the stream's head (or the failed page).
///
/// `runtime` holds `route` (the future outlives the request's borrows, so
/// it keeps the runtime it reads); `specs`: one per section, config order.
pub async fn open(
    runtime: &Arc<Runtime>,
    route: &RouteRuntime,
    specs: Vec<CallSpec>,
    arrived: Instant,
    access: Option<DeferredAccess>,
) -> Opened {
    let Some(index) = runtime.routes.iter().position(|r| std::ptr::eq(r, route)) else {
        // Not this runtime's route (cannot happen: the edge matched it
        // there); the page is still answered.
        let replies = coordinator::collect(
            route,
            specs.into_iter(),
            arrived,
            &Network,
            &coordinator::NoEvents,
        )
        .await;
        return Opened::Page(coordinator::finish_page(route, &replies, arrived), replies);
    };
    let emitter = Rc::new(Emitter::new(runtime.clone(), index, &route.labels));
    let mut driver: Driver = Box::pin({
        let emitter = emitter.clone();
        async move {
            let Some(route) = emitter.route() else { return Vec::new() };
            coordinator::collect(route, specs.into_iter(), arrived, &Network, &*emitter).await
        }
    });
    // Polled once before the check: the cache hits are in the queue and the
    // calls are on their way before a route without required sections
    // sends its head.
    let finished = poll_fn(|cx| {
        if let Poll::Ready(replies) = driver.as_mut().poll(cx) {
            return Poll::Ready(Some(replies));
        }
        if !emitter.required_failed.get() && emitter.required_left.get() == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await;
    let mut body = SectionStream { emitter, driver: None, access, arrived };
    match finished {
        Some(replies) if body.emitter.required_failed.get() => {
            // The page answers, and its access line is the edge's.
            body.access = None;
            return Opened::Page(coordinator::finish_page(route, &replies, arrived), replies);
        }
        Some(replies) => body.finish(&replies),
        None => body.driver = Some(driver),
    }
    let response = HttpResponse::build(StatusCode::OK)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no")))
        .insert_header((header::VARY, HeaderValue::from_static("accept")))
        // Not `streaming()`: it would set its own content type.
        .body(actix_web::body::BodyStream::new(body));
    Opened::Stream(response)
}

/// Listens to the coordinator and writes each section's event as it is
/// final. Owns the runtime (the route's labels) it writes from.
struct Emitter {
    /// The runtime holding the route.
    runtime: Arc<Runtime>,
    /// The route's index in `runtime.routes`.
    route: usize,
    /// Events written and not yet taken by the body: at most one per
    /// section and the page (`bound`). In a `Cell`: taken out and put back,
    /// never borrowed across anything.
    queue: Cell<VecDeque<Bytes>>,
    /// The queue's bound: sections + 1.
    bound: usize,
    /// Required sections not final yet.
    required_left: Cell<usize>,
    /// A required section ended without a body: the answer is the JSON
    /// page, no more events are written.
    required_failed: Cell<bool>,
}

impl Emitter {
    fn new(runtime: Arc<Runtime>, route: usize, labels: &[SectionLabel]) -> Self {
        let bound = labels.len() + 1;
        Emitter {
            runtime,
            route,
            queue: Cell::new(VecDeque::with_capacity(bound)),
            bound,
            required_left: Cell::new(labels.iter().filter(|l| l.required).count()),
            required_failed: Cell::new(false),
        }
    }

    /// The route it writes for.
    fn route(&self) -> Option<&RouteRuntime> {
        self.runtime.routes.get(self.route)
    }

    fn push(&self, event: Bytes) {
        let mut queue = self.queue.take();
        if queue.len() < self.bound {
            queue.push_back(event);
        } else {
            // Each section is final once: this would be a coordinator bug.
            tracing::error!("streamed page: more events than sections, one dropped");
        }
        self.queue.set(queue);
    }

    fn pop(&self) -> Option<Bytes> {
        let mut queue = self.queue.take();
        let event = queue.pop_front();
        self.queue.set(queue);
        event
    }
}

impl SectionEvents for Emitter {
    const LISTENS: bool = true;

    fn section(&self, slot: usize, reply: &SectionReply) {
        let Some(label) = self.route().and_then(|r| r.labels.get(slot)) else {
            return;
        };
        if label.required {
            self.required_left.set(self.required_left.get().saturating_sub(1));
            if reply.body.is_none() {
                self.required_failed.set(true);
            }
        }
        if !self.required_failed.get() {
            self.push(section_event(label, reply));
        }
    }
}

/// `event: section` / `data: {"name": .., "body": .., "meta": {..}}`.
pub fn section_event(label: &SectionLabel, reply: &SectionReply) -> Bytes {
    // The label's key is the quoted name followed by `:`.
    let name = label.key.strip_suffix(':').unwrap_or(&label.key);
    let body_len = reply.body.as_ref().map_or(4, Bytes::len);
    let mut out = BytesMut::with_capacity(64 + name.len() + body_len + page::META_BYTES);
    out.put_slice(b"event: section\ndata: {\"name\":");
    out.put_slice(name.as_bytes());
    out.put_slice(b",\"body\":");
    match &reply.body {
        Some(body) => put_data(&mut out, body),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"meta\":");
    page::put_meta(&mut out, reply);
    out.put_slice(b"}\n\n");
    out.freeze()
}

/// `event: page` / `data: {"_mosaic": {..}}`.
pub fn page_event(
    labels: &[SectionLabel],
    replies: &[SectionReply],
    complete: bool,
    elapsed: Duration,
) -> Bytes {
    let names: usize = labels.iter().map(|l| l.key.len()).sum();
    let mut out = BytesMut::with_capacity(96 + names + labels.len() * page::META_BYTES);
    out.put_slice(b"event: page\ndata: {\"_mosaic\":");
    page::put_envelope(&mut out, labels, replies, complete, elapsed);
    out.put_slice(b"}\n\n");
    out.freeze()
}

/// Writes a body as event data: each line break (CR, LF or CRLF) continues
/// it on a new `data:` line.
fn put_data(out: &mut BytesMut, body: &[u8]) {
    let mut rest = body;
    while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
        out.put_slice(&rest[..at]);
        out.put_slice(b"\ndata: ");
        let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    out.put_slice(rest);
}

/// The response body: the events as they are written, then the end.
struct SectionStream {
    emitter: Rc<Emitter>,
    /// Drives the coordinator until every section is final; `None` once
    /// it has (then the page event is in the queue).
    driver: Option<Driver>,
    /// The access line, written with the page event (or when the client
    /// leaves first); `None` once written or when the log is off.
    access: Option<DeferredAccess>,
    /// When the request arrived.
    arrived: Instant,
}

impl SectionStream {
    /// Every section is final: the page event, the route's page counters
    /// and the access line.
    fn finish(&mut self, replies: &[SectionReply]) {
        let Some(route) = self.emitter.route() else { return };
        let complete = replies.iter().all(SectionReply::is_complete);
        let elapsed = self.arrived.elapsed();
        self.emitter.push(page_event(&route.labels, replies, complete, elapsed));
        if complete {
            route.responses.complete_page();
        }
        route.responses.duration.record(elapsed);
        if let Some(access) = self.access.take() {
            let log = PageLog::of(route, replies, complete);
            access.write(StatusCode::OK.as_u16(), Some((log.complete, &log.degraded)), None);
        }
    }
}

impl Stream for SectionStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.emitter.pop() {
                return Poll::Ready(Some(Ok(event)));
            }
            let Some(driver) = this.driver.as_mut() else { return Poll::Ready(None) };
            match driver.as_mut().poll(cx) {
                Poll::Ready(replies) => {
                    this.driver = None;
                    this.finish(&replies);
                }
                // A section that finished in this poll is sent now; the
                // others wake the connection, which polls this body again.
                Poll::Pending => {
                    return this
                        .emitter
                        .pop()
                        .map_or(Poll::Pending, |event| Poll::Ready(Some(Ok(event))))
                }
            }
        }
    }
}

impl Drop for SectionStream {
    fn drop(&mut self) {
        // Dropped before its page event: the client went away. The calls
        // still in flight are dropped with the driver.
        if let Some(access) = self.access.take() {
            if let Some(route) = self.emitter.route() {
                route.responses.duration.record(self.arrived.elapsed());
            }
            access.write(StatusCode::OK.as_u16(), None, Some("client_closed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Source;

    #[test]
    fn accept_counts_event_stream_among_other_types_unless_q_is_zero() {
        for (accept, wanted) in [
            ("text/event-stream", true),
            ("TEXT/Event-Stream", true),
            ("application/json, text/event-stream", true),
            ("text/html;level=1, text/event-stream;q=0.2", true),
            ("text/event-stream ; charset=utf-8 ; q=1.0", true),
            ("text/event-stream;q=0.001", true),
            ("text/event-stream;q=0", false),
            ("text/event-stream;Q=0.0", false),
            ("text/event-stream; q=0.000", false),
            ("*/*", false),
            ("text/*", false),
            ("text/event-streams", false),
            ("application/json", false),
            ("", false),
        ] {
            assert_eq!(accepts_event_stream(accept.as_bytes()), wanted, "{accept:?}");
        }
    }

    #[test]
    fn any_accept_header_counts() {
        let mut headers = HeaderMap::new();
        assert!(!wants_event_stream(&headers));
        headers.append(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_event_stream(&headers));
        headers.append(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        assert!(wants_event_stream(&headers));
    }

    fn reply(body: Option<&'static str>) -> SectionReply {
        SectionReply {
            source: Source::Live,
            status: Some(200),
            body: body.map(|b| Bytes::from_static(b.as_bytes())),
            error: None,
            age: None,
            tier: None,
            elapsed: Duration::from_millis(12),
        }
    }

    #[test]
    fn a_section_event_embeds_the_body_and_the_page_meta() {
        let label = SectionLabel::new("price", false);
        let event = section_event(&label, &reply(Some("{\"amount\": 1999}")));
        assert_eq!(
            &event[..],
            b"event: section\ndata: {\"name\":\"price\",\"body\":{\"amount\": 1999},\
              \"meta\":{\"source\":\"live\",\"status\":200,\"ms\":12}}\n\n"
        );
        let event = section_event(&label, &reply(None));
        assert!(event.starts_with(b"event: section\ndata: {\"name\":\"price\",\"body\":null,"));
    }

    #[test]
    fn line_breaks_in_a_body_continue_on_data_lines() {
        let mut out = BytesMut::new();
        put_data(&mut out, b"{\n \"a\": 1,\r\n \"b\":\r2}\n");
        assert_eq!(&out[..], b"{\ndata:  \"a\": 1,\ndata:  \"b\":\ndata: 2}\ndata: ");
        let mut out = BytesMut::new();
        put_data(&mut out, b"[1, 2]");
        assert_eq!(&out[..], b"[1, 2]");
    }

    #[test]
    fn the_page_event_is_the_envelope() {
        let labels = vec![SectionLabel::new("product", true), SectionLabel::new("price", false)];
        let replies = vec![
            reply(Some("{}")),
            SectionReply::none(crate::backend::FetchError::Timeout, Duration::ZERO),
        ];
        let event = page_event(&labels, &replies, false, Duration::from_millis(7));
        let text = std::str::from_utf8(&event).expect("utf8");
        let data = text
            .strip_prefix("event: page\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one data line");
        let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
        assert_eq!(v["_mosaic"]["complete"], false);
        assert_eq!(v["_mosaic"]["elapsed_ms"], 7);
        assert_eq!(v["_mosaic"]["sections"]["price"]["error"], "timeout");
        assert_eq!(v["_mosaic"]["sections"]["product"]["source"], "live");
    }
}
