//! A client's request body on its way to a service, bounded on the
//! client's side: by size (`server.max_body`), by its declared length (no
//! byte beyond a `Content-Length` is ever relayed, and a body that ends
//! short is broken), by silence (`server.client_timeout` between chunks)
//! and by total time (`server.body_timeout` from the request's arrival).
//!
//! Its first [`ADMISSION_PREFIX`] bytes are read before the request is
//! admitted to its backend ([`RequestBody::prefetch`]): a client that is slow
//! to send its body waits without holding a bulkhead slot or a service
//! connection, so a flood of dripping uploads cannot take every slot of a
//! backend. Most API bodies are smaller than the prefix and are relayed
//! whole; a larger one streams after it, its duration bounded by
//! `body_timeout`. The prefix costs no more memory than actix-http already
//! lets a connection buffer for its payload.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::backend::client::forward::ForwardError;

/// The client's request body as actix-http hands it over.
///
/// Unlike `web::Payload` it tells whether there is a body at all: an
/// HTTP/1 request without `Content-Length` or `Transfer-Encoding` has none,
/// and neither has an HTTP/2 request whose HEADERS frame ended its stream
/// (the vendored actix-http gives both `Payload::None`). An HTTP/2 request
/// may carry a body without declaring its length; it is relayed chunked.
pub struct ClientPayload(actix_web::dev::Payload);

impl ClientPayload {
    /// Whether this is an HTTP/2 body of no declared length (relayed
    /// chunked). HTTP/1 declares every body (`Content-Length` or chunked);
    /// what actix hands over for an HTTP/1 `Upgrade` request is the
    /// connection's stream, not a body, and is never relayed as one.
    pub fn undeclared_h2_body(&self, req: &actix_web::HttpRequest, declared: Option<u64>) -> bool {
        req.version() == actix_web::http::Version::HTTP_2
            && declared.is_none()
            && !matches!(self.0, actix_web::dev::Payload::None)
    }
}

impl actix_web::FromRequest for ClientPayload {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(
        _: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        std::future::ready(Ok(ClientPayload(payload.take())))
    }
}

impl Stream for ClientPayload {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Bytes of a body read before the request takes a bulkhead slot.
pub const ADMISSION_PREFIX: usize = 32 * 1024;

/// The bounds a body is held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The `Content-Length` the client declared, if any.
    pub declared: Option<u64>,
    /// Largest body relayed.
    pub max_body: u64,
    /// Longest silence between chunks.
    pub idle: Duration,
    /// When the whole body must have arrived.
    pub deadline: Instant,
}

/// The client's body: what [`RequestBody::prefetch`] buffered, then the rest
/// as it arrives. Yields the client's faults as [`ForwardError`]s.
pub struct RequestBody<S> {
    source: Option<S>,
    buffered: VecDeque<Bytes>,
    buffered_len: usize,
    limits: BodyLimits,
    seen: u64,
    last_chunk: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> std::fmt::Debug for RequestBody<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("seen", &self.seen)
            .field("buffered_len", &self.buffered_len)
            .field("ended", &self.source.is_none())
            .finish_non_exhaustive()
    }
}

