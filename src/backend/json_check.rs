//! A JSON validator that builds nothing: it only says whether a body is one
//! RFC 8259 JSON value (UTF-8, surrounded by optional whitespace).
//!
//! Every section body is checked before it is embedded in a page, so this
//! runs on every byte mosaic composes. Measured with callgrind on the bench
//! page, `serde_json::from_slice::<IgnoredAny>` spent ~18 % of all gateway
//! instructions here; this check reads strings eight bytes at a time and
//! validates UTF-8 once for the whole body (std's ASCII fast path). A
//! differential test keeps it in agreement with serde_json.

/// Nesting deeper than this is refused, as serde_json does (its default
/// recursion limit), so a hostile body cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// True when `body` is exactly one JSON value.
pub fn is_json(body: &[u8]) -> bool {
    if std::str::from_utf8(body).is_err() {
        return false;
    }
    let mut check = Check { bytes: body, at: 0 };
    check.skip_ws();
    if !check.value(0) {
        return false;
    }
    check.skip_ws();
    check.at == body.len()
}

struct Check<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Check<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.skip_ws();
        if self.eat(b'}') {
            return true;
        }
        loop {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.skip_ws();
            if !self.eat(b':') {
                return false;
            }
            self.skip_ws();
            if !self.value(depth) {
                return false;
            }
            self.skip_ws();
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.skip_ws();
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.skip_ws();
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            self.skip_ws();
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.skip_ws();
        }
    }

    /// A string: no raw control characters, valid escapes. UTF-8 validity
    /// was checked for the whole body up front.
    fn string(&mut self) -> bool {
        self.at += 1;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return true;
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            self.at += 5;
                        }
                        _ => return false,
                    }
                }
                // A control character, or the end of the body.
                _ => return false,
            }
        }
    }

    /// Skips bytes that need no attention inside a string, eight at a time.
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
            // Bytes below 0x20 (ASCII only: high bytes masked out), '"' or '\\'.
            let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
            let special =
                control | has_zero(x ^ (ONES * b'"' as u64)) | has_zero(x ^ (ONES * b'\\' as u64));
            if special != 0 {
                self.at += (special.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
        while let Some(b) = self.peek() {
            if b < 0x20 || b == b'"' || b == b'\\' {
                return;
            }
            self.at += 1;
        }
    }

    fn digits(&mut self) -> bool {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at > start
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        if !self.eat(b'0') && !self.digits() {
            return false;
        }
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !self.digits() {
                return false;
            }
        }
        true
    }
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

    /// Random mutations of valid documents: both validators must agree.
    #[test]
    fn agrees_with_serde_json_on_mutated_documents() {
        let seeds: &[&str] = &[
            r#"{"id":"42","name":"Lamp \"Pro\"","tags":["a","b"],"price":{"amount":1999,"cur":"EUR"},"ok":true,"n":null}"#,
            r#"[1,-2.5e10,0.0,"\u00e9\\\/\n",[],{}]"#,
            r#"{"reviews":[{"rating":5,"body":"Great value. Arrived quickly!"},{"rating":1,"body":"\ud83d\ude00"}]}"#,
        ];
        let alphabet = b"{}[],:\"\\ -+.eE0123456789abcdefntrlsu\t\n\x01\xc3\xa9";
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
