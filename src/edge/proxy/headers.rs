//! The header lines of a proxied exchange, both ways: what the service is
//! sent (the client's end-to-end headers, less its forwarding claims, plus
//! what mosaic saw) and what the client gets back (the service's lines as
//! they came, less hop-by-hop ones).

use actix_http::RawHeaderLines;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::HttpRequest;

use crate::backend::client::forward::Incoming;
use crate::edge::client_headers::ClientHeaders;
use crate::edge::guard::Identity;
use crate::http1::fields::{is_hop_by_hop, parse_content_length, tokens};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Client headers that claim something about the request's path through
/// proxies: mosaic sets its own (from what it saw) instead.
fn is_forwarding_claim(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded" | "x-forwarded-host" | "x-forwarded-proto" | "x-forwarded-for" | "x-real-ip"
    )
}

/// Appends `name: value\r\n` to a request head being built.
fn push_line(lines: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    lines.extend_from_slice(name.as_str().as_bytes());
    lines.extend_from_slice(b": ");
    lines.extend_from_slice(value);
    lines.extend_from_slice(b"\r\n");
}

/// The header lines sent to the service: the client's, less hop-by-hop
/// ones and its own forwarding claims, plus `X-Forwarded-*` and `X-Real-IP`
/// as mosaic saw the request and the per-request headers (request id, trace
/// context), which replace any the client sent. `client.host` must have
/// passed [`is_valid_host`].
pub fn outgoing_header_lines(
    req: &HttpRequest,
    client: &ClientHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
    identity: Option<&Identity<'_>>,
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
            || is_forwarding_claim(name)
            || is_hop_by_hop(name.as_str().as_bytes(), listed.clone())
            || per_request.iter().any(|(n, _)| n == name)
            || identity.is_some_and(|identity| identity.withholds(name))
        {
            continue;
        }
        push_line(&mut lines, name, value.as_bytes());
    }
    // X-Forwarded-For is appended to; the rest is replaced by what mosaic saw.
    let previous =
        client.forwarded_for.map(HeaderValue::as_bytes).filter(|previous| !previous.is_empty());
    let peer = req.peer_addr().map(|addr| addr.ip());
    // X-Real-IP is the client as the gate found it (behind trusted
    // proxies, not the last proxy); X-Forwarded-For gains the peer.
    let real_ip = identity.and_then(|identity| identity.client_ip).or(peer);
    if previous.is_some() || peer.is_some() {
        lines.extend_from_slice(X_FORWARDED_FOR.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        if let Some(previous) = previous {
            lines.extend_from_slice(previous);
            if peer.is_some() {
                lines.extend_from_slice(b", ");
            }
        }
        let at = lines.len();
        if let Some(ip) = peer {
            write_ip(&mut lines, ip);
        }
        let ip = at..lines.len();
        lines.extend_from_slice(b"\r\n");
        if let Some(real_ip) = real_ip {
            lines.extend_from_slice(X_REAL_IP.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            if Some(real_ip) == peer {
                lines.extend_from_within(ip);
            } else {
                write_ip(&mut lines, real_ip);
            }
            lines.extend_from_slice(b"\r\n");
        }
    }
    // The scheme of the connection we accepted, never the client's own
    // `X-Forwarded-Proto` or `Forwarded` claim (which `connection_info` trusts).
    let scheme: &[u8] = if req.app_config().secure() { b"https" } else { b"http" };
    push_line(&mut lines, &X_FORWARDED_PROTO, scheme);
    // HTTP/2 names the host in `:authority` (actix puts it in the URI)
    // and sends no `Host`; its value is held to the same shape.
    let host = client.host.map(HeaderValue::as_bytes).or_else(|| {
        req.uri().authority().map(|a| a.as_str().as_bytes()).filter(|a| is_valid_host(a))
    });
    if let Some(host) = host {
        push_line(&mut lines, &X_FORWARDED_HOST, host);
    }
    for (name, value) in per_request {
        push_line(&mut lines, name, value.as_bytes());
    }
    for (name, value) in identity.map_or(&[][..], |identity| identity.headers()) {
        push_line(&mut lines, name, value.as_bytes());
    }
    lines
}

/// Whether a `Host` value is `host[:port]` (RFC 9110 section 7.2): a
/// registered name or IPv4 address of letters, digits, `-`, `.`, `_`, `~`,
/// or an IPv6 address in brackets; a port of 1-5 digits up to 65535.
/// Anything else would be passed on as `X-Forwarded-Host` to services that
/// build links and redirects from it.
pub fn is_valid_host(value: &[u8]) -> bool {
    let name_len = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else { return false };
        let address = &value[1..end];
        let valid = !address.is_empty()
            && address.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !valid {
            return false;
        }
        end + 1
    } else {
        let name_len =
            value.iter().position(|&b| !HOST_BYTES[usize::from(b)]).unwrap_or(value.len());
        if name_len == 0 {
            return false;
        }
        name_len
    };
    match &value[name_len..] {
        [] => true,
        [b':', digits @ ..] if (1..=5).contains(&digits.len()) => {
            let mut port: u32 = 0;
            for &b in digits {
                if !b.is_ascii_digit() {
                    return false;
                }
                port = port * 10 + u32::from(b - b'0');
            }
            port <= 65_535
        }
        _ => false,
    }
}

