//! HTTP/1.1 on one keep-alive connection: writing a section's GET and
//! reading the answer (RFC 9112 message framing).
//!
//! A section call is always the same small exchange: a GET with a handful
//! of headers known to be valid, answered by a status, a few headers and a
//! body that is wanted whole. So this module writes the request head into a
//! reused buffer with one `write`, parses the response head in place with
//! `httparse` (the parser under hyper), and frames the body itself: no
//! header map is built and nothing is copied that the page does not keep.
//! Measured in `BENCHMARKS.md`: this replaced awc, whose client path was a
//! third of the instructions of a page.

use std::io;

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head larger than this is refused (as a broken answer).
const MAX_HEAD: usize = 64 * 1024;
/// Header slots parsed on the stack; more fall back to a heap array.
const HEADER_SLOTS: usize = 32;
/// Header slots of the fallback.
const MAX_HEADERS: usize = 256;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer up to this size (request heads) stays with an idle
/// connection; a larger one (grown by a chunked request body) is released.
const IDLE_WRITE_BUF: usize = 1024;
/// A body up to this size is copied out of the read buffer, which is then
/// reused for the next exchange; larger ones are split off without a copy.
const COPY_BELOW: usize = 16 * 1024;
/// A chunk-size line or trailer section larger than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The connection closed or failed before any byte of the answer: on a
    /// reused connection, the service most likely closed it while idle, and
    /// the request can be sent again on a new one.
    ClosedBeforeAnswer,
    /// The connection failed or closed in the middle of the answer.
    Broken,
    /// The answer is not valid HTTP/1.x.
    Malformed,
    /// The body is larger than allowed.
    TooLarge,
}

impl From<io::Error> for WireError {
    fn from(_: io::Error) -> Self {
        WireError::Broken
    }
}

/// What the answer's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The service asked to close the connection (or spoke HTTP/1.0 without
    /// keep-alive).
    pub close: bool,
}

/// A response header as ranges of the head's bytes: the proxy passes
/// header lines on as they came (httparse checked the name is a token and
/// the value has no CR or LF), without building a `HeaderName` for each.
#[derive(Debug, Clone)]
pub struct RawField {
    /// Where the name is in the head (case as sent).
    pub name: std::ops::Range<usize>,
    /// Where the value is in the head.
    pub value: std::ops::Range<usize>,
}

/// How the body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the service closes the connection.
    UntilClose,
}

/// One open connection to one instance.
#[derive(Debug)]
pub struct Conn {
    pub(super) stream: TcpStream,
    /// Bytes read but not consumed yet; empty between exchanges.
    pub(super) read_buf: BytesMut,
    /// The request head being written; its allocation is reused.
    pub(super) write_buf: Vec<u8>,
    /// Whether an exchange has completed on this connection before.
    pub reused: bool,
}

/// A complete answer: status and body (empty when not asked for).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body, read whole for 2xx; empty otherwise.
    pub body: Bytes,
    /// Whether the connection can serve another exchange.
    pub reusable: bool,
}

