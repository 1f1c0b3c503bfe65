//! Proxy routes (`[[proxy]]`): any method, bodies streamed both ways.
//!
//! The backend's breaker, bulkhead and per-attempt timeout apply (the timeout
//! bounds the wait for the response headers). Hop-by-hop headers are dropped
//! and `X-Forwarded-*` set. Request bodies over `max_body` get 413, whether
//! announced by `Content-Length` or discovered while streaming. Only
//! idempotent requests without a body are retried on another instance.

use actix_http::RawHeaderLines;
use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::client_headers::ClientHeaders;
use super::error_response;
use crate::backend::bulkhead::BulkheadSlot;
use crate::backend::client;
use crate::backend::client::forward::{
    ForwardError, Incoming, IncomingBody, Limits, Outgoing, RequestBody,
};
use crate::backend::{Admission, FetchError};
use crate::config::ServerConfig;
use crate::runtime::ProxyRuntime;

/// Whether `path` falls under `prefix`, at a segment boundary:
/// `/api/cart/` matches `/api/cart` and `/api/cart/x`, never `/api/cartoon`.
pub fn matches(prefix: &str, path: &str) -> bool {
    let base = prefix.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The service path: the prefix replaced by `rewrite` (if any), query kept.
pub fn target_path(prefix: &str, rewrite: Option<&str>, path: &str, query: &str) -> String {
    let base = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(base).unwrap_or(path);
    let (head, tail) = match rewrite {
        Some(rewrite) => (rewrite.trim_end_matches('/'), rest),
        None => (path, ""),
    };
    let mut out = String::with_capacity(head.len() + tail.len() + 1 + query.len() + 1);
    out.push_str(head);
    out.push_str(tail);
    if out.is_empty() {
        out.push('/');
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `.` or `..` segments, raw or percent-encoded: refused, so a prefix can
/// never be escaped on a backend that normalises paths.
pub fn has_dot_segment(path: &str) -> bool {
    // Most paths have neither: one pass over the bytes settles those.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    // A dot segment is at most two dots, each `.` or `%2e`: six bytes.
    path.split('/').any(|segment| {
        if segment.is_empty() || segment.len() > 6 {
            return false;
        }
        let mut dots = 0;
        let mut rest = segment.as_bytes();
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots <= 2
    })
}

/// RFC 9110's hop-by-hop headers, and `Proxy-Connection`.
const HOP_BY_HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether the header `name` (any case) is hop-by-hop: one of RFC 9110's,
/// or listed in a `Connection` header (`connection`: the values of those
/// headers).
fn is_hop_by_hop<'a>(name: &[u8], mut connection: impl Iterator<Item = &'a [u8]>) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
        || connection.any(|value| {
            // No allocation: this runs for every header of every proxied
            // message.
            value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
        })
}

fn proxy_error(status: StatusCode, error: FetchError, backend: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": error.as_str(), "backend": backend });
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.to_string())
}

