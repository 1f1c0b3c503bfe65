//! A proxied exchange on this worker's pooled connections: the client's
//! request (any method, its body streamed) goes out, the service's answer
//! comes back as a head and a body that streams from the connection.
//!
//! The answer goes through the same response decoder as a section's
//! ([`crate::http1::response`]); what is added is streaming. The request body
//! is relayed chunk by chunk as the edge hands it over (re-chunked when the
//! client sent it chunked; the edge has already bounded it by size, by time
//! and by its declared length); the backend's `timeout` bounds each write
//! and the wait for the answer *after* the body was relayed, so a slow
//! client is never blamed on the backend. A body that has fully arrived with
//! its head (the usual small JSON answer) is handed over whole and the
//! connection goes back to the pool at once; a longer one streams
//! ([`BodyStream`]), each wait for more of it bounded by the backend's
//! `timeout`, and the connection goes back when its last byte has been read
//! and the decoder says it ended exactly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::pool;
use super::wire::{Conn, Framing, RawField, WireError};
use crate::backend::FetchError;
use crate::digits::hex;
use crate::http1::response::{Event, ResponseDecoder};

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

/// Time bounds of one exchange on the service's side.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The backend's per-attempt timeout: connecting, each write, the wait
    /// for the answer's head, and each wait for more of a streamed body.
    pub timeout: Duration,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The client went silent mid-upload, or its body did not arrive in
    /// time (its fault: 408).
    ClientStalled,
    /// The client's body grew past `max_body` (its fault: 413).
    ClientTooLarge,
    /// The client broke its body off, or sent more or less than it declared
    /// (its fault: 400).
    ClientBroken,
    /// The service failed.
    Upstream(FetchError),
}

impl From<FetchError> for ForwardError {
    fn from(error: FetchError) -> Self {
        ForwardError::Upstream(error)
    }
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
    /// Streams from the connection; the length when declared. (Boxed: it
    /// holds the connection, and most answers arrive whole.)
    Stream(Box<BodyStream>, Option<u64>),
}

