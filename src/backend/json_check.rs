//! A JSON validator that builds nothing: it only says whether a body is one
//! RFC 8259 JSON value (UTF-8, surrounded by optional whitespace).
//!
//! Every section body is checked before it is embedded in a page, so this
//! runs on every byte mosaic composes. Measured with callgrind on the bench
//! page, `serde_json::from_slice::<IgnoredAny>` spent ~18 % of all gateway
//! instructions here. This check walks the structure in one loop with the
//! open containers as a bit stack (no recursion, no allocation) and scans
//! string contents sixteen bytes per step: SSE2 compares on x86-64 (through
//! `safe_arch`: the crate forbids `unsafe`), eight-byte words elsewhere.
//!
//! UTF-8 is validated in the same pass, not in one of its own over the
//! whole body: outside strings the grammar accepts ASCII bytes only, so a
//! non-ASCII byte can only be valid inside a string, and the string scan
//! hands each run of non-ASCII text to std's validator when it meets one.
//! Section bodies are mostly ASCII, so most bodies are read once, not twice.
//! A differential test keeps it in agreement with serde_json.

/// Nesting this deep is refused, as serde_json refuses it when it builds
/// values (its default recursion limit: 127 levels pass). The bit stack
/// below holds up to 128 levels.
const MAX_DEPTH: u32 = 127;

/// True when `body` is exactly one JSON value.
pub fn is_json(body: &[u8]) -> bool {
    structure(body)
}

/// The grammar, iteratively: a value, then closing brackets or a comma and
/// the next element, until the top-level value ends.
fn structure(b: &[u8]) -> bool {
    // One bit per open container, innermost lowest: 1 object, 0 array.
    let mut open: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = skip_ws(b, 0);
    loop {
        // A value starts at `i`.
        let Some(&first) = b.get(i) else { return false };
        let end = match first {
            b'"' => string_end(b, i + 1),
            b'{' | b'[' => {
                let object = first == b'{';
                let close = if object { b'}' } else { b']' };
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    Some(i + 1)
                } else {
                    if depth == MAX_DEPTH {
                        return false;
                    }
                    open = (open << 1) | u128::from(object);
                    depth += 1;
                    // Straight on to the first element (after its key).
                    match if object { key(b, i) } else { Some(i) } {
                        Some(next) => {
                            i = next;
                            continue;
                        }
                        None => return false,
                    }
                }
            }
            b't' => literal(b, i, b"true"),
            b'f' => literal(b, i, b"false"),
            b'n' => literal(b, i, b"null"),
            b'-' | b'0'..=b'9' => number_end(b, i),
            _ => None,
        };
        let Some(end) = end else { return false };
        i = end;
        // After a value: close containers, or go on to the next element.
        loop {
            i = skip_ws(b, i);
            if depth == 0 {
                return i == b.len();
            }
            let object = open & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    let next = skip_ws(b, i + 1);
                    match if object { key(b, next) } else { Some(next) } {
                        Some(next) => i = next,
                        None => return false,
                    }
                    break;
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => return false,
            }
            i += 1;
            open >>= 1;
            depth -= 1;
        }
    }
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// An object member's `"key" :` at `i`; where its value starts.
#[inline(always)]
fn key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(b, string_end(b, i + 1)?);
    if b.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_ws(b, i + 1))
}

#[inline(always)]
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

/// The end (one past the closing quote) of a string whose contents start at
/// `i`: no raw control characters, valid escapes, valid UTF-8.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = skip_plain::<true>(b, i);
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = b.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            0x80.. => i = non_ascii_end(b, i)?,
            // A control character.
            _ => return None,
        }
    }
}

/// Where a run of string text that holds non-ASCII bytes, starting at `i`,
/// ends (at the next `"`, `\\` or control character), if that run is valid
/// UTF-8. Those three are ASCII, and an ASCII byte is never part of a
/// multi-byte sequence, so runs split there are split between characters:
/// the string is valid UTF-8 exactly when each of its runs is.
#[cold]
fn non_ascii_end(b: &[u8], i: usize) -> Option<usize> {
    let end = skip_plain::<false>(b, i);
    std::str::from_utf8(b.get(i..end)?).is_ok().then_some(end)
}

