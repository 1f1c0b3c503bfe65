//! A proxy route whose backend is behind the broker (SPEC.md, "Messaging
//! backends"): the method, rewritten path and query, end-to-end headers and
//! body go in one message; the reply is the response. With `reply = false`
//! the message is published persistent and answered `202` once the broker
//! confirms it.
//!
//! The same checks as an HTTP proxy route come first (`super::check`), and
//! the same header policy decides what is carried (the lines
//! `headers::outgoing_header_lines` writes for an HTTP service become the
//! message's `headers` table). The body is read whole before admission (a
//! message is sent whole; `server.max_body` bounds it). Then the call
//! procedure runs as for any backend: admission, attempts bounded by the
//! backend's `timeout`, each recorded. Only a bodiless GET/HEAD/OPTIONS
//! request/reply may be tried again; a one-way publish never is, so one
//! client request is never published twice.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::time::Instant;

use super::{client_fault, headers, proxy_error, status_for, target_path, ProxyRequest};
use crate::backend::amqp::{AmqpLink, Reply, Request};
use crate::backend::call::{Attempts, Called, Judged};
use crate::backend::{Admission, FetchError, Outcome};
use crate::config::ServerConfig;
use crate::edge::error_response;
use crate::edge::request_body::{BodyLimits, ClientPayload, RequestBody};
use crate::gateway::runtime::ProxyRuntime;

/// Forwards one request through the broker.
pub(super) async fn forward(
    request: &ProxyRequest<'_>,
    payload: ClientPayload,
    proxy: &ProxyRuntime,
    server: &ServerConfig,
    declared: Option<u64>,
    link: &Arc<AmqpLink>,
) -> HttpResponse {
    let req = request.req;
    let backend = &proxy.backend;
    let body = match read_body(request, payload, declared, server).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let path = target_path(
        &proxy.config.prefix,
        proxy.config.rewrite.as_deref(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    let lines =
        headers::outgoing_header_lines(req, request.client, request.per_request, request.identity);
    let message = Request {
        method: req.method().as_str(),
        path: &path,
        headers: header_pairs(&lines),
        request_id: Some(request.request_id.as_bytes()),
        content_type: (!body.is_empty())
            .then(|| req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes))
            .flatten(),
        body,
    };
    if message.check().is_err() {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            Some("a header name longer than 255 bytes cannot be carried over AMQP"),
        );
    }
    let Admission { instances, permit, slot: _slot } = match backend.admit() {
        Ok(admission) => admission,
        Err(error) => return proxy_error(status_for(error), error, backend.name()),
    };
    let timeout = backend.config().timeout;
    if !link.target().reply {
        let mut one_way = OneWay { link, message: &message, timeout };
        return match backend.call(&instances, permit, &mut one_way, request.arrived).await {
            Ok(_) => accepted(request.request_id),
            Err(error) => proxy_error(status_for(error), error, backend.name()),
        };
    }
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut rpc =
        Rpc { link, message: &message, timeout, repeatable: idempotent && message.body.is_empty() };
    match backend.call(&instances, permit, &mut rpc, request.arrived).await {
        Ok(Called { output, .. }) => response(output, *req.method() == Method::HEAD),
        Err(error) => proxy_error(status_for(error), error, backend.name()),
    }
}

/// The whole body, every client-side bound applied; empty without one.
async fn read_body(
    request: &ProxyRequest<'_>,
    payload: ClientPayload,
    declared: Option<u64>,
    server: &ServerConfig,
) -> Result<Bytes, HttpResponse> {
    let chunked =
        request.client.transfer_encoding || payload.undeclared_h2_body(request.req, declared);
    if !chunked && declared.unwrap_or(0) == 0 {
        return Ok(Bytes::new());
    }
    let limits = BodyLimits {
        declared: declared.filter(|_| !chunked),
        max_body: server.max_body,
        idle: server.client_timeout,
        deadline: request.arrived + server.body_timeout,
    };
    RequestBody::new(payload, limits).read_whole().await.map_err(|error| {
        client_fault(error)
            .unwrap_or_else(|_| error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", None))
    })
}

/// `name: value` pairs of header lines mosaic wrote itself (one per line,
/// `name: value\r\n`, names are tokens).
fn header_pairs(lines: &[u8]) -> Vec<(&str, &[u8])> {
    lines
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = memchr::memchr(b':', line)?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
            Some((name, value))
        })
        .collect()
}

/// The reply as the client's response.
fn response(reply: Reply, head_request: bool) -> HttpResponse {
    let status = reply.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if let Some(value) = reply.content_type.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        response.insert_header((header::CONTENT_TYPE, value));
    }
    if head_request {
        return response.finish();
    }
    response.body(reply.body)
}

/// `202 {"accepted": true, "message_id": ...}`.
fn accepted(request_id: &HeaderValue) -> HttpResponse {
    let message_id = request_id.to_str().unwrap_or_default();
    let body = serde_json::json!({ "accepted": true, "message_id": message_id });
    HttpResponse::Accepted()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.to_string())
}

/// Request/reply through the broker, attempt by attempt.
struct Rpc<'a> {
    link: &'a AmqpLink,
    message: &'a Request<'a>,
    timeout: std::time::Duration,
    repeatable: bool,
}

impl Attempts for Rpc<'_> {
    type Output = Reply;
    type Error = FetchError;

    fn repeatable(&self) -> bool {
        self.repeatable
    }

    async fn attempt(&mut self, _broker: &str, started: Instant) -> Result<Reply, FetchError> {
        let until = started + self.timeout;
        tokio::time::timeout_at(until, self.link.call(self.message, until))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    fn judge(
        &self,
        result: Result<Reply, FetchError>,
        started: Instant,
    ) -> Judged<Reply, FetchError> {
        let elapsed = started.elapsed();
        let fault = |error: FetchError| Judged::Fault {
            outcome: Outcome::Failed(error),
            elapsed,
            retryable: error.is_retryable(),
            last: Err(error),
        };
        match result {
            Ok(reply) => match reply.status {
                None => fault(FetchError::InvalidBody),
                Some(status @ 500..=599) => Judged::Fault {
                    outcome: Outcome::Answered(status),
                    elapsed,
                    retryable: true,
                    last: Ok(reply),
                },
                Some(status) => Judged::Settled(reply, Outcome::Answered(status), elapsed),
            },
            Err(error) => fault(error),
        }
    }
}

/// A one-way publish: one attempt, never repeated.
struct OneWay<'a> {
    link: &'a AmqpLink,
    message: &'a Request<'a>,
    timeout: std::time::Duration,
}

impl Attempts for OneWay<'_> {
    type Output = ();
    type Error = FetchError;

    fn repeatable(&self) -> bool {
        false
    }

    async fn attempt(&mut self, _broker: &str, started: Instant) -> Result<(), FetchError> {
        tokio::time::timeout_at(started + self.timeout, self.link.publish(self.message))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    fn judge(&self, result: Result<(), FetchError>, started: Instant) -> Judged<(), FetchError> {
        let elapsed = started.elapsed();
        match result {
            Ok(()) => Judged::Settled((), Outcome::Answered(202), elapsed),
            Err(error) => Judged::Fault {
                outcome: Outcome::Failed(error),
                elapsed,
                retryable: false,
                last: Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_become_pairs() {
        let lines = b"accept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-empty: \r\n";
        assert_eq!(
            header_pairs(lines),
            [
                ("accept", &b"*/*"[..]),
                ("x-forwarded-for", b"10.0.0.1, 127.0.0.1"),
                ("x-empty", b""),
            ]
        );
    }
}