fn status_for(error: FetchError) -> StatusCode {
    match error {
        FetchError::CircuitOpen | FetchError::Rejected | FetchError::NoInstances => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        FetchError::Timeout | FetchError::Deadline => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Appends `name: value\r\n` to a request head being built.
fn push_line(lines: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    lines.extend_from_slice(name.as_str().as_bytes());
    lines.extend_from_slice(b": ");
    lines.extend_from_slice(value);
    lines.extend_from_slice(b"\r\n");
}

/// The header lines sent to the service: the client's, less hop-by-hop
/// ones and its own forwarding claims, plus `X-Forwarded-*` as mosaic saw
/// the request and the per-request headers (request id, trace context),
/// which replace any the client sent.
fn outgoing_header_lines(
    req: &HttpRequest,
    client: &ClientHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
) -> Vec<u8> {
    let mut lines = Vec::with_capacity(512);
    // No `Connection` sent (HTTP/1.1's usual case): no lookup for it.
    let connection =
        if client.connection { req.headers().get_all(header::CONNECTION) } else { [].iter() };
    let listed = connection.map(HeaderValue::as_bytes);
    for (name, value) in req.headers() {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || matches!(
                name.as_str(),
                "forwarded" | "x-forwarded-host" | "x-forwarded-proto" | "x-forwarded-for"
            )
            || is_hop_by_hop(name.as_str().as_bytes(), listed.clone())
            || per_request.iter().any(|(n, _)| n == name)
        {
            continue;
        }
        push_line(&mut lines, name, value.as_bytes());
    }
    // X-Forwarded-For is appended to; Forwarded, X-Forwarded-Host and
    // -Proto are replaced by what mosaic saw.
    let previous =
        client.forwarded_for.map(HeaderValue::as_bytes).filter(|previous| !previous.is_empty());
    let peer = req.peer_addr().map(|addr| addr.ip());
    if previous.is_some() || peer.is_some() {
        lines.extend_from_slice(X_FORWARDED_FOR.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        if let Some(previous) = previous {
            lines.extend_from_slice(previous);
            if peer.is_some() {
                lines.extend_from_slice(b", ");
            }
        }
        if let Some(ip) = peer {
            write_ip(&mut lines, ip);
        }
        lines.extend_from_slice(b"\r\n");
    }
    // The scheme of the connection we accepted, never the client's own
    // `X-Forwarded-Proto` or `Forwarded` claim (which `connection_info` trusts).
    let scheme: &[u8] = if req.app_config().secure() { b"https" } else { b"http" };
    push_line(&mut lines, &X_FORWARDED_PROTO, scheme);
    if let Some(host) = client.host {
        push_line(&mut lines, &X_FORWARDED_HOST, host.as_bytes());
    }
    for (name, value) in per_request {
        push_line(&mut lines, name, value.as_bytes());
    }
    lines
}

/// An IP address as text; IPv4 without the formatting machinery (it is on
/// every proxied request).
fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + (octet / 10) % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwards one request that arrived at `arrived`.
pub async fn forward(
    req: &HttpRequest,
    client: &ClientHeaders<'_>,
    payload: web::Payload,
    proxy: &ProxyRuntime,
    per_request: &[(HeaderName, HeaderValue)],
    server: &ServerConfig,
    arrived: Instant,
) -> HttpResponse {
    let max_body = server.max_body;
    let backend = &proxy.backend;
    let name = backend.name();
    let path = req.uri().path();
    if has_dot_segment(path) {
        return error_response(StatusCode::BAD_REQUEST, "bad_request", Some("dot segment in path"));
    }
    let declared_len = match client.content_length {
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    Some("bad content-length"),
                )
            }
        },
        None => None,
    };
    if declared_len.is_some_and(|n| n > max_body) {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None);
    }
    let chunked = client.transfer_encoding;
    let body_framing = match (chunked, declared_len) {
        (true, _) => RequestBody::Chunked,
        (false, Some(n)) => RequestBody::Length(n),
        (false, None) => RequestBody::None,
    };
    let has_body = chunked || declared_len.is_some_and(|n| n > 0);
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let head_request = *req.method() == Method::HEAD;
    let target = target_path(
        &proxy.config.prefix,
        proxy.config.rewrite.as_deref(),
        path,
        req.uri().query().unwrap_or(""),
    );

    let Admission { instances, mut permit, slot } = match backend.admit() {
        Ok(admission) => admission,
        Err(error) => return proxy_error(status_for(error), error, name),
    };

    let header_lines = outgoing_header_lines(req, client, per_request);
    let outgoing = Outgoing {
        method: req.method().as_str(),
        target: &target,
        header_lines: &header_lines,
        body: body_framing,
    };
    let limits =
        Limits { timeout: backend.config().timeout, client_idle: server.client_timeout, max_body };
    // A body is streamed once, so only a bodiless idempotent request can be
    // repeated (on another instance, or on a new connection when a pooled
    // one turns out to be closed).
    let repeatable = idempotent && !has_body;
    let mut retries_left = backend.retry_budget(&instances, repeatable);
    let mut payload = has_body.then_some(payload);
    let mut previous = None;
    // The first attempt starts when the request arrived (one clock read
    // less per request); a retry reads the clock again.
    let mut started = arrived;
    loop {
        let Some(index) = backend.balancer.pick(&instances, previous) else {
            return proxy_error(StatusCode::SERVICE_UNAVAILABLE, FetchError::NoInstances, name);
        };
        let result = client::forward::forward(
            &instances[index].address,
            &outgoing,
            payload.take(),
            limits,
            repeatable,
            started,
        )
        .await;
        // The client's fault, not the backend's: record nothing.
        let outcome = match result {
            Err(ForwardError::ClientStalled) => {
                drop(permit);
                return error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout", None);
            }
            Err(ForwardError::ClientTooLarge) => {
                drop(permit);
                return error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None);
            }
            Err(ForwardError::ClientBroken) => {
                drop(permit);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    Some("request body incomplete"),
                );
            }
            Err(ForwardError::Upstream(error)) => Err(error),
            Ok(incoming) => {
                let server_error = (500..600).contains(&incoming.status);
                Ok((incoming, server_error))
            }
        };
        let fault = match &outcome {
            Err(e) => e.is_upstream_fault(),
            Ok((_, server_error)) => *server_error,
        };
        backend.breaker.record(permit, fault);
        let retryable = match &outcome {
            Err(e) => e.is_retryable(),
            Ok((_, server_error)) => *server_error,
        };
        match &outcome {
            Err(error) => backend.stats.failed(*error, started.elapsed()),
            Ok((_, true)) => backend.stats.failed(FetchError::Status5xx, started.elapsed()),
            Ok((incoming, false)) => backend.stats.answered(
                incoming.status,
                incoming.answered_at.saturating_duration_since(started.into_std()),
            ),
        }
        if retryable {
            if let Some(next) = backend.permit_retry(&mut retries_left) {
                permit = next;
                previous = Some(index);
                started = Instant::now();
                continue;
            }
        }
        let (incoming, _) = match outcome {
            Ok(ok) => ok,
            Err(error) => return proxy_error(status_for(error), error, name),
        };
        return relay(incoming, slot, head_request, name);
    }
}

