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
    let digits = hex32(fastrand::u128(..));
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0"))
}

/// `value` as 32 lowercase hex digits.
pub fn hex32(value: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&hex16((value >> 64) as u64));
    out[16..].copy_from_slice(&hex16(value as u64));
    out
}

/// `value` as 16 lowercase hex digits, all at once in one 128-bit word (no
/// formatting machinery and no per-digit loop: this runs two or three times
/// for every request). Each nibble is spread into a byte of its own; a
/// nibble above 9 gets `'a' - '0' - 10` more on top of `'0'`.
pub fn hex16(value: u64) -> [u8; 16] {
    const EACH_BYTE: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let mut x = u128::from(value);
    // 64 bits → one nibble per byte, the most significant nibble in the top byte.
    x = (x & 0xffff_ffff) | ((x & 0xffff_ffff_0000_0000) << 32);
    x = (x & 0x0000_0000_ffff_0000_0000_0000_ffff)
        | ((x & 0x0000_ffff_0000_0000_0000_ffff_0000) << 16);
    x = (x & 0x00ff_0000_00ff_0000_00ff_0000_00ff)
        | ((x & 0xff00_0000_ff00_0000_ff00_0000_ff00) << 8);
    x = (x & 0x000f_000f_000f_000f_000f_000f_000f_000f)
        | ((x & 0x00f0_00f0_00f0_00f0_00f0_00f0_00f0_00f0) << 4);
    // 0x06 added to a nibble above 9 carries into bit 4: one marker bit per letter.
    let letters = ((x + 6 * EACH_BYTE) >> 4) & EACH_BYTE;
    (x + u128::from(b'0') * EACH_BYTE + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
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
        let mut values =
            vec![0u128, 1, 0xdead_beef, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677];
        // Every nibble value at every position.
        for at in 0..32 {
            for nibble in 0..16u128 {
                values.push(nibble << (4 * at));
                values.push(!(nibble << (4 * at)));
            }
        }
        let mut rng = fastrand::Rng::with_seed(11);
        values.extend((0..1000).map(|_| rng.u128(..)));
        for v in values {
            assert_eq!(&hex32(v)[..], format!("{v:032x}").as_bytes());
            assert_eq!(&hex16(v as u64)[..], format!("{:016x}", v as u64).as_bytes());
        }
    }
}
