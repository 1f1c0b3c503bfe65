//! What can go wrong when asking a backend, named as the page reports it.

use std::fmt;

/// The fault behind a section that is not `live`, or a proxy error.
///
/// The names (`as_str`) are the `error` values of SPEC.md's page envelope and
/// the `outcome` label values of the backend metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchError {
    /// The per-attempt timeout expired.
    Timeout,
    /// The route deadline cut the call.
    Deadline,
    /// No connection, or the connection broke before a full answer.
    Connect,
    /// The service answered 5xx.
    Status5xx,
    /// A 2xx body that is not JSON (or a 1xx/3xx answer).
    InvalidBody,
    /// A body larger than `server.max_body`.
    TooLarge,
    /// The breaker is open (or its half-open trial slots are taken).
    CircuitOpen,
    /// The bulkhead is full.
    Rejected,
    /// Discovery knows no instance of the backend; for an AMQP backend, the
    /// broker returned the message as unroutable (no queue bound).
    NoInstances,
    /// The broker refused a published message (a negative publisher
    /// confirm: it could not route or store it).
    Nacked,
    /// mosaic itself failed (a panicked task); never expected.
    Internal,
}

impl FetchError {
    /// Every kind, for pre-registering metric handles.
    pub const ALL: [FetchError; 11] = [
        FetchError::Timeout,
        FetchError::Deadline,
        FetchError::Connect,
        FetchError::Status5xx,
        FetchError::InvalidBody,
        FetchError::TooLarge,
        FetchError::CircuitOpen,
        FetchError::Rejected,
        FetchError::NoInstances,
        FetchError::Nacked,
        FetchError::Internal,
    ];

    /// The name used in pages, proxy error bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Deadline => "deadline",
            FetchError::Connect => "connect",
            FetchError::Status5xx => "status_5xx",
            FetchError::InvalidBody => "invalid_body",
            FetchError::TooLarge => "too_large",
            FetchError::CircuitOpen => "circuit_open",
            FetchError::Rejected => "rejected",
            FetchError::NoInstances => "no_instances",
            FetchError::Nacked => "nacked",
            FetchError::Internal => "internal",
        }
    }

    /// Upstream faults feed the breaker; mosaic's own refusals do not.
    pub fn is_upstream_fault(self) -> bool {
        matches!(
            self,
            FetchError::Timeout
                | FetchError::Deadline
                | FetchError::Connect
                | FetchError::Status5xx
                | FetchError::InvalidBody
                | FetchError::TooLarge
                | FetchError::Nacked
        )
    }

    /// Faults worth another attempt on another instance (idempotent calls only).
    pub fn is_retryable(self) -> bool {
        matches!(self, FetchError::Connect | FetchError::Timeout | FetchError::Status5xx)
    }

    /// Whether the page should answer 504 (ran out of time) rather than 502.
    pub fn is_time(self) -> bool {
        matches!(self, FetchError::Timeout | FetchError::Deadline)
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FetchError {}
