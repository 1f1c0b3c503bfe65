//! Wall-clock time, for what operators read (`since_unix_ms` in
//! `/admin/backends`). Everything that measures or bounds time on the
//! request path uses tokio's monotonic clock instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
