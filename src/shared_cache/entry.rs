//! How a shared entry is written in Redis: a version byte, the time it was
//! fetched, the status, the body.
//!
//! ```text
//! [0]      VERSION (1)
//! [1..9]   fetched at, Unix milliseconds, big-endian u64
//! [9..11]  status, big-endian u16 (a 2xx: only those are cached)
//! [11..]   the JSON body, as the service sent it
//! ```
//!
//! The fetch time travels with the value so that `age_ms` and the
//! `stale_if_error` window are true on every replica, not counted from
//! when a replica happened to read it. Anything else under a key (another
//! version, a string someone wrote, a body that is not JSON or is larger
//! than `max_body`) is [`Garbage`]: a miss, never a bad page.

use bytes::Bytes;

use crate::backend::json_check::is_json;

/// The format written by this version of mosaic. A reader meeting another
/// version treats the entry as a miss (it is overwritten by the next
/// answer), so a format change never misreads an old value.
pub const VERSION: u8 = 1;

const HEADER: usize = 1 + 8 + 2;

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    /// The service's status (2xx).
    pub status: u16,
    /// When it was fetched, Unix milliseconds.
    pub fetched_unix_ms: u64,
    /// The JSON body.
    pub body: Bytes,
}

/// Why a stored value was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Garbage {
    /// Shorter than the header, or another format version.
    #[error("not a mosaic entry of format version {VERSION}")]
    Format,
    /// A status that is not a 2xx.
    #[error("status outside 200-299")]
    Status,
    /// Larger than `max_body`.
    #[error("body larger than max_body")]
    TooLarge,
    /// A body that is not JSON.
    #[error("body is not JSON")]
    NotJson,
}

/// The bytes stored for an answer.
pub fn encode(status: u16, fetched_unix_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(VERSION);
    out.extend_from_slice(&fetched_unix_ms.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads a stored value; every check a fresh answer passed is made again,
/// since anyone with access to Redis can write under mosaic's keys.
pub fn decode(raw: Bytes, max_body: usize) -> Result<SharedEntry, Garbage> {
    if raw.len() < HEADER || raw[0] != VERSION {
        return Err(Garbage::Format);
    }
    let mut fetched = [0u8; 8];
    fetched.copy_from_slice(&raw[1..9]);
    let status = u16::from_be_bytes([raw[9], raw[10]]);
    if !(200..300).contains(&status) {
        return Err(Garbage::Status);
    }
    let body = raw.slice(HEADER..);
    if body.len() > max_body {
        return Err(Garbage::TooLarge);
    }
    if !is_json(&body) {
        return Err(Garbage::NotJson);
    }
    Ok(SharedEntry { status, fetched_unix_ms: u64::from_be_bytes(fetched), body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let raw = encode(203, 1_765_000_000_123, br#"{"amount":1999}"#);
        assert_eq!(raw.len(), HEADER + 15);
        let entry = decode(Bytes::from(raw), 1 << 20).unwrap();
        assert_eq!(entry.status, 203);
        assert_eq!(entry.fetched_unix_ms, 1_765_000_000_123);
        assert_eq!(&entry.body[..], br#"{"amount":1999}"#);
    }

    #[test]
    fn anything_else_is_garbage() {
        let good = encode(200, 5, b"{}");
        let cases: [(Vec<u8>, Garbage); 6] = [
            (Vec::new(), Garbage::Format),
            (b"1999".to_vec(), Garbage::Format),
            ([&[2u8][..], &good[1..]].concat(), Garbage::Format),
            (encode(500, 5, b"{}"), Garbage::Status),
            (encode(200, 5, b"<html>"), Garbage::NotJson),
            (encode(200, 5, &[b' '; 64]), Garbage::NotJson),
        ];
        for (raw, why) in cases {
            assert_eq!(decode(Bytes::from(raw.clone()), 1 << 20), Err(why), "{raw:?}");
        }
        assert_eq!(
            decode(Bytes::from(encode(200, 5, b"[1,2,3]")), 7),
            Ok(SharedEntry {
                status: 200,
                fetched_unix_ms: 5,
                body: Bytes::from_static(b"[1,2,3]")
            })
        );
        assert_eq!(decode(Bytes::from(encode(200, 5, b"[1,2,3]")), 6), Err(Garbage::TooLarge));
    }
}
