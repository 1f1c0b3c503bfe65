//! `X-Request-Id`: kept when the client sent a sane one, made otherwise.

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::digits::hex32;

/// `X-Request-Id`: echoed to the client, forwarded to every service.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    let digits = hex32(fastrand::u128(..));
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0"))
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
}