impl Conn {
    /// Opens a connection to `host:port`.
    pub async fn connect(address: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        // Requests are written whole; Nagle would only delay them.
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: Vec::with_capacity(512),
            reused: false,
        })
    }

    /// Sends `GET path` and reads the answer. A 2xx body is read whole (at
    /// most `max_body` bytes); any other answer's body is skipped, and the
    /// connection kept only if that body had already arrived.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        max_body: usize,
    ) -> Result<Answer, WireError> {
        write_get_head(&mut self.write_buf, host, path, headers);
        if self.stream.write_all(&self.write_buf).await.is_err() {
            return Err(WireError::ClosedBeforeAnswer);
        }
        let (head, len) = self.read_head(false, None).await?;
        self.read_buf.advance(len);
        let success = (200..300).contains(&head.status);
        if !success {
            let reusable = !head.close && self.skip_buffered_body(head.framing);
            self.reused = true;
            return Ok(Answer { status: head.status, body: Bytes::new(), reusable });
        }
        let body = self.read_body(head.framing, max_body).await?;
        let reusable =
            !head.close && head.framing != Framing::UntilClose && self.read_buf.is_empty();
        self.reused = true;
        Ok(Answer { status: head.status, body, reusable })
    }

    /// Reads until a final (non-1xx) response head is complete; returns it
    /// and its length (the head's bytes are still at the front of
    /// `read_buf`). With `fields`, its headers are collected there.
    pub(super) async fn read_head(
        &mut self,
        head_request: bool,
        mut fields: Option<&mut Vec<RawField>>,
    ) -> Result<(Head, usize), WireError> {
        let mut seen_any = false;
        loop {
            if !self.read_buf.is_empty() {
                seen_any = true;
                if let Some(out) = fields.as_deref_mut() {
                    out.clear();
                }
                let parsed = parse_head(&self.read_buf, head_request, fields.as_deref_mut())?;
                if let Some((head, len)) = parsed {
                    // Interim answers (100 Continue, 103 Early Hints) come
                    // before the real one; 101 would switch protocols, which
                    // a GET without `Upgrade` never asks for.
                    if (100..200).contains(&head.status) && head.status != 101 {
                        self.read_buf.advance(len);
                        continue;
                    }
                    if head.status == 101 {
                        return Err(WireError::Malformed);
                    }
                    return Ok((head, len));
                }
                if self.read_buf.len() > MAX_HEAD {
                    return Err(WireError::Malformed);
                }
            }
            let read = self.read_more().await;
            match read {
                Ok(0) | Err(_) if !seen_any => return Err(WireError::ClosedBeforeAnswer),
                Ok(0) | Err(_) => return Err(WireError::Broken),
                Ok(_) => {}
            }
        }
    }

    /// Gives back the buffers of a connection that has been idle a while
    /// (see `pool`): the next exchange takes fresh ones.
    pub(super) fn release_idle_buffers(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() != 0 {
            self.read_buf = BytesMut::new();
        }
        self.write_buf = Vec::new();
    }

    /// Drops a write buffer grown past a request head (by a chunked request
    /// body) when the connection goes back to the pool.
    pub(super) fn shrink_write_buf(&mut self) {
        if self.write_buf.capacity() > IDLE_WRITE_BUF {
            self.write_buf = Vec::new();
        }
    }

    pub(super) async fn read_more(&mut self) -> io::Result<usize> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
            self.read_buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.read_buf).await
    }

    /// Whether the connection still looks usable: nothing to read and no
    /// end of stream (a service closing an idle connection shows as EOF).
    /// One non-blocking read, for requests that cannot be resent.
    pub(super) fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what is available into `read_buf` (for streamed bodies).
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match self.stream.try_read_buf(&mut self.read_buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return std::task::Poll::Ready(result),
            }
        }
    }

    /// Skips a body that has fully arrived already; `false` when it has not
    /// (the connection is then closed rather than read further).
    fn skip_buffered_body(&mut self, framing: Framing) -> bool {
        match framing {
            Framing::Empty => self.read_buf.is_empty(),
            Framing::Length(n) => {
                if self.read_buf.len() as u64 == n {
                    self.read_buf.clear();
                    true
                } else {
                    false
                }
            }
            Framing::Chunked | Framing::UntilClose => false,
        }
    }

    /// Reads the whole body, at most `limit` bytes.
    async fn read_body(&mut self, framing: Framing, limit: usize) -> Result<Bytes, WireError> {
        match framing {
            Framing::Empty => Ok(Bytes::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| WireError::TooLarge)?;
                if n > limit {
                    return Err(WireError::TooLarge);
                }
                if self.read_buf.len() < n {
                    self.read_buf.reserve(n - self.read_buf.len());
                }
                while self.read_buf.len() < n {
                    if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                        return Err(WireError::Broken);
                    }
                }
                Ok(self.take(n))
            }
            Framing::Chunked => self.read_chunked(limit).await,
            Framing::UntilClose => {
                loop {
                    if self.read_buf.len() > limit {
                        return Err(WireError::TooLarge);
                    }
                    if self.read_more().await? == 0 {
                        break;
                    }
                }
                let n = self.read_buf.len();
                Ok(self.take(n))
            }
        }
    }

    /// The first `n` buffered bytes as the body.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        if n < COPY_BELOW {
            let body = Bytes::copy_from_slice(&self.read_buf[..n]);
            self.read_buf.advance(n);
            body
        } else {
            self.read_buf.split_to(n).freeze()
        }
    }

    async fn read_chunked(&mut self, limit: usize) -> Result<Bytes, WireError> {
        let mut body = BytesMut::new();
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.read_buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.read_buf.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.read_buf.len() <= MAX_CHUNK_LINE => {
                        if self.read_more().await? == 0 {
                            return Err(WireError::Broken);
                        }
                    }
                    _ => return Err(WireError::Malformed),
                }
            };
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(body.freeze());
            }
            let size = usize::try_from(size).map_err(|_| WireError::TooLarge)?;
            if body.len().saturating_add(size) > limit {
                return Err(WireError::TooLarge);
            }
            // The chunk and its closing CRLF.
            while self.read_buf.len() < size + 2 {
                if self.read_more().await? == 0 {
                    return Err(WireError::Broken);
                }
            }
            if &self.read_buf[size..size + 2] != b"\r\n" {
                return Err(WireError::Malformed);
            }
            body.extend_from_slice(&self.read_buf[..size]);
            self.read_buf.advance(size + 2);
        }
    }

    /// Reads past the trailer section that ends a chunked body.
    async fn skip_trailers(&mut self) -> Result<(), WireError> {
        let mut skipped = 0;
        loop {
            if self.read_buf.starts_with(b"\r\n") {
                self.read_buf.advance(2);
                return Ok(());
            }
            match memchr_crlf(&self.read_buf) {
                Some(end) => {
                    skipped += end + 2;
                    self.read_buf.advance(end + 2);
                }
                None => {
                    if skipped + self.read_buf.len() > MAX_CHUNK_LINE {
                        return Err(WireError::Malformed);
                    }
                    if self.read_more().await? == 0 {
                        return Err(WireError::Broken);
                    }
                }
            }
        }
    }
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Headers a section may not set: mosaic frames the request itself.
fn is_reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "accept"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "te"
            | "upgrade"
    )
}

