//! The access log: one line per request, written without `tracing`'s
//! formatter. Measured on the side-by-side benchmark, a line per request
//! through `tracing-subscriber`'s field visitors cost the page about a
//! quarter of its CPU; here the line is written straight into a reused
//! buffer and handed to the same non-blocking log thread as every other log
//! line (so lines never interleave, and a full queue drops, never blocks).
//!
//! Lines are batched per worker thread: each worker appends its lines to
//! its own buffer and hands the buffer to the log thread when it holds
//! [`BATCH_BYTES`] or every [`FLUSH_EVERY`], whichever comes first (the
//! `buffer=` and `flush=` of nginx's `access_log`). One line per request
//! handed over on its own woke the log thread once per request; on a
//! gateway pinned to one core that wake-up and the context switches cost
//! about a tenth of a proxied request (`BENCHMARKS.md`). A line is thus
//! written at most `FLUSH_EVERY` after its request; lines still batched when
//! a worker stops are handed over as it stops.
//!
//! The line carries the fields operators filter on: `request_id`,
//! `trace_id`, `method`, `path`, `route`, `status`, `elapsed_ms`, and for
//! pages `complete` and `degraded`. Its target is `mosaic::access`, so
//! `RUST_LOG=info,mosaic::access=off` turns it off.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::NonBlocking;

use super::LogFormat;

/// Where access lines go, set once by `init_logging` when the filter lets
/// `mosaic::access` through. Unset (tests, embedding): nothing is written.
static SINK: OnceLock<(NonBlocking, LogFormat)> = OnceLock::new();

/// Enables the access log into `writer` (called by `init_logging`).
pub(super) fn enable(writer: NonBlocking, format: LogFormat) {
    let _ = SINK.set((writer, format));
}

/// Whether access lines are written (checked before gathering page details).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// One request's line.
#[derive(Debug)]
pub struct AccessLine<'a> {
    /// `X-Request-Id`.
    pub request_id: &'a str,
    /// W3C trace id.
    pub trace_id: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Request path as sent.
    pub path: &'a str,
    /// Route template, proxy prefix or `unmatched`.
    pub route: &'a str,
    /// Response status.
    pub status: u16,
    /// Time to the response (head, for proxies); logged as `elapsed_ms`
    /// with microsecond precision.
    pub elapsed: Duration,
    /// For pages: completeness and the degraded sections.
    pub page: Option<(bool, &'a str)>,
    /// For a proxied body streamed after its head: how it ended when it did
    /// not end cleanly (an error name such as `timeout`, or `client_closed`).
    /// Such a line is written when the body ends, `elapsed` to that moment.
    pub body_error: Option<&'a str>,
    /// The consumer the API key named, when the route asked for one (its
    /// name only: never the key).
    pub consumer: Option<&'a str>,
}

/// A worker's batch is handed to the log thread when it holds this much:
/// about 150 lines, so a worker serving 70,000 proxied requests a second
/// wakes the log thread about 450 times a second, not 70,000.
pub const BATCH_BYTES: usize = 32 * 1024;
/// A worker's batch is handed over at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// This thread's lines not yet handed to the log thread.
struct Batch {
    lines: String,
    /// Whether this thread runs a flush timer (actix workers do); without
    /// one, every line is handed over at once.
    timed: bool,
}

impl Batch {
    fn hand_over(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        if let Some((writer, _)) = SINK.get() {
            // Lossy by design: a full queue drops the batch rather than block.
            let mut writer = writer.clone();
            let _ = writer.write_all(self.lines.as_bytes());
        }
        self.lines.clear();
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.hand_over();
    }
}

thread_local! {
    static BATCH: RefCell<Batch> =
        RefCell::new(Batch { lines: String::with_capacity(BATCH_BYTES + 512), timed: false });
}

/// Hands this thread's batch over when dropped: the flush timer's task holds
/// one, so a worker that stops hands its last lines over.
struct HandOverOnDrop;