/// The first byte at or after `i` that needs attention inside a string:
/// `"`, `\\` or a control character, and with `NON_ASCII` also a byte at or
/// above 0x80 (or the end of the body).
#[inline(always)]
fn skip_plain<const NON_ASCII: bool>(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 16) {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(chunk);
        match first_special_16::<NON_ASCII>(bytes) {
            Some(at) => return i + at,
            None => i += 16,
        }
    }
    while let Some(&byte) = b.get(i) {
        if byte < 0x20 || byte == b'"' || byte == b'\\' || (NON_ASCII && byte >= 0x80) {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use first_special_16_sse2 as first_special_16;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use first_special_16_words as first_special_16;

/// Index of the first `"`, `\\` or byte below 0x20 (and with `NON_ASCII`,
/// byte at or above 0x80) in sixteen bytes: one SSE2 compare per kind and a
/// mask (SSE2 is part of every x86-64 CPU; `safe_arch` exposes it without
/// `unsafe`). A byte's top bit is its own mask bit, so non-ASCII costs an OR.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn first_special_16_sse2<const NON_ASCII: bool>(bytes: [u8; 16]) -> Option<usize> {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let v = load_unaligned_m128i(&bytes);
    let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
    let backslash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
    // min(v, 0x1f) == v exactly for the bytes at or below 0x1f.
    let control = cmp_eq_mask_i8_m128i(min_u8_m128i(v, set_splat_i8_m128i(0x1f)), v);
    let special = if NON_ASCII {
        move_mask_i8_m128i(quote | backslash | control | v)
    } else {
        move_mask_i8_m128i(quote | backslash | control)
    };
    (special != 0).then(|| special.trailing_zeros() as usize)
}

/// Index of the first `"`, `\\` or byte below 0x20 (and with `NON_ASCII`,
/// byte at or above 0x80) in sixteen bytes, as two eight-byte words (where
/// SSE2 is not there). Compiled everywhere so that its test runs on x86-64
/// too.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn first_special_16_words<const NON_ASCII: bool>(bytes: [u8; 16]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    for (half, word) in bytes.chunks_exact(8).enumerate() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_le_bytes(eight);
        // Bytes below 0x20 (ASCII only: high bytes masked out), '"' or '\\'.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let special = control
            | has_zero(x ^ (ONES * b'"' as u64))
            | has_zero(x ^ (ONES * b'\\' as u64))
            | if NON_ASCII { x & HIGHS } else { 0 };
        if special != 0 {
            return Some(half * 8 + (special.trailing_zeros() / 8) as usize);
        }
    }
    None
}