/// The bytes of a registered name or IPv4 address in `Host`: letters,
/// digits, `-`, `.`, `_`, `~` (one table look-up a byte: `Host` is checked
/// on every proxied request).
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

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

/// The service's header lines to send on, and its `Content-Length`.
///
/// The lines go out as they came (`RawHeaderLines`, a patch to the vendored
/// actix-http) rather than through actix's `HeaderMap`: building, hashing
/// and re-encoding a name and value per header was the largest cost mosaic
/// added to a proxied request. The response decoder checked every field.
pub fn raw_header_lines(incoming: &Incoming) -> (RawHeaderLines, Option<u64>) {
    let listed = incoming
        .fields()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .map(|(_, value)| value);
    // Services rarely list headers of their own in `Connection` (beyond
    // `keep-alive` or `close`); checking once spares a scan of every field
    // for every field.
    let lists_headers = listed.clone().any(|value| {
        tokens(value).any(|token| {
            !token.is_empty()
                && !token.eq_ignore_ascii_case(b"keep-alive")
                && !token.eq_ignore_ascii_case(b"close")
        })
    });
    let mut lines = RawHeaderLines::with_capacity(incoming.head.len());
    let mut length = None;
    for (name, value) in incoming.fields() {
        if name.eq_ignore_ascii_case(b"content-length") {
            // Checked by the decoder: digits only, every copy the same.
            length = parse_content_length(value);
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
        // The decoder let only valid fields through, and the framing ones
        // were dropped above: a refusal here cannot happen, and would only
        // drop the line.
        let _ = lines.push(name, value);
    }
    (lines, length)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::backend::client::forward::IncomingBody;
    use crate::http1::response::RawField;

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
            fields.push(RawField {
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
    fn header_lines_that_could_split_or_reframe_a_response_are_refused() {
        use actix_http::InvalidHeaderLine;
        let mut lines = RawHeaderLines::with_capacity(64);
        let refused = [
            (&b""[..], &b"x"[..], InvalidHeaderLine::Name),
            (b"X A", b"x", InvalidHeaderLine::Name),
            (b"X:A", b"x", InvalidHeaderLine::Name),
            (b"X-A", b"1\r\nSet-Cookie: stolen=1", InvalidHeaderLine::Value),
            (b"X-A", b"1\nX-B: 2", InvalidHeaderLine::Value),
            (b"X-A", b"a\0b", InvalidHeaderLine::Value),
            (b"X-A", b"a\x7fb", InvalidHeaderLine::Value),
            (b"Content-Length", b"5", InvalidHeaderLine::Framing),
            (b"transfer-encoding", b"chunked", InvalidHeaderLine::Framing),
            (b"CONNECTION", b"close", InvalidHeaderLine::Framing),
        ];
        for (name, value, why) in refused {
            assert_eq!(lines.push(name, value), Err(why), "{name:?}: {value:?}");
        }
        assert!(lines.lines().is_empty(), "a refused line writes nothing");
        // Tabs, spaces and obs-text are field content.
        assert_eq!(lines.push(b"X-A", b"a\tb c\xe9"), Ok(()));
        assert_eq!(lines.lines(), b"X-A: a\tb c\xe9\r\n");
    }

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        for good in [
            &b"shop.example"[..],
            b"shop.example:8443",
            b"127.0.0.1",
            b"127.0.0.1:8080",
            b"[::1]",
            b"[::1]:8080",
            b"[2001:db8::7]:443",
            b"my_host-1.local",
            b"localhost:1",
            b"x:65535",
        ] {
            assert!(is_valid_host(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b""[..],
            b"a b",
            b"x/y",
            b"evil@x",
            b"[::1",
            b"[::1]x",
            b"[]",
            b"[::g]",
            b"a:99999x",
            b"a:65536",
            b"a:",
            b":80",
            b"a:b:c",
            b"a\tb",
            b"h\xc3\xa9",
            b"x,y",
        ] {
            assert!(!is_valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
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
