//! Fault injection for the demo services, after Toxiproxy's toxics: what the
//! chaos experiments turn on to see mosaic degrade a page.
//!
//! Settings come from the `demo-service` flags and can be replaced at run time
//! (`GET`/`PUT`/`DELETE /_fault`). They apply to the data endpoints only:
//! `/health` stays truthful (Consul must see a slow service as up) and
//! `/_fault` must stay reachable to turn a fault off again.
//!
//! `GET /_stats` answers `{"requests": N}`: how many data requests reached
//! the service since it started, faulted or not, so a chaos test can see
//! whether an open breaker really stops the calls.
//!
//! Order in which a request meets them: `hang` → `latency_ms`/`jitter_ms` →
//! `reset`/`reset_rate` → `error_rate` → `non_json` → `drip_ms` (on whatever
//! body is sent, 503s included).
//!
//! `reset`: actix-web does not let a handler abort its connection, so a reset
//! is a response whose body stream fails on its first poll: the client gets
//! the status line and headers of a chunked answer, then the connection
//! closes before any body (a service that crashed mid-answer). A raw TCP
//! front could send an RST instead, but would mean a second HTTP stack in
//! the demo; not worth it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::{self, BodyStream, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::service::error_response;

/// How long a `hang` holds a request whose client stays connected.
pub const HANG_CAP: Duration = Duration::from_secs(600);
/// Largest accepted `latency_ms` + `jitter_ms`, and largest `drip_ms`.
pub const MAX_DELAY_MS: u64 = 600_000;
/// Default chunk size for `drip_ms`.
pub const DEFAULT_DRIP_BYTES: usize = 64;

/// The fault settings of one service. Every field is optional in JSON; what
/// is left out is off.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay before answering, in milliseconds.
    pub latency_ms: u64,
    /// The delay varies by up to this much either way (Toxiproxy's jitter).
    pub jitter_ms: u64,
    /// Fraction (0..=1) of requests answered 503 with a JSON error.
    pub error_rate: f64,
    /// Accept requests and never answer them.
    pub hang: bool,
    /// Close every connection without a response.
    pub reset: bool,
    /// Fraction (0..=1) of requests whose connection is closed without a response.
    pub reset_rate: f64,
    /// Send the body in `drip_bytes` chunks with this delay before each one.
    pub drip_ms: u64,
    /// Chunk size for `drip_ms`.
    pub drip_bytes: usize,
    /// Answer 200 with an HTML page instead of JSON.
    pub non_json: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            hang: false,
            reset: false,
            reset_rate: 0.0,
            drip_ms: 0,
            drip_bytes: DEFAULT_DRIP_BYTES,
            non_json: false,
        }
    }
}

impl Faults {
    /// Every problem with these settings, each naming the field and the fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (name, rate) in [("error_rate", self.error_rate), ("reset_rate", self.reset_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                errors.push(format!("{name}: {rate} is not a fraction between 0 and 1"));
            }
        }
        if self.latency_ms.saturating_add(self.jitter_ms) > MAX_DELAY_MS {
            errors.push(format!("latency_ms + jitter_ms: at most {MAX_DELAY_MS}"));
        }
        if self.drip_ms > MAX_DELAY_MS {
            errors.push(format!("drip_ms: {} is over the maximum {MAX_DELAY_MS}", self.drip_ms));
        }
        if !(1..=65_536).contains(&self.drip_bytes) {
            errors.push(format!("drip_bytes: {} is not between 1 and 65536", self.drip_bytes));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The delay for one request: latency ± up to jitter, never negative.
    pub(crate) fn delay(&self) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            fastrand::i64(-(self.jitter_ms as i64)..=self.jitter_ms as i64)
        };
        Duration::from_millis((self.latency_ms as i64 + jitter).max(0) as u64)
    }
}

/// Rolls a die: true for about `rate` of the calls (never for 0, always for 1).
pub(crate) fn happens(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

/// The service's current settings, shared by the handlers and `/_fault`.
#[derive(Default)]
pub struct FaultState {
    // parking_lot: held only to copy the settings in or out, never across an await.
    current: Mutex<Faults>,
    /// Data requests received (everything but `/health`, `/_fault`, `/_stats`).
    requests: AtomicU64,
}

impl FaultState {
    /// State starting with these settings.
    pub fn new(faults: Faults) -> Self {
        FaultState { current: Mutex::new(faults), requests: AtomicU64::new(0) }
    }

    /// Data requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The settings now.
    pub fn get(&self) -> Faults {
        *self.current.lock()
    }

    fn set(&self, faults: Faults) {
        *self.current.lock() = faults;
    }

    /// Counts one data request and returns the settings it meets.
    pub(crate) fn begin_data_request(&self) -> Faults {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.get()
    }
}

/// `/health`, `/_fault` and `/_stats`: never faulted nor counted, so health
/// stays truthful and a fault can always be turned off.
pub fn is_control_path(path: &str) -> bool {
    matches!(path, "/health" | "/_fault" | "/_stats")
}

/// What `error_rate` answers: a JSON 503.
pub(crate) fn injected_error() -> HttpResponse {
    error_response(StatusCode::SERVICE_UNAVAILABLE, "injected_fault", "error_rate fault injected")
}

/// What `non_json` answers: 200 with an HTML maintenance page.
pub(crate) fn non_json_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(
        "<!DOCTYPE html><html><head><title>Maintenance</title></head>\
         <body><h1>We'll be right back</h1></body></html>",
    )
}