#[inline(always)]
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// The end of a number starting at `i`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_end(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::is_json;

    fn serde_says(body: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    }

    #[test]
    fn accepts_and_refuses_like_the_rfc() {
        let good: &[&[u8]] = &[
            b"{}",
            b"[]",
            b" \"s\" ",
            b"null",
            b"true",
            b"false",
            b"0",
            b"-0",
            b"12.5e-3",
            b"1E+9",
            br#"{"a":{"b":[true,false,null,1,-2.5,"x\u00e9\n\"\\\/"]}}"#,
            "\"héllo €\"".as_bytes(),
            b"[1,[2,[3]]]",
            b"\t{\r\n\"k\" : 1 }\n",
        ];
        for body in good {
            assert!(is_json(body), "{:?}", String::from_utf8_lossy(body));
            assert!(serde_says(body));
        }
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"<html>",
            b"{",
            b"{} {}",
            br#"{"a":}"#,
            b"[1,]",
            br#"{"a":1,}"#,
            b"01",
            b"1.",
            b".5",
            b"-",
            b"1e",
            b"+1",
            b"tru",
            b"nul",
            br#""\x""#,
            br#""\u12G4""#,
            b"\"tab\there\"",
            b"\"unterminated",
            b"{1:2}",
            b"[1 2]",
            b"NaN",
            // Non-ASCII outside strings: a byte-order mark, a bare letter.
            b"\xef\xbb\xbf{}",
            b"[1,\xc3\xa9]",
            b"{\"a\":1}\xc3\xa9",
            b"{\"a\"\xc2\xa0:1}",
        ];
        for body in bad {
            assert!(!is_json(body), "{:?}", String::from_utf8_lossy(body));
            assert!(!serde_says(body), "serde disagrees on {:?}", String::from_utf8_lossy(body));
        }
        // Stricter than serde_json's IgnoredAny, which skips string bytes
        // unchecked: a page must be valid UTF-8 for its clients to parse it.
        assert!(!is_json(b"\"\xff\""));
        assert!(!is_json(b"{\"k\xc3\":1}"));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "[".repeat(100_000);
        assert!(!is_json(deep.as_bytes()));
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(is_json(ok.as_bytes()));
    }

    /// The same limit as serde_json when it builds values: 127 levels
    /// accepted, 128 refused (its `IgnoredAny` walk has no limit).
    #[test]
    fn nesting_limit_is_serde_jsons() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let nested = |depth: usize| format!("{}1{}", open.repeat(depth), close.repeat(depth));
            for depth in [1, 100, 127, 128, 129, 1000] {
                let doc = nested(depth);
                let serde_builds = serde_json::from_str::<serde_json::Value>(&doc).is_ok();
                assert_eq!(is_json(doc.as_bytes()), serde_builds, "depth {depth}");
            }
        }
    }

    /// Every special byte at every offset of a long string (the scan works
    /// sixteen bytes at a time), each alone and followed by more text.
    #[test]
    fn specials_anywhere_in_long_strings() {
        let specials: &[&[u8]] = &[
            b"\"",
            b"\\n",
            b"\\\"",
            b"\\u00e9",
            b"\x01",
            b"\x1f",
            b"\t",
            b"\\x",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
            b"\xf0\x9f\x98\x80",
            b"\xe2\x82",
            b"\xc3",
            b"\xa9",
            b"\xff",
            b"\xed\xa0\x80",
            b"\xc3\xa9\\n\xc3\xa9",
            b" ",
        ];
        for len in 0..40 {
            for at in 0..=len {
                for special in specials {
                    let mut doc = b"[\"".to_vec();
                    doc.extend(std::iter::repeat_n(b'a', at));
                    doc.extend_from_slice(special);
                    doc.extend(std::iter::repeat_n(b'b', len - at));
                    doc.extend_from_slice(b"\",1]");
                    let expected = std::str::from_utf8(&doc).is_ok() && serde_says(&doc);
                    assert_eq!(is_json(&doc), expected, "{:?}", String::from_utf8_lossy(&doc));
                }
            }
        }
    }

    /// The eight-byte-word scan (used where SSE2 is not) finds the same
    /// first special byte as a byte loop, for every byte value at every
    /// position, over a background of plain and of non-ASCII text.
    #[test]
    fn word_scan_finds_the_first_special_byte() {
        fn expected(bytes: &[u8; 16], non_ascii: bool) -> Option<usize> {
            bytes
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\' || (non_ascii && b >= 0x80))
        }
        for background in [b'a', 0xa9] {
            for at in 0..16 {
                for byte in 0..=255u8 {
                    let mut bytes = [background; 16];
                    bytes[at] = byte;
                    assert_eq!(
                        super::first_special_16_words::<false>(bytes),
                        expected(&bytes, false),
                        "{bytes:?}"
                    );
                    assert_eq!(
                        super::first_special_16_words::<true>(bytes),
                        expected(&bytes, true),
                        "{bytes:?}"
                    );
                    // Two specials: the first one counts.
                    if at < 15 {
                        bytes[at + 1] = b'"';
                        assert_eq!(
                            super::first_special_16_words::<false>(bytes),
                            expected(&bytes, false)
                        );
                    }
                }
            }
        }
    }

    /// Random mutations of valid documents: both validators must agree.
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds: &[&str] = &[
            r#"{"id":"42","name":"Lamp \"Pro\"","tags":["a","b"],"price":{"amount":1999,"cur":"EUR"},"ok":true,"n":null}"#,
            r#"[1,-2.5e10,0.0,"\u00e9\\\/\n",[],{}]"#,
            r#"{"reviews":[{"rating":5,"body":"Great value. Arrived quickly!"},{"rating":1,"body":"\ud83d\ude00"}]}"#,
            r#"{"a" : [ {"b":{}}, [[]], "long text that spans more than sixteen bytes \" here", 1e5 ] , "c":{"d":[0,{"e":-0.5}]}}"#,
        ];
        let alphabet =
            b"{}[],:\"\\ -+.eE0123456789abcdefntrlsu\t\n\x01\xc3\xa9\xe2\x82\xac\xf0\x9f\xff\x80";
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..20_000 {
            let mut doc = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=doc.len());
                match rng.u8(..3) {
                    0 if !doc.is_empty() && at < doc.len() => {
                        doc.remove(at);
                    }
                    1 => doc.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ if at < doc.len() => doc[at] = alphabet[rng.usize(..alphabet.len())],
                    _ => {}
                }
            }
            let expected = std::str::from_utf8(&doc).is_ok() && serde_says(&doc);
            assert_eq!(is_json(&doc), expected, "disagree on {:?}", String::from_utf8_lossy(&doc));
        }
    }
}
