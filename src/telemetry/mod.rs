//! Logging: `tracing` to stderr through a non-blocking writer (a bounded
//! buffer drained by its own thread, so a slow terminal or pipe never
//! blocks a worker; lines are dropped, not queued without bound, if it
//! fills). Human or JSON lines; the level comes from `RUST_LOG` (default
//! `info`). Access-log lines have the target `mosaic::access` and are
//! written by [`access`].

pub mod access;

use std::str::FromStr;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// Messages queued for the log thread before new ones are dropped: a
/// message is one log line or one worker's batch of access lines (at most
/// `access::BATCH_BYTES` and a line), so the queue holds at most about
/// 1,024 × 32 KiB = 32 MiB.
const LOG_BUFFER_LINES: usize = 1024;
/// Bytes the log thread gathers before a write.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable text.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use \"human\" or \"json\")")),
        }
    }
}

/// Installs the global subscriber. Keep the guard alive until exit: dropping
/// it flushes what is buffered.
pub fn init_logging(format: LogFormat) -> Option<WorkerGuard> {
    init_logging_at(format, "info")
}

/// [`init_logging`] with another filter than `info` when `RUST_LOG` is
/// unset (a demo service logs only what went wrong).
pub fn init_logging_at(format: LogFormat, default_filter: &str) -> Option<WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(true)
        // The log thread drains every line waiting, then flushes: with a
        // buffer in between that is one write(2) per batch, not per line
        // (measured: per-line writes cost the page a third of its CPU).
        .finish(std::io::BufWriter::with_capacity(LOG_WRITE_BUFFER, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone());
    let installed = match format {
        LogFormat::Human => builder.with_target(true).with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.ok()?;
    // Access lines skip the formatter but share its writer and its filter.
    if tracing::enabled!(target: "mosaic::access", tracing::Level::INFO) {
        access::enable(writer, format);
    }
    Some(guard)
}