/// Parses a CLI duration into milliseconds: `"250ms"`, `"2s"`, `"1m"`, or a
/// bare number of milliseconds.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 =
        digits.parse().map_err(|_| format!("invalid duration {text:?} (try \"250ms\", \"2s\")"))?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(format!("invalid duration unit in {text:?} (use ms, s or m)")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Routes `GET`, `PUT` and `DELETE /_fault`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/_fault")
            .route(web::get().to(get_faults))
            .route(web::put().to(put_faults))
            .route(web::delete().to(delete_faults)),
    );
    cfg.route("/_stats", web::get().to(get_stats));
}

async fn get_stats(state: web::Data<FaultState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "requests": state.requests() }))
}

async fn get_faults(state: web::Data<FaultState>) -> HttpResponse {
    HttpResponse::Ok().json(state.get())
}

/// Replaces the settings; fields left out are off. Invalid settings change nothing.
async fn put_faults(state: web::Data<FaultState>, body: web::Bytes) -> HttpResponse {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_json", &e.to_string()),
    };
    if let Err(errors) = faults.validate() {
        return error_response(StatusCode::BAD_REQUEST, "invalid_faults", &errors.join("; "));
    }
    state.set(faults);
    HttpResponse::Ok().json(faults)
}

/// Turns every fault off (not back to the CLI flags: "reset" means healthy).
async fn delete_faults(state: web::Data<FaultState>) -> HttpResponse {
    state.set(Faults::default());
    HttpResponse::Ok().json(Faults::default())
}

/// Middleware counting data requests and applying the current faults to
/// everything but `/health`, `/_fault` and `/_stats`.
pub async fn inject(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let faults = match req.app_data::<web::Data<FaultState>>() {
        Some(state) if !is_control_path(req.path()) => state.begin_data_request(),
        _ => return Ok(next.call(req).await?.map_into_boxed_body()),
    };
    if faults.hang {
        // The server disallows half-closed connections, so actix drops this
        // future as soon as the client goes away; the cap bounds the rest.
        tokio::time::sleep(HANG_CAP).await;
        return Ok(req.into_response(reset_response()));
    }
    let delay = faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if faults.reset || happens(faults.reset_rate) {
        return Ok(req.into_response(reset_response()));
    }
    let res = if happens(faults.error_rate) {
        req.into_response(injected_error())
    } else if faults.non_json {
        req.into_response(non_json_page())
    } else {
        next.call(req).await?.map_into_boxed_body()
    };
    if faults.drip_ms == 0 {
        return Ok(res);
    }
    let (req, res) = res.into_parts();
    let (res, body) = res.into_parts();
    let bytes = body::to_bytes(body).await.unwrap_or_default();
    let drip = drip(bytes, faults.drip_bytes.max(1), Duration::from_millis(faults.drip_ms));
    Ok(ServiceResponse::new(req, res.set_body(BoxBody::new(drip))))
}

/// A body that fails before its first byte: the connection is closed with no response.
fn reset_response() -> HttpResponse {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset fault injected",
        ))
    });
    HttpResponse::Ok().body(BodyStream::new(failing))
}

/// The body in `chunk`-byte pieces, `delay` before each one.
fn drip(
    bytes: Bytes,
    chunk: usize,
    delay: Duration,
) -> BodyStream<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>> {
    BodyStream::new(futures_util::stream::unfold(bytes, move |mut rest| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(delay).await;
        let piece = rest.split_to(chunk.min(rest.len()));
        Some((Ok(piece), rest))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CLI durations: the units the config uses, and plain milliseconds.
    #[test]
    fn durations() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("2s"), Ok(2000));
        assert_eq!(parse_millis("1m"), Ok(60_000));
        assert_eq!(parse_millis("40"), Ok(40));
        assert!(parse_millis("fast").is_err());
        assert!(parse_millis("5h").is_err());
    }

    /// Out-of-range settings are refused with the field named.
    #[test]
    fn validation() {
        assert!(Faults::default().validate().is_ok());
        let bad = Faults { error_rate: 1.5, drip_bytes: 0, ..Faults::default() };
        let errors = bad.validate().err().unwrap_or_default();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("error_rate"));
    }

    /// Unknown JSON keys are errors: a typo must not silently inject nothing.
    #[test]
    fn unknown_keys() {
        assert!(serde_json::from_str::<Faults>(r#"{"latency":5}"#).is_err());
        let f: Faults = serde_json::from_str(r#"{"latency_ms":5}"#).unwrap_or_default();
        assert_eq!(f.latency_ms, 5);
        assert_eq!(f.drip_bytes, DEFAULT_DRIP_BYTES);
    }

    /// Jitter stays within ± and never goes below zero.
    #[test]
    fn jitter_bounds() {
        let f = Faults { latency_ms: 10, jitter_ms: 50, ..Faults::default() };
        for _ in 0..1000 {
            assert!(f.delay() <= Duration::from_millis(60));
        }
    }
}
