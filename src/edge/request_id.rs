//! `X-Request-Id`: kept when the client sent a sane one, made otherwise.

use actix_web::http::header::HeaderValue;

/// Longest client-supplied id we keep.
const MAX_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` if it is 1-128 visible
/// ASCII characters, else a new random 128-bit hex id. `sent` is the
/// client's `X-Request-Id`.
pub fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    if let Some(value) = sent {
        let bytes = value.as_bytes();
        if !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return value.clone();
        }
    }
    generate()
}

/// A new random id (32 hex digits).
pub fn generate() -> HeaderValue {
    let digits = hex(fastrand::u128(..), 32);
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0"))
}

/// The low `width` hex digits of `value`, lowercase, zero-padded (no
/// formatting machinery: this runs for every request).
pub fn hex(value: u128, width: usize) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Byte by byte: shifting a u128 per digit cost ~15 instructions a digit.
    let mut all = [0u8; 32];
    for (pair, byte) in all.chunks_exact_mut(2).zip(value.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    let width = width.min(32);
    let mut out = [b'0'; 32];
    out[..width].copy_from_slice(&all[32 - width..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(None), request_id(None));
        assert_eq!(request_id(Some(&HeaderValue::from_static("abc-123"))), "abc-123");
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(request_id(Some(&spaced)), "has space");
        assert_eq!(request_id(Some(&spaced)).len(), 32);
        let long = HeaderValue::from_str(&"x".repeat(200)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 32);
    }

    #[test]
    fn hex_matches_format() {
        for v in [0u128, 1, 0xdead_beef, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677] {
            assert_eq!(&hex(v, 32)[..], format!("{v:032x}").as_bytes());
            assert_eq!(&hex(v, 16)[..16], format!("{:016x}", v as u64).as_bytes());
        }
    }
}
