//! HTTP/1.1 on one keep-alive connection: writing a section's GET and
//! reading the answer through the shared response decoder
//! ([`crate::http1::response`]).
//!
//! A section call is always the same small exchange: a GET with a handful
//! of headers known to be valid, answered by a status, a few headers and a
//! body that is wanted whole. So this module writes the request head into a
//! reused buffer with one `write` and feeds what it reads to the decoder: no
//! header map is built and nothing is copied that the page does not keep.
//! Measured in `BENCHMARKS.md`: this replaced awc, whose client path was a
//! third of the instructions of a page.

use std::io;

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::response::{DecodeError, Event, ResponseDecoder};
pub use crate::http1::response::{Framing, Head, RawField, RawHead};

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer up to this size (request heads) stays with an idle
/// connection; a larger one (grown by a chunked request body) is released.
const IDLE_WRITE_BUF: usize = 1024;

/// Why an exchange produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The connection closed or failed before any byte of the answer: on a
    /// reused connection, the service most likely closed it while idle, and
    /// the request can be sent again on a new one.
    ClosedBeforeAnswer,
    /// The connection failed or closed in the middle of the answer.
    Broken,
    /// The answer is not valid, unambiguous HTTP/1.x.
    Malformed,
    /// The body is larger than allowed.
    TooLarge,
}

impl From<DecodeError> for WireError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::Malformed(_) => WireError::Malformed,
            DecodeError::ClosedBeforeAnswer => WireError::ClosedBeforeAnswer,
            DecodeError::Truncated => WireError::Broken,
        }
    }
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
    /// The service has closed its side (a read returned 0).
    pub(super) eof: bool,
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
            eof: false,
        })
    }

    /// Sends `GET path` and reads the answer. A 2xx body is read whole (at
    /// most `max_body` bytes); any other answer's body is skipped if it has
    /// arrived with its head, and the connection is closed otherwise.
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
        let mut decoder = ResponseDecoder::new(false, false);
        let head = self.read_head(&mut decoder).await?.0;
        self.reused = true;
        if !(200..300).contains(&head.status) {
            let reusable = self.skip_buffered_body(&mut decoder);
            return Ok(Answer { status: head.status, body: Bytes::new(), reusable });
        }
        if let Framing::Length(n) = head.framing {
            if n > max_body as u64 {
                return Err(WireError::TooLarge);
            }
            // Gathered in the read buffer first, so the decoder hands the
            // body over in one piece (no joining of partial reads).
            self.fill_to(n as usize).await?;
        }
        if let Some((body, reusable)) = decoder.whole_body(&mut self.read_buf) {
            return Ok(Answer { status: head.status, body, reusable });
        }
        let mut body = Body::default();
        loop {
            match self.next_event(&mut decoder).await? {
                Event::Data(data) => {
                    if body.len() + data.len() > max_body {
                        return Err(WireError::TooLarge);
                    }
                    body.push(data);
                }
                Event::End { reusable } => {
                    return Ok(Answer { status: head.status, body: body.finish(), reusable })
                }
                Event::Head(..) | Event::NeedMore => return Err(WireError::Malformed),
            }
        }
    }

    /// Reads until the decoder has the final head; with a decoder that keeps
    /// heads, also returns the head's bytes and fields.
    pub(super) async fn read_head(
        &mut self,
        decoder: &mut ResponseDecoder,
    ) -> Result<(Head, Option<RawHead>), WireError> {
        match self.next_event(decoder).await? {
            Event::Head(head, raw) => Ok((head, raw)),
            _ => Err(WireError::Malformed),
        }
    }

    /// The decoder's next event, reading from the socket as it needs.
    pub(super) async fn next_event(
        &mut self,
        decoder: &mut ResponseDecoder,
    ) -> Result<Event, WireError> {
        loop {
            if self.eof {
                return Ok(decoder.decode_eof(&mut self.read_buf)?);
            }
            match decoder.decode(&mut self.read_buf)? {
                Event::NeedMore => {}
                event => return Ok(event),
            }
            match self.read_more().await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                // A reset before any byte of the answer reads like a close.
                Err(_) if !decoder.has_head() && self.read_buf.is_empty() => {
                    return Err(WireError::ClosedBeforeAnswer)
                }
                Err(_) => return Err(WireError::Broken),
            }
        }
    }

    /// Decodes the rest of a body that is already buffered, dropping it:
    /// whether the answer ended exactly there (the connection is reusable).
    fn skip_buffered_body(&mut self, decoder: &mut ResponseDecoder) -> bool {
        loop {
            match decoder.decode(&mut self.read_buf) {
                Ok(Event::Data(_)) => {}
                Ok(Event::End { reusable }) => return reusable,
                _ => return false,
            }
        }
    }

    /// Whether a pooled connection is still idle and open: nothing to read
    /// and no end of stream. Bytes waiting on an idle connection are an
    /// answer to nothing (a late 408, a body after a 204, a service out of
    /// step), and reading them as the next request's answer would hand one
    /// caller's answer to another, so any doubt closes it.
    ///
    /// One non-blocking read. tokio answers it from the readiness its
    /// reactor last saw, without a system call when no event came in since
    /// the last read: that is what keeps this check free on the hot path,
    /// and it sees every byte or close that arrived before the worker's
    /// last turn of its event loop.
    pub(super) fn is_idle_and_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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

    /// Reads until `read_buf` holds at least `n` bytes (or the service
    /// closes: the decoder then reports the body as cut short).
    async fn fill_to(&mut self, n: usize) -> Result<(), WireError> {
        if self.read_buf.len() < n {
            self.read_buf.reserve(n - self.read_buf.len());
        }
        while self.read_buf.len() < n && !self.eof {
            if self.stream.read_buf(&mut self.read_buf).await.map_err(|_| WireError::Broken)? == 0 {
                self.eof = true;
            }
        }
        Ok(())
    }

    pub(super) async fn read_more(&mut self) -> io::Result<usize> {
        self.make_room();
        self.stream.read_buf(&mut self.read_buf).await
    }

    fn make_room(&mut self) {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
            self.read_buf.reserve(READ_CHUNK);
        }
    }

    /// Reads what is available into `read_buf` (for streamed bodies); a read
    /// of 0 (the service closed) sets `eof`.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            self.make_room();
            match self.stream.try_read_buf(&mut self.read_buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(0) => {
                    self.eof = true;
                    return std::task::Poll::Ready(Ok(0));
                }
                result => return std::task::Poll::Ready(result),
            }
        }
    }
}