/// Sends `request` to the instance at `address` and reads the answer's head;
/// `limits.timeout` runs from `started`. `body` yields the client's body
/// (already bounded by the edge; its errors are the client's faults).
///
/// `resendable`: the request may go out again on a new connection if a
/// pooled one turns out to have been closed by the service before it
/// answered (only for idempotent requests without a body).
pub async fn forward<S>(
    address: &str,
    request: &Outgoing<'_>,
    body: Option<S>,
    limits: Limits,
    resendable: bool,
    started: tokio::time::Instant,
) -> Result<Incoming, ForwardError>
where
    S: Stream<Item = Result<Bytes, ForwardError>> + Unpin,
{
    let head_request = request.method.eq_ignore_ascii_case("HEAD");
    let (mut conn, mut opened_at) = checkout(address, limits.timeout, started.into_std()).await?;
    let mut decoder = ResponseDecoder::new(head_request, true);
    let received = match body {
        Some(body) if request.body != RequestBody::None => {
            write_request_head(&mut conn.write_buf, address, request);
            upload(&mut conn, request.body, body, limits, &mut decoder).await?
        }
        _ => loop {
            write_request_head(&mut conn.write_buf, address, request);
            let exchange = async {
                if conn.stream.write_all(&conn.write_buf).await.is_err() {
                    return Err(WireError::ClosedBeforeAnswer);
                }
                conn.read_head(&mut decoder).await
            };
            match tokio::time::timeout_at(started + limits.timeout, exchange).await {
                Err(_) => return Err(upstream(FetchError::Timeout)),
                // The service closed the pooled connection while it was idle.
                Ok(Err(WireError::ClosedBeforeAnswer)) if conn.reused && resendable => {
                    conn = connect(address, limits.timeout).await?;
                    opened_at = Instant::now();
                    decoder = ResponseDecoder::new(head_request, true);
                }
                Ok(result) => break result.map(|head| (head, true)),
            }
        },
    };
    match received {
        Ok(((head, Some(raw)), reusable)) => {
            let exchange = Exchange { conn, decoder, address, opened_at, reusable, limits };
            Ok(exchange.answer(head, raw.bytes, raw.fields))
        }
        Ok(((_, None), _)) => Err(upstream(FetchError::Internal)),
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

/// A pooled connection (checked to be idle and open), or a new one.
async fn checkout(
    address: &str,
    timeout: Duration,
    now: Instant,
) -> Result<(Conn, Instant), ForwardError> {
    match pool::checkout(address, now) {
        Some(pooled) => Ok(pooled),
        None => Ok((connect(address, timeout).await?, Instant::now())),
    }
}

/// A new connection; connecting counts against the backend's timeout.
async fn connect(address: &str, timeout: Duration) -> Result<Conn, ForwardError> {
    match tokio::time::timeout(timeout, Conn::connect(address)).await {
        Err(_) => Err(upstream(FetchError::Timeout)),
        Ok(Err(_)) => Err(upstream(FetchError::Connect)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// A head received (with its bytes and fields), and whether the connection
/// may be reused after the body.
type Received = Result<((super::wire::Head, Option<super::wire::RawHead>), bool), WireError>;

/// Writes the head, relays the body, then waits for the answer's head.
async fn upload<S>(
    conn: &mut Conn,
    framing: RequestBody,
    mut body: S,
    limits: Limits,
    decoder: &mut ResponseDecoder,
) -> Result<Received, ForwardError>
where
    S: Stream<Item = Result<Bytes, ForwardError>> + Unpin,
{
    let chunked = framing == RequestBody::Chunked;
    // The head goes out with the first chunk: one write, not two.
    let mut head_pending = true;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
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
            return early_answer(conn, limits.timeout, decoder).await;
        }
    }
    if !head_pending {
        conn.write_buf.clear();
    }
    if chunked {
        conn.write_buf.extend_from_slice(b"0\r\n\r\n");
    }
    if !conn.write_buf.is_empty() && write_out(conn, limits.timeout).await?.is_err() {
        return early_answer(conn, limits.timeout, decoder).await;
    }
    match tokio::time::timeout(limits.timeout, conn.read_head(decoder)).await {
        Err(_) => Err(upstream(FetchError::Timeout)),
        Ok(result) => Ok(result.map(|head| (head, true))),
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
    decoder: &mut ResponseDecoder,
) -> Result<Received, ForwardError> {
    match tokio::time::timeout(timeout, conn.read_head(decoder)).await {
        Ok(Ok(head)) => Ok(Ok((head, false))),
        _ => Ok(Err(WireError::Broken)),
    }
}

/// A connection whose answer's head has been decoded.
struct Exchange<'a> {
    conn: Conn,
    decoder: ResponseDecoder,
    address: &'a str,
    opened_at: Instant,
    /// Whether the request side allows reuse (it was written whole).
    reusable: bool,
    limits: Limits,
}

impl Exchange<'_> {
    /// The answer: its body whole when it has arrived with the head (the
    /// connection then goes back to the pool at once, if it may), else a
    /// stream from the connection.
    fn answer(
        mut self,
        head: super::wire::Head,
        head_bytes: Bytes,
        fields: Vec<RawField>,
    ) -> Incoming {
        let answered_at = Instant::now();
        self.conn.reused = true;
        let arrived_whole = match head.framing {
            Framing::Empty => true,
            Framing::Length(n) => self.conn.read_buf.len() as u64 >= n,
            Framing::Chunked | Framing::UntilClose => false,
        };
        let body = if arrived_whole {
            self.whole_body(head.framing)
        } else {
            let length = match head.framing {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            let stream = BodyStream {
                conn: Some(self.conn),
                decoder: self.decoder,
                address: self.address.to_string(),
                opened_at: self.opened_at,
                reusable: self.reusable,
                idle: self.limits.timeout,
                last_read: answered_at,
                timer: None,
            };
            IncomingBody::Stream(Box::new(stream), length)
        };
        Incoming { status: head.status, fields, head: head_bytes, body, answered_at }
    }

    /// A body that has fully arrived (or is empty by definition).
    fn whole_body(mut self, framing: Framing) -> IncomingBody {
        // `answer` checked that the whole body has arrived.
        let (body, reusable) =
            self.decoder.whole_body(&mut self.conn.read_buf).unwrap_or((Bytes::new(), false));
        if reusable && self.reusable {
            pool::checkin(self.address, self.conn, self.opened_at, Instant::now());
        }
        match framing {
            Framing::Empty => IncomingBody::Empty,
            _ => IncomingBody::Full(body),
        }
    }
}

/// A response body read from the connection as the edge sends it on; the
/// connection returns to the pool after the last byte if the answer ended
/// exactly (and is closed if the stream fails or is dropped before that).
/// Each wait for more bytes is bounded by the backend's `timeout`: a body
/// that stalls ends in [`FetchError::Timeout`], one cut short or broken in
/// [`FetchError::Connect`].
#[derive(Debug)]
pub struct BodyStream {
    conn: Option<Conn>,
    decoder: ResponseDecoder,
    address: String,
    opened_at: Instant,
    reusable: bool,
    /// Longest wait for more of the body.
    idle: Duration,
    /// When bytes last arrived.
    last_read: Instant,
    /// Armed while waiting for bytes (allocated once, on the first wait).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BodyStream {
    fn finish(&mut self, reusable: bool) {
        if let Some(conn) = self.conn.take() {
            if reusable && self.reusable {
                pool::checkin(&self.address, conn, self.opened_at, Instant::now());
            }
        }
    }

    fn fail(&mut self, error: FetchError) -> Poll<Option<Result<Bytes, FetchError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }

    /// Whether the wait for more bytes has lasted `idle` (arms the timer).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let due = tokio::time::Instant::from_std(self.last_read + self.idle);
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let event = if conn.eof {
                this.decoder.decode_eof(&mut conn.read_buf)
            } else {
                this.decoder.decode(&mut conn.read_buf)
            };
            match event {
                Ok(Event::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Event::End { reusable }) => {
                    this.finish(reusable);
                    return Poll::Ready(None);
                }
                Ok(Event::NeedMore) => {}
                Ok(Event::Head(..)) | Err(_) => return this.fail(FetchError::Connect),
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(_)) => this.last_read = Instant::now(),
                Poll::Ready(Err(_)) => return this.fail(FetchError::Connect),
                Poll::Pending => {
                    if this.stalled(cx) {
                        return this.fail(FetchError::Timeout);
                    }
                    return Poll::Pending;
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
mod tests;
