//! Header fields whose meaning is the message's framing or the connection
//! itself: hop-by-hop names and `Content-Length` values.

/// RFC 9110's hop-by-hop headers, and `Proxy-Connection`: never relayed.
pub const HOP_BY_HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether the header `name` (any case) is hop-by-hop: one of RFC 9110's,
/// or listed in a `Connection` header (`connection`: the values of those
/// headers).
pub fn is_hop_by_hop<'a>(name: &[u8], mut connection: impl Iterator<Item = &'a [u8]>) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
        || connection.any(|value| {
            // No allocation: this runs for every header of every proxied
            // message.
            tokens(value).any(|token| token.eq_ignore_ascii_case(name))
        })
}

/// The comma-separated tokens of a list header (`Connection`,
/// `Transfer-Encoding`), trimmed; empty elements are kept (as empty slices)
/// so a caller can refuse them.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Most digits a `Content-Length` may have: 19 always fit a `u64`.
const MAX_LENGTH_DIGITS: usize = 19;

/// A `Content-Length` value (RFC 9110 section 8.6: `1*DIGIT`), with the
/// optional whitespace around a field value allowed and nothing else: no
/// sign, no list (`5, 5`), no inner space, at most 19 digits. `None` for
/// anything else, which the caller treats as broken framing.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > MAX_LENGTH_DIGITS {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_and_connection_tokens() {
        let none: [&[u8]; 0] = [];
        assert!(is_hop_by_hop(b"keep-alive", none.into_iter()));
        assert!(is_hop_by_hop(b"Transfer-Encoding", none.into_iter()));
        assert!(is_hop_by_hop(b"TE", none.into_iter()));
        assert!(!is_hop_by_hop(b"x-secret", none.into_iter()));
        assert!(!is_hop_by_hop(b"tea", none.into_iter()));
        // Tokens in any case, with spaces, across several Connection headers.
        let values: [&[u8]; 2] = [b"keep-alive , X-Secret", b"  X-Other"];
        assert!(is_hop_by_hop(b"x-secret", values.into_iter()));
        assert!(is_hop_by_hop(b"X-Other", values.into_iter()));
        assert!(!is_hop_by_hop(b"x-secretive", values.into_iter()));
        assert!(!is_hop_by_hop(b"x-foo", values.into_iter()));
    }

    #[test]
    fn content_length_is_digits_only() {
        for (value, expected) in [
            (&b"0"[..], Some(0)),
            (b"17", Some(17)),
            (b" 17\t", Some(17)),
            (b"0005", Some(5)),
            (b"9999999999999999999", Some(9_999_999_999_999_999_999)),
            (b"+5", None),
            (b"-1", None),
            (b"5, 5", None),
            (b"5 5", None),
            (b"0x10", None),
            (b"", None),
            (b"  ", None),
            (b"1e3", None),
            (b"18446744073709551616", None),
            (b"\xd9\xa3", None),
        ] {
            assert_eq!(parse_content_length(value), expected, "{value:?}");
        }
    }
}
