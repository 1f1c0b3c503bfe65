//! A proxied exchange on this worker's pooled connections: the client's
//! request (any method, its body streamed) goes out, the service's answer
//! comes back as a head and a body that streams from the connection.
//!
//! The wire work is the same as a section's ([`super::wire`]); what is added
//! is streaming. The request body is relayed chunk by chunk as it arrives
//! (re-chunked when the client sent it chunked), bounded by `max_body` and
//! by the client's silence; the backend's `timeout` bounds each write and
//! the wait for the answer *after* the body was relayed, so a slow client is
//! never blamed on the backend. A body that has fully arrived with its head
//! (the usual small JSON answer) is handed over whole and the connection
//! goes back to the pool at once; a longer one streams ([`BodyStream`]) and
//! the connection goes back when its last byte has been read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::pool;
use super::wire::{Conn, Framing, RawField, WireError};
use crate::backend::FetchError;
use crate::digits::hex;

/// How the request body is framed towards the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body.
    None,
    /// `Content-Length`, as the client declared it.
    Length(u64),
    /// `Transfer-Encoding: chunked` (the client sent it without a length).
    Chunked,
}

/// The request as it goes to the service.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub target: &'a str,
    /// Header lines (`name: value\r\n` each), already filtered by the edge.
    pub header_lines: &'a [u8],
    /// Body framing.
    pub body: RequestBody,
}

/// Time and size bounds of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The backend's per-attempt timeout.
    pub timeout: Duration,
    /// How long the client may go silent while uploading.
    pub client_idle: Duration,
    /// Largest request body relayed.
    pub max_body: u64,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The client went silent mid-upload (its fault: 408).
    ClientStalled,
    /// The client's body grew past `max_body` (its fault: 413).
    ClientTooLarge,
    /// The client broke its body off (its fault: 400).
    ClientBroken,
    /// The service failed.
    Upstream(FetchError),
}

/// The service's answer.
#[derive(Debug)]
pub struct Incoming {
    /// Status code.
    pub status: u16,
    /// Every header as sent (the edge drops hop-by-hop ones).
    pub fields: Vec<RawField>,
    /// The head's bytes, which `fields` point into.
    pub head: Bytes,
    /// The body.
    pub body: IncomingBody,
    /// When the head had arrived.
    pub answered_at: Instant,
}

impl Incoming {
    /// Each header as (name as sent, value).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|field| (&self.head[field.name.clone()], &self.head[field.value.clone()]))
    }
}

/// The answer's body.
#[derive(Debug)]
pub enum IncomingBody {
    /// None (HEAD, 204, 304).
    Empty,
    /// Arrived whole with the head.
    Full(Bytes),
    /// Streams from the connection; the length when declared.
    Stream(BodyStream, Option<u64>),
}

/// Sends `request` to the instance at `address` and reads the answer's head;
/// `limits.timeout` runs from `started`.
///
/// `resendable`: the request may go out again on a new connection if a
/// pooled one turns out to have been closed by the service (only for
/// idempotent requests without a body). Other requests only take pooled
/// connections that are still open when checked just before use.
pub async fn forward<S, E>(
    address: &str,
    request: &Outgoing<'_>,
    body: Option<S>,
    limits: Limits,
    resendable: bool,
    started: tokio::time::Instant,
) -> Result<Incoming, ForwardError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let head_request = request.method.eq_ignore_ascii_case("HEAD");
    let mut fields = Vec::with_capacity(16);
    let (mut conn, mut opened_at) =
        checkout(address, resendable, limits.timeout, started.into_std()).await?;
    let received = match body {
        Some(body) if request.body != RequestBody::None => {
            write_request_head(&mut conn.write_buf, address, request);
            upload(&mut conn, request.body, body, limits, head_request, &mut fields).await?
        }
        _ => loop {
            write_request_head(&mut conn.write_buf, address, request);
            let exchange = async {
                if conn.stream.write_all(&conn.write_buf).await.is_err() {
                    return Err(WireError::ClosedBeforeAnswer);
                }
                conn.read_head(head_request, Some(&mut fields)).await
            };
            match tokio::time::timeout_at(started + limits.timeout, exchange).await {
                Err(_) => return Err(upstream(FetchError::Timeout)),
                // The service closed the pooled connection while it was idle.
                Ok(Err(WireError::ClosedBeforeAnswer)) if conn.reused && resendable => {
                    conn = connect(address, limits.timeout).await?;
                    opened_at = Instant::now();
                }
                Ok(result) => break result.map(|(head, len)| (head, len, true)),
            }
        },
    };
    match received {
        Ok((head, len, reusable)) => {
            Ok(answer(conn, opened_at, address, head, len, fields, reusable))
        }
        Err(error) => Err(upstream(map_wire(error))),
    }
}

