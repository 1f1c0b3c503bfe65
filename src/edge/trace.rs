//! W3C Trace Context: every request gets a `traceparent` for the services
//! it calls. A valid incoming one keeps its trace id and sampling flag and
//! gets a new parent id (mosaic is a hop in the trace); a missing or
//! malformed one starts a new, sampled trace.

use actix_web::http::header::HeaderValue;

use crate::digits::{hex16, hex32};

/// The trace this request belongs to.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The `traceparent` to send to services; it carries the trace id.
    pub outgoing: HeaderValue,
}

impl TraceContext {
    /// The trace id: 32 lowercase hex digits (read from `outgoing`, so no
    /// copy is made per request; only those bytes are checked, not the whole
    /// header value).
    pub fn trace_id(&self) -> &str {
        self.outgoing
            .as_bytes()
            .get(3..35)
            .and_then(|id| std::str::from_utf8(id).ok())
            .unwrap_or("-")
    }
}

/// Reads the incoming `traceparent` (if sent and valid) and makes the
/// outgoing one.
pub fn trace_context(traceparent: Option<&HeaderValue>) -> TraceContext {
    let incoming = traceparent.and_then(|v| v.to_str().ok()).and_then(parse);
    let generated;
    let (trace_id, flags): (&[u8], &[u8]) = match incoming {
        Some((trace_id, flags)) => (trace_id.as_bytes(), flags.as_bytes()),
        None => {
            generated = hex32(nonzero_u128());
            (&generated[..], b"01")
        }
    };
    // 00-<32 trace>-<16 parent>-<2 flags>, built without formatting machinery.
    let mut value = [0u8; 55];
    value[..3].copy_from_slice(b"00-");
    value[3..35].copy_from_slice(trace_id);
    value[35] = b'-';
    value[36..52].copy_from_slice(&hex16(nonzero_u64()));
    value[52] = b'-';
    value[53..].copy_from_slice(flags);
    // Hex and dashes are always a valid header value.
    let outgoing = HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static("00"));
    TraceContext { outgoing }
}

/// `00-<trace-id>-<parent-id>-<flags>` → (trace id, flags), per the spec:
/// lowercase hex, all-zero ids invalid, version ff invalid; a future version
/// is read by its first four fields.
fn parse(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some((trace_id, flags))
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn keeps_a_valid_trace_and_makes_a_new_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = trace_context(Some(&with(incoming)));
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = ctx.outgoing.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(out, incoming, "new parent id");
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn starts_a_new_trace_when_absent_or_invalid() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let ctx = trace_context(Some(&with(bad)));
            assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(ctx.trace_id().len(), 32);
            assert!(ctx.outgoing.to_str().unwrap().ends_with("-01"));
        }
        assert_eq!(trace_context(None).outgoing.len(), 55);
    }
}
