//! One HTTP attempt against one instance, on this worker's connection pool.
//!
//! `awc::Client` is `!Send` and pools connections per client, so each
//! actix-web worker thread keeps its own (a thread-local): backend I/O stays
//! on the worker that serves the request, connections are reused across
//! requests of that worker, and no lock or thread hop sits on the path.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;

use super::error::FetchError;

/// Idle keep-alive connections are closed after this long.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Connections are recycled after this long, so DNS and discovery changes
/// and backend restarts are picked up even on busy pools.
const CONN_LIFETIME: Duration = Duration::from_secs(120);
/// Connect attempts never run longer than this (the per-attempt timeout is
/// usually shorter and applies first).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A 4xx body is drained (for connection reuse) only up to this size.
const DRAIN_LIMIT: usize = 64 * 1024;

thread_local! {
    static CLIENT: awc::Client = build_client();
}

fn build_client() -> awc::Client {
    let connector = awc::Connector::new()
        .limit(0)
        .timeout(CONNECT_TIMEOUT)
        .conn_keep_alive(KEEP_ALIVE)
        .conn_lifetime(CONN_LIFETIME);
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .disable_redirects()
        .no_default_headers()
        .finish()
}

/// This worker's client (a cheap `Rc` clone).
pub fn worker_client() -> awc::Client {
    CLIENT.with(|c| c.clone())
}

/// A service's answer that was not a fault: 2xx with a JSON body, or 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// The body for 2xx (validated JSON); empty for 4xx.
    pub body: Bytes,
}

impl Fetched {
    /// A 2xx answer (its body is the section).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// GETs `url` once. The caller bounds the time (`tokio::time::timeout_at`).
pub async fn get_json(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    max_body: usize,
) -> Result<Fetched, FetchError> {
    let mut request = worker_client().get(url);
    for (name, value) in headers {
        request = request.insert_header((name.clone(), value.clone()));
    }
    let mut response = request
        .insert_header((actix_web::http::header::ACCEPT, "application/json"))
        .send()
        .await
        .map_err(classify_send_error)?;
    let status = response.status().as_u16();
    match status {
        500..=599 => Err(FetchError::Status5xx),
        400..=499 => {
            // Drain a small body so the connection can be reused; a failure
            // here changes nothing about the answer.
            let _ = response.body().limit(DRAIN_LIMIT).await;
            Ok(Fetched { status, body: Bytes::new() })
        }
        200..=299 => {
            let body = response.body().limit(max_body).await.map_err(classify_payload_error)?;
            if !is_json(&body) {
                return Err(FetchError::InvalidBody);
            }
            Ok(Fetched { status, body })
        }
        // 1xx and 3xx (redirects are not followed) carry no section.
        _ => Err(FetchError::InvalidBody),
    }
}

/// Validates JSON without building values (see `json_check`).
pub use super::json_check::is_json;

/// Maps awc's send errors to page error kinds.
pub fn classify_send_error(error: SendRequestError) -> FetchError {
    match error {
        SendRequestError::Timeout => FetchError::Timeout,
        _ => FetchError::Connect,
    }
}

/// Maps body read errors: too large, or a broken connection.
pub fn classify_payload_error(error: PayloadError) -> FetchError {
    match error {
        PayloadError::Overflow => FetchError::TooLarge,
        _ => FetchError::Connect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_check_accepts_any_json_value_and_nothing_else() {
        for ok in [&b"{}"[..], b"[1,2]", b" \"s\" ", b"null", b"12.5", b"{\"a\":{\"b\":[true]}}"] {
            assert!(is_json(ok), "{ok:?}");
        }
        for bad in [&b""[..], b"<html>", b"{", b"{} {}", b"{\"a\":}"] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }
}
