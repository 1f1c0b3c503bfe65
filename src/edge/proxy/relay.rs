//! The service's answer on its way to the client: its head relayed, its
//! body handed over whole or streamed.
//!
//! A streamed body ([`RelayedBody`]) keeps the call open until its last
//! byte: the bulkhead slot, the breaker permit and the backend's counters
//! are settled when it ends, and a body that stalls (the backend's
//! `timeout` between reads) or is cut short counts as a fault of the
//! backend. The client's connection is then closed early, after the bytes
//! already sent, so the client can tell the answer is incomplete (its
//! `Content-Length` is not met, or no last chunk comes). Its access line is
//! written at that end, with how the body ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;

use super::headers::raw_header_lines;
use crate::backend::bulkhead::BulkheadSlot;
use crate::backend::client::forward::{BodyStream, Incoming, IncomingBody};
use crate::backend::{Backend, FetchError, HeldPermit, Outcome};
use crate::telemetry::access;

/// What a request's access line needs, kept for a body that ends after the
/// handler returned (a proxied body, a streamed page).
#[derive(Debug)]
pub struct DeferredAccess {
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
    /// W3C trace id.
    pub trace_id: Box<str>,
    /// HTTP method.
    pub method: Method,
    /// Request path as sent.
    pub path: Box<str>,
    /// The route label (the proxy prefix).
    pub route: Arc<str>,
    /// When the request arrived.
    pub arrived: Instant,
    /// The consumer, when the route asked for a key.
    pub consumer: Option<Arc<str>>,
}

/// The call a streamed body keeps open.
#[derive(Debug)]
pub struct OpenCall {
    /// The backend answering.
    pub backend: Arc<Backend>,
    /// Its breaker permit, recorded when the body ends; `None` when the
    /// attempt was settled already (a 5xx recorded before its retry failed
    /// to start).
    pub permit: Option<HeldPermit>,
    /// Its place in the bulkhead, freed when the body ends.
    pub slot: BulkheadSlot,
    /// When the attempt that answered started.
    pub started: std::time::Instant,
    /// Time from the attempt's start to the answer's head.
    pub head_elapsed: std::time::Duration,
    /// The access line, when the log is on.
    pub access: Option<DeferredAccess>,
}

/// Sends the service's answer on, hop-by-hop headers dropped. `call`: the
/// open call, for a body that streams (settled already for the others).
pub fn relay(incoming: Incoming, head_request: bool, call: OpenCall) -> HttpResponse {
    let Ok(status) = StatusCode::from_u16(incoming.status) else {
        // The decoder only lets 100-599 through; kept as a guard.
        return super::proxy_error(
            StatusCode::BAD_GATEWAY,
            FetchError::Connect,
            call.backend.name(),
        );
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
            let body = RelayedBody { inner: stream, call: Some(call), status: incoming.status };
            match declared {
                Some(len) => builder.body(SizedStream::new(len, body)),
                // Not `streaming()`: it would add a `Content-Type` of its own
                // beside the service's relayed one.
                None => builder.body(actix_web::body::BodyStream::new(body)),
            }
        }
    };
    response.head_mut().set_raw_header_lines(lines);
    response
}

/// A streamed answer body that settles its call when it ends.
#[derive(Debug)]
pub struct RelayedBody {
    inner: Box<BodyStream>,
    call: Option<OpenCall>,
    status: u16,
}

impl RelayedBody {
    /// Settles the call: `None` for a body that ended cleanly, else how it
    /// ended (`Err(name)` for a client that went away first).
    fn settle(&mut self, outcome: Result<Option<FetchError>, &'static str>) {
        let Some(call) = self.call.take() else { return };
        let body_error = match outcome {
            Ok(None) => {
                if let Some(permit) = call.permit {
                    permit.record(Outcome::Answered(self.status), call.head_elapsed);
                }
                None
            }
            Ok(Some(error)) => {
                if let Some(permit) = call.permit {
                    permit.record(Outcome::Failed(error), call.started.elapsed());
                }
                tracing::warn!(backend = call.backend.name(), %error, "proxied body failed");
                Some(error.as_str())
            }
            // The service did nothing wrong that we saw: the permit goes
            // back unrecorded (dropped with the call).
            Err(reason) => Some(reason),
        };
        drop(call.slot);
        if let Some(line) = &call.access {
            line.write(self.status, None, body_error);
        }
    }
}

impl DeferredAccess {
    /// Writes the line, `elapsed` to now: for a body (proxied or a streamed
    /// page) that ended after the handler returned.
    pub fn write(&self, status: u16, page: Option<(bool, &str)>, body_error: Option<&str>) {
        access::write(&access::AccessLine {
            request_id: self.request_id.to_str().unwrap_or("-"),
            trace_id: &self.trace_id,
            method: self.method.as_str(),
            path: &self.path,
            route: &self.route,
            status,
            elapsed: self.arrived.elapsed(),
            page,
            body_error,
            consumer: self.consumer.as_deref(),
        });
    }
}

impl Stream for RelayedBody {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.inner).poll_next(cx);
        match &next {
            Poll::Ready(None) => this.settle(Ok(None)),
            Poll::Ready(Some(Err(error))) => this.settle(Ok(Some(*error))),
            _ => {}
        }
        next
    }
}

impl Drop for RelayedBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or stopped reading
        // and its connection was closed).
        self.settle(Err("client_closed"));
    }
}