impl Drop for HandOverOnDrop {
    fn drop(&mut self) {
        flush_this_thread();
    }
}

/// Hands this thread's batched lines to the log thread now.
pub fn flush_this_thread() {
    let _ = BATCH.try_with(|batch| {
        if let Ok(mut batch) = batch.try_borrow_mut() {
            batch.hand_over();
        }
    });
}

/// Writes the line, if the access log is on.
pub fn write(line: &AccessLine<'_>) {
    let Some((_, format)) = SINK.get() else { return };
    BATCH.with(|batch| {
        let Ok(mut batch) = batch.try_borrow_mut() else { return };
        if !batch.timed && actix_rt::Arbiter::try_current().is_some() {
            // An actix worker (or arbiter): flush on a timer from now on.
            batch.timed = true;
            actix_rt::spawn(async {
                let _hand_over = HandOverOnDrop;
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    flush_this_thread();
                }
            });
        }
        match format {
            LogFormat::Json => json(&mut batch.lines, line),
            LogFormat::Human => human(&mut batch.lines, line),
        }
        batch.lines.push('\n');
        if !batch.timed || batch.lines.len() >= BATCH_BYTES {
            batch.hand_over();
        }
    });
}

// The line writers below avoid `write!`: every request writes one line, and
// the formatting machinery (float formatting above all) cost more than the
// rest of the line.

fn json(out: &mut String, l: &AccessLine<'_>) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out);
    out.push_str("\",\"level\":\"INFO\",\"target\":\"mosaic::access\"");
    for (key, value) in [
        ("request_id", l.request_id),
        ("trace_id", l.trace_id),
        ("method", l.method),
        ("path", l.path),
        ("route", l.route),
    ] {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        json_string(out, value);
    }
    out.push_str(",\"status\":");
    push_uint(out, u64::from(l.status));
    out.push_str(",\"elapsed_ms\":");
    push_millis(out, l.elapsed);
    if let Some((complete, degraded)) = l.page {
        out.push_str(if complete { ",\"complete\":true" } else { ",\"complete\":false" });
        out.push_str(",\"degraded\":");
        json_string(out, degraded);
    }
    if let Some(error) = l.body_error {
        out.push_str(",\"body_error\":");
        json_string(out, error);
    }
    if let Some(consumer) = l.consumer {
        out.push_str(",\"consumer\":");
        json_string(out, consumer);
    }
    out.push('}');
}

fn human(out: &mut String, l: &AccessLine<'_>) {
    timestamp(out);
    for (key, value) in [
        ("  INFO mosaic::access: request_id=", l.request_id),
        (" trace_id=", l.trace_id),
        (" method=", l.method),
        (" path=", l.path),
        (" route=", l.route),
    ] {
        out.push_str(key);
        out.push_str(value);
    }
    out.push_str(" status=");
    push_uint(out, u64::from(l.status));
    out.push_str(" elapsed_ms=");
    push_millis(out, l.elapsed);
    if let Some((complete, degraded)) = l.page {
        out.push_str(if complete {
            " complete=true degraded="
        } else {
            " complete=false degraded="
        });
        // Quoted as `{:?}` would; section names and reasons are plain ASCII.
        if degraded.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            out.push('"');
            out.push_str(degraded);
            out.push('"');
        } else {
            let _ = write!(out, "{degraded:?}");
        }
    }
    if let Some(error) = l.body_error {
        // Error names are plain ASCII words.
        out.push_str(" body_error=");
        out.push_str(error);
    }
    if let Some(consumer) = l.consumer {
        // Consumer names are letters, digits, '_' and '-' (validated).
        out.push_str(" consumer=");
        out.push_str(consumer);
    }
}

fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `n` in decimal.
fn push_uint(out: &mut String, n: u64) {
    push_padded(out, n, 1);
}