/// Sends the service's answer on, hop-by-hop headers dropped; a streamed
/// body holds the bulkhead slot until its last byte.
///
/// The service's header lines go out as they came (`RawHeaderLines`, a
/// patch to the vendored actix-http) rather than through actix's
/// `HeaderMap`: building, hashing and re-encoding a name and value per
/// header was the largest cost mosaic added to a proxied request.
fn relay(
    incoming: Incoming,
    slot: BulkheadSlot,
    head_request: bool,
    backend: &str,
) -> HttpResponse {
    let Ok(status) = StatusCode::from_u16(incoming.status) else {
        return proxy_error(StatusCode::BAD_GATEWAY, FetchError::Connect, backend);
    };
    let (lines, length) = raw_header_lines(&incoming);
    let mut builder = HttpResponse::build(status);
    let mut response = match incoming.body {
        IncomingBody::Empty => match length {
            // The length of what a GET would have answered.
            Some(len) if head_request => builder.body(SizedStream::new(
                len,
                futures_util::stream::empty::<Result<Bytes, std::io::Error>>(),
            )),
            Some(len) if status == StatusCode::NOT_MODIFIED => {
                builder.insert_header((header::CONTENT_LENGTH, len));
                builder.finish()
            }
            _ => builder.finish(),
        },
        IncomingBody::Full(body) => builder.body(body),
        IncomingBody::Stream(stream, declared) => {
            let body = stream.map(move |chunk| {
                let _hold = &slot;
                chunk
            });
            match declared {
                Some(len) => builder.body(SizedStream::new(len, body)),
                None => builder.streaming(body),
            }
        }
    };
    response.head_mut().set_raw_header_lines(lines);
    response
}