impl<S, E> RequestBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// A body read from `source` within `limits`.
    pub fn new(source: S, limits: BodyLimits) -> Self {
        let now = Instant::now();
        let due = (now + limits.idle).min(limits.deadline);
        Self {
            source: Some(source),
            buffered: VecDeque::new(),
            buffered_len: 0,
            limits,
            seen: 0,
            last_chunk: now,
            timer: Box::pin(tokio::time::sleep_until(due)),
        }
    }

    /// Reads until `up_to` bytes are buffered or the body has ended.
    pub async fn prefetch(&mut self, up_to: usize) -> Result<(), ForwardError> {
        while self.buffered_len < up_to && self.source.is_some() {
            let next = std::future::poll_fn(|cx| self.poll_source(cx)).await;
            match next {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.buffered_len += chunk.len();
                    self.buffered.push_back(chunk);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Reads the whole body (at most `max_body`, every bound checked), for
    /// a transport that sends a message rather than a stream.
    pub async fn read_whole(mut self) -> Result<Bytes, ForwardError> {
        self.prefetch(usize::MAX).await?;
        if self.buffered.len() == 1 {
            return Ok(self.buffered.pop_front().unwrap_or_default());
        }
        let mut whole = bytes::BytesMut::with_capacity(self.buffered_len);
        for chunk in self.buffered {
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    }

    /// The next chunk from the client, every bound checked.
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ForwardError>>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.limits.max_body {
                    return self.fail(ForwardError::ClientTooLarge);
                }
                if self.limits.declared.is_some_and(|declared| self.seen > declared) {
                    // More than declared: these bytes are not this request's.
                    return self.fail(ForwardError::ClientBroken);
                }
                self.last_chunk = Instant::now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(_))) => self.fail(ForwardError::ClientBroken),
            Poll::Ready(None) => {
                self.source = None;
                if self.limits.declared.is_some_and(|declared| self.seen != declared) {
                    return Poll::Ready(Some(Err(ForwardError::ClientBroken)));
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let due = (self.last_chunk + self.limits.idle).min(self.limits.deadline);
                if self.timer.deadline() != due {
                    self.timer.as_mut().reset(due);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => self.fail(ForwardError::ClientStalled),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn fail(&mut self, error: ForwardError) -> Poll<Option<Result<Bytes, ForwardError>>> {
        self.source = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<S, E> Stream for RequestBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, ForwardError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(chunk) = this.buffered.pop_front() {
            this.buffered_len -= chunk.len();
            return Poll::Ready(Some(Ok(chunk)));
        }
        this.poll_source(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::{stream, StreamExt};

    use super::*;

    fn limits(declared: Option<u64>) -> BodyLimits {
        BodyLimits {
            declared,
            max_body: 1024,
            idle: Duration::from_millis(300),
            deadline: Instant::now() + Duration::from_secs(2),
        }
    }

    async fn collect<S: Stream<Item = Result<Bytes, ForwardError>> + Unpin>(
        mut body: S,
    ) -> Result<Vec<u8>, ForwardError> {
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_body_of_its_declared_length_passes_whole_prefetched_or_not() {
        let mut body = RequestBody::new(chunks(&["hel", "lo"]), limits(Some(5)));
        body.prefetch(4).await.unwrap();
        assert_eq!(collect(body).await.unwrap(), b"hello");
        let body = RequestBody::new(chunks(&["hel", "lo"]), limits(None));
        assert_eq!(collect(body).await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn bytes_beyond_the_declared_length_are_never_yielded() {
        let smuggled = chunks(&["hello", "GET /admin HTTP/1.1\r\n\r\n"]);
        let mut body = RequestBody::new(smuggled, limits(Some(5)));
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"hello");
        assert_eq!(body.next().await.unwrap().unwrap_err(), ForwardError::ClientBroken);
        assert!(body.next().await.is_none(), "nothing after the fault");
        // In one chunk: refused whole, before any of it is yielded.
        let mut body = RequestBody::new(chunks(&["helloGET /x"]), limits(Some(5)));
        assert_eq!(body.prefetch(1024).await.unwrap_err(), ForwardError::ClientBroken);
    }

    #[tokio::test]
    async fn a_body_short_of_its_declared_length_is_broken() {
        let body = RequestBody::new(chunks(&["hel"]), limits(Some(5)));
        assert_eq!(collect(body).await.unwrap_err(), ForwardError::ClientBroken);
    }

    #[tokio::test]
    async fn a_body_over_max_body_is_too_large() {
        let big = stream::iter((0..3).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 500]))));
        let body = RequestBody::new(big, limits(None));
        assert_eq!(collect(body).await.unwrap_err(), ForwardError::ClientTooLarge);
    }

    #[tokio::test]
    async fn a_broken_body_is_the_clients_fault() {
        let broken = stream::iter([Ok(Bytes::from("a")), Err(std::io::Error::other("reset"))]);
        let body = RequestBody::new(broken, limits(None));
        assert_eq!(collect(body).await.unwrap_err(), ForwardError::ClientBroken);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_between_chunks_is_bounded() {
        let stalled = chunks(&["a"]).chain(stream::pending());
        let started = Instant::now();
        let body = RequestBody::new(stalled, limits(None));
        assert_eq!(collect(body).await.unwrap_err(), ForwardError::ClientStalled);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drip_that_never_pauses_long_is_cut_at_the_body_deadline() {
        // One byte every 200 ms: never silent for the 300 ms allowed, but
        // the whole body must be there within 2 s.
        let drip = stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((Ok::<_, Infallible>(Bytes::from_static(b"x")), ()))
        });
        let started = Instant::now();
        let mut body = RequestBody::new(Box::pin(drip), limits(Some(1000)));
        assert_eq!(body.prefetch(ADMISSION_PREFIX).await.unwrap_err(), ForwardError::ClientStalled);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