fn upstream(error: FetchError) -> ForwardError {
    ForwardError::Upstream(error)
}

fn map_wire(error: WireError) -> FetchError {
    match error {
        WireError::TooLarge => FetchError::TooLarge,
        _ => FetchError::Connect,
    }
}

/// A pooled connection (checked to be open unless the request can be
/// resent), or a new one.
async fn checkout(
    address: &str,
    resendable: bool,
    timeout: Duration,
    now: Instant,
) -> Result<(Conn, Instant), ForwardError> {
    while let Some((conn, opened_at)) = pool::checkout(address, now) {
        if resendable || conn.looks_open() {
            return Ok((conn, opened_at));
        }
    }
    Ok((connect(address, timeout).await?, Instant::now()))
}

/// A new connection; connecting counts against the backend's timeout.
async fn connect(address: &str, timeout: Duration) -> Result<Conn, ForwardError> {
    match tokio::time::timeout(timeout, Conn::connect(address)).await {
        Err(_) => Err(upstream(FetchError::Timeout)),
        Ok(Err(_)) => Err(upstream(FetchError::Connect)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// A head received: the head, its length, and whether the connection may
/// be reused after the body.
type Received = Result<(super::wire::Head, usize, bool), WireError>;

/// Writes the head, relays the body, then waits for the answer's head.
async fn upload<S, E>(
    conn: &mut Conn,
    framing: RequestBody,
    mut body: S,
    limits: Limits,
    head_request: bool,
    fields: &mut Vec<RawField>,
) -> Result<Received, ForwardError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let chunked = framing == RequestBody::Chunked;
    let mut seen: u64 = 0;
    // The head goes out with the first chunk: one write, not two.
    let mut head_pending = true;
    loop {
        let next = match tokio::time::timeout(limits.client_idle, body.next()).await {
            Err(_) => return Err(ForwardError::ClientStalled),
            Ok(next) => next,
        };
        let chunk = match next {
            None => break,
            Some(Err(_)) => return Err(ForwardError::ClientBroken),
            Some(Ok(chunk)) => chunk,
        };
        seen += chunk.len() as u64;
        if seen > limits.max_body {
            return Err(ForwardError::ClientTooLarge);
        }
        if chunk.is_empty() {
            continue;
        }
        if !head_pending {
            conn.write_buf.clear();
        }
        head_pending = false;
        if chunked {
            let mut size = [0u8; 16];
            conn.write_buf.extend_from_slice(hex(chunk.len() as u64, &mut size));
            conn.write_buf.extend_from_slice(b"\r\n");
        }
        conn.write_buf.extend_from_slice(&chunk);
        if chunked {
            conn.write_buf.extend_from_slice(b"\r\n");
        }
        if write_out(conn, limits.timeout).await?.is_err() {
            // The service may have answered early (a 413, say) and closed.
            return early_answer(conn, limits.timeout, head_request, fields).await;
        }
    }
    if let RequestBody::Length(declared) = framing {
        if seen != declared {
            return Err(ForwardError::ClientBroken);
        }
    }
    if !head_pending {
        conn.write_buf.clear();
    }
    if chunked {
        conn.write_buf.extend_from_slice(b"0\r\n\r\n");
    }
    if !conn.write_buf.is_empty() && write_out(conn, limits.timeout).await?.is_err() {
        return early_answer(conn, limits.timeout, head_request, fields).await;
    }
    match tokio::time::timeout(limits.timeout, conn.read_head(head_request, Some(fields))).await {
        Err(_) => Err(upstream(FetchError::Timeout)),
        Ok(result) => Ok(result.map(|(head, len)| (head, len, true))),
    }
}

/// Writes `write_buf`, bounded by the backend's timeout (a service that
/// stops reading must not hold the request forever).
async fn write_out(conn: &mut Conn, timeout: Duration) -> Result<Result<(), ()>, ForwardError> {
    match tokio::time::timeout(timeout, conn.stream.write_all(&conn.write_buf)).await {
        Err(_) => Err(upstream(FetchError::Timeout)),
        Ok(Err(_)) => Ok(Err(())),
        Ok(Ok(())) => Ok(Ok(())),
    }
}

/// After a failed write: an answer the service sent before it stopped
/// reading, if there is one. The connection is half-written, so it is not
/// reused after that answer.
async fn early_answer(
    conn: &mut Conn,
    timeout: Duration,
    head_request: bool,
    fields: &mut Vec<RawField>,
) -> Result<Received, ForwardError> {
    match tokio::time::timeout(timeout, conn.read_head(head_request, Some(fields))).await {
        Ok(Ok((head, len))) => Ok(Ok((head, len, false))),
        _ => Ok(Err(WireError::Broken)),
    }
}

/// Turns the head at the front of the connection's buffer into an answer.
fn answer(
    mut conn: Conn,
    opened_at: Instant,
    address: &str,
    head: super::wire::Head,
    len: usize,
    fields: Vec<RawField>,
    reusable: bool,
) -> Incoming {
    let answered_at = Instant::now();
    let head_bytes = conn.read_buf.split_to(len).freeze();
    conn.reused = true;
    let reusable = reusable && !head.close;
    let body = match head.framing {
        Framing::Empty => {
            if reusable && conn.read_buf.is_empty() {
                pool::checkin(address, conn, opened_at, answered_at);
            }
            IncomingBody::Empty
        }
        Framing::Length(n) if (conn.read_buf.len() as u64) >= n => {
            // `n` is at most the buffered length, so it fits a usize.
            let body = conn.take(n as usize);
            if reusable && conn.read_buf.is_empty() {
                pool::checkin(address, conn, opened_at, answered_at);
            }
            IncomingBody::Full(body)
        }
        framing => {
            let (state, length) = match framing {
                Framing::Length(n) => (BodyState::Length(n), Some(n)),
                Framing::Chunked => (BodyState::ChunkSize, None),
                _ => (BodyState::UntilClose, None),
            };
            let stream = BodyStream {
                conn: Some(conn),
                address: address.to_string(),
                opened_at,
                state,
                reusable,
            };
            IncomingBody::Stream(stream, length)
        }
    };
    Incoming { status: head.status, fields, head: head_bytes, body, answered_at }
}

/// Where a streamed body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk.
    ChunkEnd,
    /// Expecting trailer lines or the final CRLF.
    Trailers,
    /// Until the service closes.
    UntilClose,
}

/// Most bytes a chunk-size line or trailer section may take.
const MAX_LINE: usize = 4 * 1024;

/// A response body read from the connection as the edge sends it on; the
/// connection returns to the pool after the last byte (and is closed if the
/// stream is dropped before that).
#[derive(Debug)]
pub struct BodyStream {
    conn: Option<Conn>,
    address: String,
    opened_at: Instant,
    state: BodyState,
    reusable: bool,
}

impl BodyStream {
    fn finish(&mut self, reusable: bool) {
        if let Some(conn) = self.conn.take() {
            if reusable && self.reusable && conn.read_buf.is_empty() {
                pool::checkin(&self.address, conn, self.opened_at, Instant::now());
            }
        }
    }
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Stream for BodyStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = conn.read_buf.len();
            match this.state {
                BodyState::Length(0) => {
                    this.finish(true);
                    return Poll::Ready(None);
                }
                BodyState::Length(left) if buffered > 0 => {
                    let n = left.min(buffered as u64);
                    this.state = BodyState::Length(left - n);
                    return Poll::Ready(Some(Ok(conn.read_buf.split_to(n as usize).freeze())));
                }
                BodyState::ChunkData(0) => {
                    this.state = BodyState::ChunkEnd;
                    continue;
                }
                BodyState::ChunkData(left) if buffered > 0 => {
                    let n = left.min(buffered as u64);
                    this.state = BodyState::ChunkData(left - n);
                    return Poll::Ready(Some(Ok(conn.read_buf.split_to(n as usize).freeze())));
                }
                BodyState::ChunkEnd if buffered >= 2 => {
                    if &conn.read_buf[..2] != b"\r\n" {
                        this.conn = None;
                        return Poll::Ready(Some(Err(broken("bad chunk end"))));
                    }
                    conn.read_buf.advance(2);
                    this.state = BodyState::ChunkSize;
                    continue;
                }
                BodyState::ChunkSize if buffered > 0 => {
                    match httparse::parse_chunk_size(&conn.read_buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            conn.read_buf.advance(used);
                            this.state = if size == 0 {
                                BodyState::Trailers
                            } else {
                                BodyState::ChunkData(size)
                            };
                            continue;
                        }
                        Ok(httparse::Status::Partial) if buffered <= MAX_LINE => {}
                        _ => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(broken("bad chunk size"))));
                        }
                    }
                }
                BodyState::Trailers if buffered > 0 => {
                    if conn.read_buf.starts_with(b"\r\n") {
                        conn.read_buf.advance(2);
                        this.finish(true);
                        return Poll::Ready(None);
                    }
                    if let Some(end) = conn.read_buf.windows(2).position(|w| w == b"\r\n") {
                        conn.read_buf.advance(end + 2);
                        continue;
                    }
                    if buffered > MAX_LINE {
                        this.conn = None;
                        return Poll::Ready(Some(Err(broken("trailer too long"))));
                    }
                }
                BodyState::UntilClose if buffered > 0 => {
                    return Poll::Ready(Some(Ok(conn.read_buf.split().freeze())));
                }
                _ => {}
            }
            // More bytes are needed (every arm that made progress has
            // returned or continued).
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == BodyState::UntilClose => {
                    this.finish(false);
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}