/// The service's header lines to send on, and its `Content-Length`.
fn raw_header_lines(incoming: &Incoming) -> (RawHeaderLines, Option<u64>) {
    let listed = incoming
        .fields()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .map(|(_, value)| value);
    // Services rarely list headers of their own in `Connection` (beyond
    // `keep-alive` or `close`); checking once spares a scan of every field
    // for every field.
    let lists_headers = listed.clone().any(|value| {
        value.split(|&b| b == b',').any(|token| {
            let token = token.trim_ascii();
            !token.is_empty()
                && !token.eq_ignore_ascii_case(b"keep-alive")
                && !token.eq_ignore_ascii_case(b"close")
        })
    });
    let mut lines = RawHeaderLines::with_capacity(incoming.head.len());
    let mut length = None;
    for (name, value) in incoming.fields() {
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<u64>().ok());
            continue;
        }
        // mosaic answers with its own request id (set by the edge).
        let hop_by_hop = if lists_headers {
            is_hop_by_hop(name, listed.clone())
        } else {
            is_hop_by_hop(name, std::iter::empty())
        };
        if hop_by_hop || name.eq_ignore_ascii_case(b"x-request-id") {
            continue;
        }
        lines.push(name, value);
    }
    (lines, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_and_connection_tokens() {
        let none: [&[u8]; 0] = [];
        assert!(is_hop_by_hop(b"keep-alive", none.into_iter()));
        assert!(is_hop_by_hop(b"Transfer-Encoding", none.into_iter()));
        assert!(is_hop_by_hop(b"TE", none.into_iter()));
        assert!(!is_hop_by_hop(b"x-secret", none.into_iter()));
        assert!(!is_hop_by_hop(b"tea", none.into_iter()));
        // Tokens in any case, with spaces, across several Connection headers.
        let values: [&[u8]; 2] = [b"keep-alive , X-Secret", b"  X-Other"];
        assert!(is_hop_by_hop(b"x-secret", values.into_iter()));
        assert!(is_hop_by_hop(b"X-Other", values.into_iter()));
        assert!(!is_hop_by_hop(b"x-secretive", values.into_iter()));
        assert!(!is_hop_by_hop(b"x-foo", values.into_iter()));
    }

    /// An answer whose fields are found in `head` the way the client's
    /// parser records them (name and trimmed value as ranges).
    fn incoming(head: &'static [u8]) -> Incoming {
        let mut fields = Vec::new();
        let mut at = head.iter().position(|&b| b == b'\n').unwrap() + 1;
        while let Some(len) = head[at..].windows(2).position(|w| w == b"\r\n") {
            if len == 0 {
                break;
            }
            let line = &head[at..at + len];
            let colon = line.iter().position(|&b| b == b':').unwrap();
            let value = line[colon + 1..].trim_ascii();
            let value_start = at + (value.as_ptr() as usize - line.as_ptr() as usize);
            fields.push(client::wire::RawField {
                name: at..at + colon,
                value: value_start..value_start + value.len(),
            });
            at += len + 2;
        }
        Incoming {
            status: 200,
            fields,
            head: Bytes::from_static(head),
            body: IncomingBody::Empty,
            answered_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn relayed_lines_are_the_end_to_end_headers() {
        let answer = incoming(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
              Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\
              Set-Cookie: b=2\r\nX-Request-ID: theirs\r\nTransfer-Encoding: chunked\r\n\
              ETag: \"v1\"\r\n\r\n",
        );
        let (raw, length) = raw_header_lines(&answer);
        assert_eq!(length, Some(2));
        assert!(raw.has_date());
        assert_eq!(
            std::str::from_utf8(raw.lines()).unwrap(),
            "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             ETag: \"v1\"\r\n"
        );
        // What the HTTP/2 path reads back from them.
        let fields: Vec<_> = raw.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"Date"[..], &b"Mon, 01 Jan 2024 00:00:00 GMT"[..]),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
                (b"ETag", b"\"v1\""),
            ]
        );
        // Without a listing in `Connection` and without a date.
        let plain = incoming(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-A: 1\r\n\r\n");
        let (raw, length) = raw_header_lines(&plain);
        assert_eq!((raw.lines(), length, raw.has_date()), (&b"X-A: 1\r\n"[..], None, false));
    }

    #[test]
    fn prefix_matches_at_segment_boundary() {
        assert!(matches("/api/cart/", "/api/cart/x"));
        assert!(matches("/api/cart/", "/api/cart"));
        assert!(matches("/api/cart", "/api/cart/x/y"));
        assert!(!matches("/api/cart/", "/api/cartoon"));
        assert!(!matches("/api/cart", "/api/cartoon"));
        assert!(matches("/", "/anything"));
    }

    #[test]
    fn rewrite_replaces_prefix_and_keeps_query() {
        assert_eq!(
            target_path("/api/cart/", Some("/cart/"), "/api/cart/items", "a=1"),
            "/cart/items?a=1"
        );
        assert_eq!(target_path("/api/cart/", Some("/cart/"), "/api/cart", ""), "/cart");
        assert_eq!(target_path("/api/", None, "/api/x", ""), "/api/x");
        assert_eq!(target_path("/api/", Some("/"), "/api", ""), "/");
    }

    #[test]
    fn dot_segments_detected() {
        assert!(has_dot_segment("/api/cart/../admin"));
        assert!(has_dot_segment("/api/cart/%2e%2E/admin"));
        assert!(has_dot_segment("/api/cart/.%2e/admin"));
        assert!(has_dot_segment("/api/cart/%2E./admin"));
        assert!(has_dot_segment("/api/./x"));
        assert!(has_dot_segment("/api/cart/.."));
        assert!(!has_dot_segment("/api/cart/...x/a.b"));
        assert!(!has_dot_segment("/api/cart/.../x"));
        assert!(!has_dot_segment("/api/cart/%2e%2e%2e/x"));
        assert!(!has_dot_segment("/api/cart/%2f/x"));
        assert!(!has_dot_segment("/api/cart/.a/x"));
    }

    #[test]
    fn ip_addresses_are_written_as_text() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "::1", "2001:db8::7"] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
    }
}
