//! Numbers written as ASCII digits without `fmt`, for text produced on every
//! request: decimals for the page's `_mosaic` member and the access lines
//! (the formatting machinery cost more than the rest of those lines), hex for
//! request and trace ids and for chunk sizes.

/// Room for any `u64` (20 digits).
pub type Digits = [u8; 20];

/// `n` in decimal, zero-padded to at least `width` digits (at most 20),
/// written into the end of `digits`.
pub fn decimal(mut n: u64, width: usize, digits: &mut Digits) -> &str {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if start == 0 || (n == 0 && digits.len() - start >= width) {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&digits[start..]).unwrap_or("0")
}

/// `value` as 32 lowercase hex digits.
pub fn hex32(value: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&hex16((value >> 64) as u64));
    out[16..].copy_from_slice(&hex16(value as u64));
    out
}

/// `value` as 16 lowercase hex digits, all at once in one 128-bit word (no
/// per-digit loop: ids take two or three of these for every request). Each
/// nibble is spread into a byte of its own; a nibble above 9 gets
/// `'a' - '0' - 10` more on top of `'0'`.
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

/// `value` in lowercase hex without leading zeros (`0` for zero), written
/// into `digits`: an HTTP chunk size.
pub fn hex(value: u64, digits: &mut [u8; 16]) -> &[u8] {
    *digits = hex16(value);
    let start = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len() - 1);
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_fmt() {
        for n in [0u64, 5, 10, 99, 100, 999, 1000, 65_535, 4_294_967_296, u64::MAX] {
            let mut digits = Digits::default();
            assert_eq!(decimal(n, 1, &mut digits), n.to_string());
            for width in [0, 3, 6, 20] {
                assert_eq!(decimal(n, width, &mut digits), format!("{n:0width$}"));
            }
        }
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