/// `GET path HTTP/1.1` with `Host`, `Accept: application/json` and `headers`.
/// The path is rendered by `template` (percent-encoded, no spaces or control
/// characters) and header values are `HeaderValue`s, so nothing here can
/// split the request.
pub fn write_get_head(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
) {
    out.clear();
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\naccept: application/json\r\n");
    for (name, value) in headers {
        if is_reserved(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether `path` can go on a request line as it is.
pub fn is_request_target(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Parses a response head: `None` while incomplete, else the head and its
/// length in bytes.
fn parse_head(
    buf: &[u8],
    head_request: bool,
    mut fields: Option<&mut Vec<RawField>>,
) -> Result<Option<(Head, usize)>, WireError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            Ok(Some((head_of(&response, buf, head_request, fields)?, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut slots);
            if let Some(out) = fields.as_deref_mut() {
                out.clear();
            }
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    Ok(Some((head_of(&response, buf, head_request, fields)?, len)))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(WireError::Malformed),
            }
        }
        Err(_) => Err(WireError::Malformed),
    }
}

fn head_of(
    response: &httparse::Response<'_, '_>,
    buf: &[u8],
    head_request: bool,
    mut fields: Option<&mut Vec<RawField>>,
) -> Result<Head, WireError> {
    let status = response.code.ok_or(WireError::Malformed)?;
    let http10 = response.version == Some(0);
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut close = false;
    let mut keep_alive = false;
    for header in response.headers.iter() {
        let name = header.name;
        if let Some(out) = fields.as_deref_mut() {
            // Name and value are slices of `buf`: their offsets are
            // differences of addresses within the one buffer.
            let name_start = name.as_ptr() as usize - buf.as_ptr() as usize;
            let value_start = header.value.as_ptr() as usize - buf.as_ptr() as usize;
            out.push(RawField {
                name: name_start..name_start + name.len(),
                value: value_start..value_start + header.value.len(),
            });
        }
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(WireError::Malformed)?;
            // Differing lengths would make the framing ambiguous.
            if length.is_some_and(|l| l != value) {
                return Err(WireError::Malformed);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    let framing = if no_body {
        Framing::Empty
    } else if let Some(coding) = transfer_encoding {
        // Chunked must be the final coding; otherwise the body runs to the
        // end of the connection. Either way Content-Length is ignored, and a
        // message that sent both is not trusted with the connection after it.
        if length.is_some() {
            close = true;
        }
        let last = coding.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
        if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head { status, framing, close: close || (http10 && !keep_alive) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse_head(raw.as_bytes(), false, None).unwrap().unwrap().0
    }

    #[test]
    fn request_head_has_host_accept_and_headers_but_no_framing_overrides() {
        let mut out = Vec::new();
        let headers = vec![
            (HeaderName::from_static("x-request-id"), HeaderValue::from_static("abc")),
            (HeaderName::from_static("content-length"), HeaderValue::from_static("5")),
            (HeaderName::from_static("accept"), HeaderValue::from_static("text/html")),
        ];
        write_get_head(&mut out, "127.0.0.1:7101", "/products/42?x=1", &headers);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /products/42?x=1 HTTP/1.1\r\nhost: 127.0.0.1:7101\r\n\
             accept: application/json\r\nx-request-id: abc\r\n\r\n"
        );
    }

    #[test]
    fn request_targets_with_spaces_or_controls_are_refused() {
        assert!(is_request_target("/a/b?c=d%20e"));
        assert!(!is_request_target("a/b"));
        assert!(!is_request_target("/a b"));
        assert!(!is_request_target("/a\r\nx: y"));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert_eq!((h.status, h.framing, h.close), (200, Framing::Length(12), false));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let h = parse_head(raw, true, None).unwrap().unwrap().0;
        assert_eq!(h.framing, Framing::Empty, "an answer to HEAD has no body");
        let h =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.close);
    }

    #[test]
    fn ambiguous_or_broken_heads_are_malformed() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            "HTTP/9.9 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            let parsed = parse_head(raw.as_bytes(), false, None);
            assert_eq!(parsed.unwrap_err(), WireError::Malformed, "{raw:?}");
        }
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false, None).unwrap(), None);
    }

    #[test]
    fn fields_point_into_the_head() {
        let raw = b"HTTP/1.1 200 OK\r\nX-One: a b\r\nset-cookie: c=1\r\n\r\n";
        let mut fields = Vec::new();
        parse_head(raw, false, Some(&mut fields)).unwrap().unwrap();
        let seen: Vec<_> =
            fields.iter().map(|f| (&raw[f.name.clone()], &raw[f.value.clone()])).collect();
        assert_eq!(seen, [(&b"X-One"[..], &b"a b"[..]), (&b"set-cookie"[..], &b"c=1"[..])]);
    }

    #[test]
    fn many_headers_fall_back_to_the_heap() {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..100 {
            raw.push_str(&format!("x-h{i}: v\r\n"));
        }
        raw.push_str("content-length: 2\r\n\r\n");
        assert_eq!(head(&raw).framing, Framing::Length(2));
    }
}