/// `METHOD target HTTP/1.1`, `Host`, the edge's header lines and the body's
/// framing header.
fn write_request_head(out: &mut Vec<u8>, host: &str, request: &Outgoing<'_>) {
    out.clear();
    out.extend_from_slice(request.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(request.header_lines);
    match request.body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures_util::stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type NoBody = stream::Empty<Result<Bytes, Infallible>>;

    const LIMITS: Limits = Limits {
        timeout: Duration::from_secs(2),
        client_idle: Duration::from_millis(300),
        max_body: 1024,
    };

    /// A raw server: every connection is served by `handler`; returns the
    /// address and the number of connections accepted.
    async fn server<F, Fut>(handler: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handler(stream));
            }
        });
        (address, accepted)
    }

    /// Reads a request head, then `body_len` body bytes; returns both.
    async fn read_request(stream: &mut TcpStream, body_len: usize) -> Option<(String, Vec<u8>)> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body).await.ok()?;
        Some((String::from_utf8(head).unwrap(), body))
    }

    /// A request without a body, started now.
    async fn bodiless(
        address: &str,
        method: &'static str,
        resendable: bool,
    ) -> Result<Incoming, ForwardError> {
        let now = tokio::time::Instant::now();
        forward::<NoBody, _>(address, &get(method), None, LIMITS, resendable, now).await
    }

    fn get(method: &'static str) -> Outgoing<'static> {
        Outgoing {
            method,
            target: "/cart/items",
            header_lines: b"x-a: 1\r\n",
            body: RequestBody::None,
        }
    }

    async fn collect(body: IncomingBody) -> Vec<u8> {
        match body {
            IncomingBody::Empty => Vec::new(),
            IncomingBody::Full(bytes) => bytes.to_vec(),
            IncomingBody::Stream(mut stream, _) => {
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk.unwrap());
                }
                out
            }
        }
    }

    #[tokio::test]
    async fn a_small_answer_arrives_whole_and_its_connection_is_reused() {
        let (address, accepted) = server(|mut s| async move {
            while let Some((head, _)) = read_request(&mut s, 0).await {
                assert!(head.starts_with("GET /cart/items HTTP/1.1\r\n"), "{head}");
                assert!(head.contains("x-a: 1\r\n"), "{head}");
                s.write_all(b"HTTP/1.1 200 OK\r\nx-b: 2\r\ncontent-length: 2\r\n\r\n[]")
                    .await
                    .unwrap();
            }
        })
        .await;
        for _ in 0..3 {
            let incoming = bodiless(&address, "GET", true).await.unwrap();
            assert!(incoming.fields().any(|(n, v)| n == b"x-b" && v == b"2"));
            assert!(matches!(incoming.body, IncomingBody::Full(_)));
            assert_eq!(collect(incoming.body).await, b"[]");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn chunked_and_long_answers_stream_then_free_the_connection() {
        let big = "x".repeat(50_000);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n{:x}\r\n{big}\r\n0\r\nt: 1\r\n\r\n",
            big.len()
        );
        let long = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}", big.len());
        let (address, accepted) = server(move |mut s| {
            let (answer, long) = (answer.clone(), long.clone());
            async move {
                let mut n = 0;
                while read_request(&mut s, 0).await.is_some() {
                    let reply = if n % 2 == 0 { &answer } else { &long };
                    // In pieces, so the body really streams.
                    for piece in reply.as_bytes().chunks(7000) {
                        s.write_all(piece).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    n += 1;
                }
            }
        })
        .await;
        for round in 0..4 {
            let incoming = bodiless(&address, "GET", true).await.unwrap();
            let expected = if round % 2 == 0 { format!("hello{big}") } else { big.clone() };
            assert!(matches!(incoming.body, IncomingBody::Stream(..)));
            assert_eq!(collect(incoming.body).await, expected.as_bytes());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused after streamed bodies");
    }

    #[tokio::test]
    async fn a_body_ended_by_close_streams_to_the_end() {
        let (address, accepted) = server(|mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b" close").await.unwrap();
        })
        .await;
        for _ in 0..2 {
            let incoming = bodiless(&address, "GET", true).await.unwrap();
            assert_eq!(collect(incoming.body).await, b"until close");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stream_cut_short_ends_in_an_error() {
        let (address, _) = server(|mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this").await.unwrap();
        })
        .await;
        let incoming = bodiless(&address, "GET", true).await.unwrap();
        let IncomingBody::Stream(mut stream, Some(100)) = incoming.body else { panic!("a stream") };
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"only this");
        assert!(stream.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_answer_to_head_has_no_body_even_with_a_length() {
        let (address, accepted) = server(|mut s| async move {
            while read_request(&mut s, 0).await.is_some() {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n").await.unwrap();
            }
        })
        .await;
        for _ in 0..2 {
            let incoming = bodiless(&address, "HEAD", true).await.unwrap();
            assert!(matches!(incoming.body, IncomingBody::Empty));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bodies_go_out_with_their_length_or_rechunked() {
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let (address, _) = server(move |mut s| {
            let seen_tx = seen_tx.clone();
            async move {
                let mut all = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the request is complete (length or last chunk).
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    all.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&all).to_string();
                    if text.ends_with("0\r\n\r\n") || text.ends_with("hello world") {
                        break;
                    }
                }
                seen_tx.send(String::from_utf8(all).unwrap()).unwrap();
                s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            }
        })
        .await;
        let chunks =
            || stream::iter([Ok::<_, Infallible>(Bytes::from("hello")), Ok(Bytes::from(" world"))]);
        let mut post = get("POST");
        post.body = RequestBody::Length(11);
        let incoming =
            forward(&address, &post, Some(chunks()), LIMITS, false, tokio::time::Instant::now())
                .await
                .unwrap();
        assert_eq!(incoming.status, 201);
        let sent = seen_rx.recv().await.unwrap();
        assert!(
            sent.contains("content-length: 11\r\n") && sent.ends_with("\r\n\r\nhello world"),
            "{sent}"
        );

        post.body = RequestBody::Chunked;
        forward(&address, &post, Some(chunks()), LIMITS, false, tokio::time::Instant::now())
            .await
            .unwrap();
        let sent = seen_rx.recv().await.unwrap();
        assert!(sent.contains("transfer-encoding: chunked\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn client_faults_are_told_apart_from_upstream_ones() {
        let (address, _) = server(|mut s| async move {
            let mut sink = vec![0u8; 1 << 16];
            while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let mut post = get("POST");
        post.body = RequestBody::Chunked;
        let too_much =
            stream::iter((0..3).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 500]))));
        let result =
            forward(&address, &post, Some(too_much), LIMITS, false, tokio::time::Instant::now())
                .await;
        assert_eq!(result.unwrap_err(), ForwardError::ClientTooLarge);

        let broken = stream::iter([Ok(Bytes::from("a")), Err(std::io::Error::other("reset"))]);
        let result =
            forward(&address, &post, Some(broken), LIMITS, false, tokio::time::Instant::now())
                .await;
        assert_eq!(result.unwrap_err(), ForwardError::ClientBroken);

        let stalled =
            stream::iter([Ok::<_, Infallible>(Bytes::from("a"))]).chain(stream::pending());
        let result =
            forward(&address, &post, Some(stalled), LIMITS, false, tokio::time::Instant::now())
                .await;
        assert_eq!(result.unwrap_err(), ForwardError::ClientStalled);

        // The whole body arrived; the service never answers.
        let fast = Limits { timeout: Duration::from_millis(200), ..LIMITS };
        let whole = stream::iter([Ok::<_, Infallible>(Bytes::from("a"))]);
        let result =
            forward(&address, &post, Some(whole), fast, false, tokio::time::Instant::now()).await;
        assert_eq!(result.unwrap_err(), ForwardError::Upstream(FetchError::Timeout));
    }

    #[tokio::test]
    async fn an_early_answer_is_relayed_when_the_service_stops_reading() {
        let (address, _) = server(|mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(
                b"HTTP/1.1 413 Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
            // Close with unread data pending: the kernel resets the connection.
        })
        .await;
        let mut post = get("POST");
        post.body = RequestBody::Length(4_000_000);
        let big =
            stream::iter((0..1000).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 4000]))));
        let limits = Limits { max_body: 10_000_000, ..LIMITS };
        match forward(&address, &post, Some(big), limits, false, tokio::time::Instant::now()).await
        {
            Ok(incoming) => assert_eq!(incoming.status, 413),
            // The reset can also destroy the answer before it is read.
            Err(error) => assert_eq!(error, ForwardError::Upstream(FetchError::Connect)),
        }
    }

    #[tokio::test]
    async fn closed_pooled_connections_are_never_a_failure() {
        // Every connection serves one exchange, then the service closes it.
        let (address, accepted) = server(|mut s| async move {
            if read_request(&mut s, 0).await.is_some() {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
            }
        })
        .await;
        bodiless(&address, "GET", true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A GET is sent again on a new connection...
        bodiless(&address, "GET", true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...a DELETE never is: it only takes a pooled connection that is
        // still open, so it gets a new one.
        let incoming = bodiless(&address, "DELETE", false).await.unwrap();
        assert_eq!(incoming.status, 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(255, &mut buf), b"ff");
        assert_eq!(hex(0x1a2b3c, &mut buf), b"1a2b3c");
        assert_eq!(hex(u64::MAX, &mut buf), b"ffffffffffffffff");
    }
}