/// `n` in decimal, at least `width` digits (zero-padded).
fn push_padded(out: &mut String, n: u64, width: usize) {
    out.push_str(crate::digits::decimal(n, width, &mut Default::default()));
}

/// Milliseconds with three decimals, e.g. `1.500`.
fn push_millis(out: &mut String, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    push_uint(out, micros / 1000);
    out.push('.');
    push_padded(out, micros % 1000, 3);
}

thread_local! {
    /// The date and time to the second, formatted once per second per thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-26T15:43:19.123456Z`.
fn timestamp(out: &mut String) {
    let since = crate::clock::since_epoch();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let (year, month, day) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            second.1.clear();
            let _ = write!(
                second.1,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                rem / 3600,
                (rem / 60) % 60,
                rem % 60,
            );
            second.0 = secs;
        }
        out.push_str(&second.1);
    });
    push_padded(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn json_line_is_valid_and_escaped() {
        let mut out = String::new();
        json(
            &mut out,
            &AccessLine {
                request_id: "a\"b\\c",
                trace_id: "t",
                method: "GET",
                path: "/p/1",
                route: "/p/{id}",
                status: 200,
                elapsed: Duration::from_micros(1500),
                page: Some((false, "price:stale:timeout")),
                body_error: Some("timeout"),
                consumer: Some("mobile-app"),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["request_id"], "a\"b\\c");
        assert_eq!(v["status"], 200);
        assert_eq!(v["complete"], false);
        assert_eq!(v["degraded"], "price:stale:timeout");
        assert_eq!(v["body_error"], "timeout");
        assert_eq!(v["consumer"], "mobile-app");
        assert_eq!(v["target"], "mosaic::access");
        assert_eq!(v["elapsed_ms"], 1.5);
        let stamp = v["timestamp"].as_str().expect("timestamp");
        // 2026-11-26T15:43:19.123456Z
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.'
        );
    }

    #[test]
    fn human_line_has_every_field() {
        let mut out = String::new();
        let line = AccessLine {
            request_id: "r-1",
            trace_id: "t-1",
            method: "GET",
            path: "/p/1",
            route: "/p/{id}",
            status: 503,
            elapsed: Duration::from_micros(12_034),
            page: Some((false, "price:none:timeout")),
            body_error: None,
            consumer: None,
        };
        human(&mut out, &line);
        let (stamp, rest) = out.split_once("  ").expect("timestamp, then the line");
        assert_eq!(stamp.len(), 27, "{stamp}");
        assert_eq!(
            rest,
            "INFO mosaic::access: request_id=r-1 trace_id=t-1 method=GET path=/p/1 route=/p/{id} \
             status=503 elapsed_ms=12.034 complete=false degraded=\"price:none:timeout\""
        );
        out.clear();
        human(&mut out, &AccessLine { page: Some((true, "odd \"name\"")), ..line });
        assert!(out.ends_with(r#"complete=true degraded="odd \"name\"""#), "{out}");
        out.clear();
        human(&mut out, &AccessLine { page: None, body_error: Some("connect"), ..line });
        assert!(out.ends_with("status=503 elapsed_ms=12.034 body_error=connect"), "{out}");
    }

    #[test]
    fn numbers_are_written_without_fmt_exactly_as_fmt_would() {
        for n in [0u64, 5, 10, 999, 1000, 65_535, u64::MAX] {
            let mut out = String::new();
            push_uint(&mut out, n);
            assert_eq!(out, n.to_string());
            for width in [1, 3, 6] {
                out.clear();
                push_padded(&mut out, n % 1_000_000, width);
                assert_eq!(out, format!("{:0width$}", n % 1_000_000));
            }
        }
        for (micros, text) in [
            (0, "0.000"),
            (1, "0.001"),
            (999, "0.999"),
            (1000, "1.000"),
            (123_456_789, "123456.789"),
        ] {
            let mut out = String::new();
            push_millis(&mut out, Duration::from_micros(micros));
            assert_eq!(out, text);
        }
    }
}
