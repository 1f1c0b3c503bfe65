//! The request headers the edge itself reads, gathered in one walk over the
//! client's headers.
//!
//! Every request needs its size, `X-Request-Id` and trace context, and a
//! proxied one also `Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection` and `X-Forwarded-For`. Looked up one by one, each name was
//! parsed and hashed into actix's `HeaderMap` (about a tenth of what mosaic
//! spends of its own on a proxied request, by callgrind); one pass compares
//! each header's name once instead.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::HttpRequest;

/// What the edge reads from one request's headers. Where a header is sent
/// more than once, the first value is kept (as `HeaderMap::get` returns).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientHeaders<'a> {
    /// The size of the request line and headers as sent (near enough:
    /// names, values and separators), for SPEC.md's header limit.
    pub size: usize,
    /// `X-Request-Id`.
    pub request_id: Option<&'a HeaderValue>,
    /// `traceparent`.
    pub traceparent: Option<&'a HeaderValue>,
    /// `tracestate`.
    pub tracestate: Option<&'a HeaderValue>,
    /// `Host`.
    pub host: Option<&'a HeaderValue>,
    /// `Content-Length`.
    pub content_length: Option<&'a HeaderValue>,
    /// Whether a `Transfer-Encoding` was sent.
    pub transfer_encoding: bool,
    /// Whether a `Connection` was sent (its tokens are read only then).
    pub connection: bool,
    /// `X-Forwarded-For`.
    pub forwarded_for: Option<&'a HeaderValue>,
}

impl<'a> ClientHeaders<'a> {
    /// Reads `req`'s request line size and headers.
    pub fn of(req: &'a HttpRequest) -> Self {
        let uri = req.uri();
        let line = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1) + 16;
        Self::read(req.headers(), line)
    }

    /// Reads `headers`; `line` is the size of the request line.
    pub fn read(headers: &'a HeaderMap, line: usize) -> Self {
        let mut seen = ClientHeaders { size: line, ..ClientHeaders::default() };
        for (name, value) in headers {
            seen.size += name.as_str().len() + value.len() + 4;
            // Standard names compare as a tag, the rest by their text.
            if name == header::HOST {
                seen.host.get_or_insert(value);
            } else if name == header::CONTENT_LENGTH {
                seen.content_length.get_or_insert(value);
            } else if name == header::TRANSFER_ENCODING {
                seen.transfer_encoding = true;
            } else if name == header::CONNECTION {
                seen.connection = true;
            } else {
                let slot = match name.as_str() {
                    "x-request-id" => &mut seen.request_id,
                    "traceparent" => &mut seen.traceparent,
                    "tracestate" => &mut seen.tracestate,
                    "x-forwarded-for" => &mut seen.forwarded_for,
                    _ => continue,
                };
                slot.get_or_insert(value);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn reads_what_get_would_and_the_size() {
        let headers = map(&[
            ("Host", "shop.example"),
            ("X-Request-Id", "first"),
            ("x-request-id", "second"),
            ("TraceParent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "k=v"),
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("connection", "x-secret"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept", "application/json"),
        ]);
        let seen = ClientHeaders::read(&headers, 20);
        for (name, got) in [
            ("x-request-id", seen.request_id),
            ("traceparent", seen.traceparent),
            ("tracestate", seen.tracestate),
            ("host", seen.host),
            ("content-length", seen.content_length),
            ("x-forwarded-for", seen.forwarded_for),
        ] {
            assert_eq!(got, headers.get(name), "{name}");
        }
        assert_eq!(seen.request_id.unwrap(), "first");
        assert!(seen.transfer_encoding && seen.connection);
        let size = headers.iter().fold(20, |sum, (n, v)| sum + n.as_str().len() + v.len() + 4);
        assert_eq!(seen.size, size);
    }

    #[test]
    fn absent_headers_are_none() {
        let headers = map(&[("accept", "*/*")]);
        let seen = ClientHeaders::read(&headers, 0);
        assert!(seen.request_id.is_none() && seen.traceparent.is_none() && seen.host.is_none());
        assert!(!seen.transfer_encoding && !seen.connection);
        assert_eq!(seen.size, "accept".len() + 3 + 4);
    }
}
