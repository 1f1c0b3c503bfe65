//! Decimal numbers written without `fmt`, for text produced on every request
//! (the page's `_mosaic` member, access lines): the formatting machinery cost
//! more than the rest of those lines.

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
}
