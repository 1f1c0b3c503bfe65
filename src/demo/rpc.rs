//! One AMQP request as a demo service answers it: the message becomes an
//! HTTP request for the service's own actix-web app ([`service::routes`],
//! run in process, no socket), so a service behind the broker answers
//! exactly what it answers over HTTP: same routes, data, JSON 404s,
//! `X-Request-Id` echo. The response becomes the [`Reply`]. This module
//! also decides what each fault does to a request that came over AMQP
//! ([`respond`]; the table is in `demo::amqp`).
//!
//! The request, as mosaic publishes it (SPEC.md, "Messaging backends"): the
//! `headers` table holds `method`, `path` (with its query) and the
//! forwarded headers as string values (`LongString`, or `ShortString`);
//! `content_type` and the body are the request's.
//!
//! [`service::routes`]: super::service::routes

use std::time::Duration;

use actix_http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_http::{Method, Payload, Uri};
use actix_web::body::{self, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::fault::{self, FaultState, Faults, HANG_CAP};
use super::service::error_response;

/// Largest reply body: far above any demo answer, so hitting it is a bug
/// the 500 makes visible rather than a truncated reply.
const MAX_REPLY_BODY: usize = 4 << 20;

/// Why a message is not a request the service can run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No `path` string in the headers table.
    #[error("the headers table has no path string")]
    NoPath,
    /// `path` is not an origin-form path (`/inventory/42?x=1`).
    #[error("path {0:?} is not an origin-form path such as /inventory/42")]
    BadPath(String),
    /// `method` is not an HTTP method token.
    #[error("method {0:?} is not an HTTP method")]
    BadMethod(String),
}

/// A request message, read: what the in-process app is asked.
#[derive(Debug)]
pub struct Request {
    /// `method` (GET when absent, as HTTP's most common one).
    pub method: Method,
    /// `path`, query included.
    pub uri: Uri,
    /// Every other string header that is a valid HTTP header, and
    /// `content_type` as `Content-Type`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The message body.
    pub body: Bytes,
}

impl Request {
    /// Reads a delivered message's properties and body.
    pub fn parse(properties: &BasicProperties, body: Vec<u8>) -> Result<Request, RequestError> {
        let empty = FieldTable::default();
        let table = properties.headers().as_ref().unwrap_or(&empty).inner();
        let text = |key: &str| table.get(key).and_then(string_value);
        let path = text("path").ok_or(RequestError::NoPath)?;
        let path_text = String::from_utf8_lossy(path).into_owned();
        let uri = match Uri::try_from(path) {
            Ok(uri) if path.first() == Some(&b'/') => uri,
            _ => return Err(RequestError::BadPath(path_text)),
        };
        let method = match text("method") {
            None => Method::GET,
            Some(m) => Method::from_bytes(m)
                .map_err(|_| RequestError::BadMethod(String::from_utf8_lossy(m).into_owned()))?,
        };
        let mut headers: Vec<_> = table
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "method" | "path"))
            .filter_map(|(key, value)| {
                let name = HeaderName::from_bytes(key.as_str().as_bytes()).ok()?;
                Some((name, HeaderValue::from_bytes(string_value(value)?).ok()?))
            })
            .collect();
        let content_type = properties.content_type().as_ref();
        if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(c.as_str()).ok()) {
            headers.push((CONTENT_TYPE, value));
        }
        Ok(Request { method, uri, headers, body: Bytes::from(body) })
    }

    /// True for `/health`, `/_fault`, `/_stats`: no fault applies, as over HTTP.
    fn is_control(&self) -> bool {
        fault::is_control_path(self.uri.path())
    }

    fn into_http(self) -> actix_http::Request {
        let mut req = actix_http::Request::with_payload(Payload::from(self.body));
        let head = req.head_mut();
        head.method = self.method;
        head.uri = self.uri;
        for (name, value) in self.headers {
            head.headers.append(name, value);
        }
        req
    }
}