/// A body gathered from the decoder's data: one piece is kept as it is
/// (the usual `Content-Length` answer), several are joined.
#[derive(Default)]
struct Body {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Body {
    fn len(&self) -> usize {
        match (&self.joined, &self.first) {
            (Some(joined), _) => joined.len(),
            (None, Some(first)) => first.len(),
            (None, None) => 0,
        }
    }

    fn push(&mut self, data: Bytes) {
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&data);
        } else if let Some(first) = self.first.take() {
            let mut joined = BytesMut::with_capacity(first.len() + data.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&data);
            self.joined = Some(joined);
        } else {
            self.first = Some(data);
        }
    }

    fn finish(self) -> Bytes {
        match (self.joined, self.first) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bodies_in_pieces_are_joined_and_one_piece_is_kept_as_is() {
        let mut body = Body::default();
        assert_eq!(body.len(), 0);
        let piece = Bytes::from_static(b"{\"a\"");
        body.push(piece.clone());
        assert_eq!(body.len(), 4);
        let mut one = Body::default();
        one.push(piece.clone());
        assert_eq!(one.finish().as_ptr(), piece.as_ptr(), "no copy of a single piece");
        body.push(Bytes::from_static(b":1}"));
        assert_eq!(&body.finish()[..], b"{\"a\":1}");
    }
}
