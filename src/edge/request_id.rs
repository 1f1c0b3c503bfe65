//! `X-Request-Id`: kept when the client sent a sane one, made otherwise.

use actix_web::http::header::{HeaderMap, HeaderValue};

/// Longest client-supplied id we keep.
const MAX_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` if it is 1-128 visible
/// ASCII characters, else a new random 128-bit hex id.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get("x-request-id") {
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
    let id = format!("{:032x}", fastrand::u128(..));
    // Hex digits are always a valid header value.
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert("x-request-id".parse().unwrap(), HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id".parse().unwrap(), HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        let long = "x".repeat(200);
        h.insert("x-request-id".parse().unwrap(), HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }
}