/// A header value the gateway may send: a string, long or short.
fn string_value(value: &AMQPValue) -> Option<&[u8]> {
    match value {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

/// What goes back to `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status the app answered (the reply's `status` header).
    pub status: u16,
    /// The response's `Content-Type`.
    pub content_type: Option<String>,
    /// The response's `X-Request-Id` (the echo of the request's).
    pub request_id: Option<String>,
    /// The response body.
    pub body: Bytes,
}

impl Reply {
    /// The reply to a message that is no request: 400 with a JSON error.
    pub async fn bad_request(error: &RequestError) -> Reply {
        let res = error_response(StatusCode::BAD_REQUEST, "invalid_request", &error.to_string());
        Reply::of(res).await
    }

    async fn of<B: MessageBody>(res: HttpResponse<B>) -> Reply {
        let header =
            |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (content_type, request_id) = (header("content-type"), header("x-request-id"));
        let status = res.status().as_u16();
        match body::to_bytes_limited(res.into_body(), MAX_REPLY_BODY).await {
            Ok(Ok(body)) => Reply { status, content_type, request_id, body },
            _ => {
                let why = "the answer's body failed or is over 4 MiB";
                let res = error_response(StatusCode::INTERNAL_SERVER_ERROR, "body_failed", why);
                let body = body::to_bytes(res.into_body()).await.unwrap_or_default();
                Reply {
                    status: 500,
                    content_type: Some("application/json".into()),
                    request_id,
                    body,
                }
            }
        }
    }

    /// The same reply with `drip_ms` turned into time: over AMQP a reply is
    /// one message, so it leaves when the last chunk would have.
    fn drip_delay(&self, faults: &Faults) -> Duration {
        if faults.drip_ms == 0 {
            return Duration::ZERO;
        }
        let chunks = self.body.len().div_ceil(faults.drip_bytes.max(1)) as u64;
        Duration::from_millis(chunks.saturating_mul(faults.drip_ms))
    }
}

/// Runs `request` on `app` under the current faults; `None`: no reply is
/// sent (hang, reset), after holding the request for as long as a hang does.
///
/// `expiration` is the message's: a hang holds the request until the
/// requester has given up (at most [`HANG_CAP`]), then lets it go.
pub async fn respond<S, B>(
    app: &S,
    faults: &FaultState,
    request: Request,
    expiration: Option<Duration>,
) -> Option<Reply>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    if request.is_control() {
        return Some(run(app, request).await);
    }
    let faults = faults.begin_data_request();
    if faults.hang {
        tokio::time::sleep(expiration.unwrap_or(HANG_CAP).min(HANG_CAP)).await;
        return None;
    }
    tokio::time::sleep(faults.delay()).await;
    if faults.reset || fault::happens(faults.reset_rate) {
        return None;
    }
    let reply = if fault::happens(faults.error_rate) {
        Reply::of(fault::injected_error()).await
    } else if faults.non_json {
        Reply::of(fault::non_json_page()).await
    } else {
        run(app, request).await
    };
    tokio::time::sleep(reply.drip_delay(&faults)).await;
    Some(reply)
}

/// The app's answer; an app error answers as actix-web would over HTTP.
async fn run<S, B>(app: &S, request: Request) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    match app.call(request.into_http()).await {
        Ok(res) => Reply::of(res.into_parts().1).await,
        Err(e) => Reply::of(e.as_response_error().error_response()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};

    fn message(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in pairs {
            table.insert(ShortString::from(*key), value.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    fn long(text: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(text))
    }

    /// Method, path and forwarded headers come from the table; string kinds
    /// both work; other kinds and `method`/`path` are not HTTP headers.
    #[test]
    fn reads_the_headers_table() {
        let props = message(&[
            ("method", AMQPValue::ShortString("DELETE".into())),
            ("path", long("/cart/items/42?x=1")),
            ("authorization", long("Bearer alice")),
            ("x-request-id", long("r-1")),
            ("attempt", AMQPValue::LongInt(2)),
        ])
        .with_content_type("application/json".into());
        let req = Request::parse(&props, b"{}".to_vec()).unwrap();
        assert_eq!(req.method, Method::DELETE);
        assert_eq!(req.uri.path(), "/cart/items/42");
        assert_eq!(req.uri.query(), Some("x=1"));
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-request-id", "content-type"]);
        assert_eq!(&req.body[..], b"{}");
    }

    /// A missing path, a path that is not origin-form, a bad method: errors
    /// that name what is wrong; a missing method is GET.
    #[test]
    fn refuses_what_is_no_request() {
        let parse = |pairs: &[(&str, AMQPValue)]| Request::parse(&message(pairs), Vec::new());
        assert_eq!(parse(&[]).err(), Some(RequestError::NoPath));
        let absolute = parse(&[("path", long("http://x/inventory/1"))]).err();
        assert!(matches!(absolute, Some(RequestError::BadPath(_))), "{absolute:?}");
        let method = parse(&[("path", long("/")), ("method", long("GE T"))]).err();
        assert_eq!(method, Some(RequestError::BadMethod("GE T".into())));
        assert_eq!(parse(&[("path", long("/inventory/1"))]).map(|r| r.method), Ok(Method::GET));
    }

    /// Drip over AMQP: the reply waits as long as the last chunk would.
    #[test]
    fn drip_is_a_delay() {
        let reply = Reply {
            status: 200,
            content_type: None,
            request_id: None,
            body: Bytes::from(vec![0; 130]),
        };
        let faults = Faults { drip_ms: 10, drip_bytes: 64, ..Faults::default() };
        assert_eq!(reply.drip_delay(&faults), Duration::from_millis(30));
        assert_eq!(reply.drip_delay(&Faults::default()), Duration::ZERO);
    }
}
