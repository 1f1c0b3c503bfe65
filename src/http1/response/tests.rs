//! The decoder's rules, one by one, and a randomised check that splitting
//! the bytes anywhere never changes what is decoded.

use bytes::BytesMut;

use super::*;

/// Everything the decoder made of `raw`, fed `step` bytes at a time, then
/// the end of the connection if `close_at_end`.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    head: Option<Head>,
    body: Vec<u8>,
    /// `Some(reusable)` when the answer ended.
    end: Option<bool>,
    error: Option<DecodeError>,
}

fn decode_in_steps(raw: &[u8], step: usize, head_request: bool, close_at_end: bool) -> Decoded {
    let mut decoder = ResponseDecoder::new(head_request, true);
    let mut buf = BytesMut::new();
    let mut out = Decoded { head: None, body: Vec::new(), end: None, error: None };
    let mut fed = 0;
    // As the client does: decode until more is needed, read; once a read
    // returned 0, only `decode_eof`.
    let mut eof = false;
    loop {
        let event = if eof { decoder.decode_eof(&mut buf) } else { decoder.decode(&mut buf) };
        match event {
            Ok(Event::Head(head, raw_head)) => {
                assert!(out.head.is_none(), "one head");
                let raw_head = raw_head.expect("kept");
                for field in &raw_head.fields {
                    assert!(field.value.end <= raw_head.bytes.len());
                }
                out.head = Some(head);
            }
            Ok(Event::Data(data)) => {
                assert!(!data.is_empty(), "no empty data events");
                out.body.extend_from_slice(&data);
            }
            Ok(Event::End { reusable }) => {
                // Bytes not fed yet would be seen by the pool's check at
                // checkout: the connection is reusable only if none follow.
                out.end = Some(reusable && fed == raw.len());
                return out;
            }
            Ok(Event::NeedMore) => {
                if fed >= raw.len() {
                    if !close_at_end || eof {
                        return out;
                    }
                    eof = true;
                    continue;
                }
                let next = (fed + step).min(raw.len());
                buf.extend_from_slice(&raw[fed..next]);
                fed = next;
            }
            Err(error) => {
                // Where a broken line is noticed can depend on how much of it
                // has arrived, so the reason may differ; the kind may not.
                out.error = Some(match error {
                    DecodeError::Malformed(_) => DecodeError::Malformed("any"),
                    other => other,
                });
                return out;
            }
        }
    }
}

fn decode(raw: &[u8]) -> Decoded {
    decode_in_steps(raw, raw.len().max(1), false, false)
}

fn malformed(raw: &[u8]) -> bool {
    decode(raw).error == Some(DecodeError::Malformed("any"))
}

#[test]
fn a_length_body_is_read_exactly_and_the_connection_reusable() {
    let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(d.head.unwrap().framing, Framing::Length(5));
    assert_eq!((d.body.as_slice(), d.end), (&b"hello"[..], Some(true)));
}

#[test]
fn bytes_after_the_answer_make_the_connection_unusable() {
    let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n");
    assert_eq!((d.body.as_slice(), d.end), (&b"{}"[..], Some(false)));
}

#[test]
fn answers_without_a_body_by_definition_never_leave_a_reusable_connection() {
    for raw in [
        &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    ] {
        let d = decode(raw);
        assert_eq!((d.head.unwrap().framing, d.end), (Framing::Empty, Some(false)), "{raw:?}");
    }
    let d = decode_in_steps(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", 1000, true, false);
    assert_eq!((d.head.unwrap().framing, d.body.len(), d.end), (Framing::Empty, 0, Some(false)));
}

#[test]
fn chunked_bodies_are_joined_with_extensions_and_trailers() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                4;ext=1\r\n{\"a\"\r\n3 ; q=\"x y\"\r\n:[1\r\n2\r\n]}\r\n0\r\nx-trailer: y\r\n\r\n";
    let d = decode(raw);
    assert_eq!(d.head.unwrap().framing, Framing::Chunked);
    assert_eq!((d.body.as_slice(), d.end), (&b"{\"a\":[1]}"[..], Some(true)));
}

#[test]
fn a_body_until_close_ends_with_the_connection() {
    let d = decode_in_steps(b"HTTP/1.1 200 OK\r\n\r\n[1,2]", 3, false, true);
    let head = d.head.unwrap();
    assert_eq!((head.framing, head.close), (Framing::UntilClose, true));
    assert_eq!((d.body.as_slice(), d.end), (&b"[1,2]"[..], Some(false)));
}

#[test]
fn cut_short_answers_are_truncated_and_silence_is_closed_before_answer() {
    let d = decode_in_steps(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 100, false, true);
    assert_eq!((d.body.as_slice(), d.error), (&b"abc"[..], Some(DecodeError::Truncated)));
    let d = decode_in_steps(b"HTTP/1.1 200 OK\r\nContent-Le", 100, false, true);
    assert_eq!(d.error, Some(DecodeError::Truncated));
    let d = decode_in_steps(b"", 1, false, true);
    assert_eq!(d.error, Some(DecodeError::ClosedBeforeAnswer));
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
    assert_eq!(decode_in_steps(chunked, 7, false, true).error, Some(DecodeError::Truncated));
}

#[test]
fn interim_answers_are_skipped_and_101_refused() {
    let d = decode(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]",
    );
    assert_eq!((d.head.unwrap().status, d.body.as_slice()), (200, &b"[]"[..]));
    assert!(malformed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"));
    let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1);
    assert!(malformed(many.as_bytes()));
}

#[test]
fn connection_rules_follow_rfc_9112() {
    let close = |raw: &[u8]| decode(raw).head.unwrap().close;
    assert!(close(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(close(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!close(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
    // Transfer-Encoding on HTTP/1.0 is faulty framing: read, then close.
    let raw = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n\
                2\r\n{}\r\n0\r\n\r\n";
    let d = decode(raw);
    assert_eq!((d.head.unwrap().close, d.body.as_slice(), d.end), (true, &b"{}"[..], Some(false)));
    // A coding other than chunked last: the body runs until close.
    let d = decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(d.head.unwrap().framing, Framing::UntilClose);
    let d = decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    assert_eq!((d.head.unwrap().framing, d.end), (Framing::Chunked, Some(true)));
}

#[test]
fn ambiguous_framing_is_refused() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
    ] {
        assert!(malformed(raw), "{:?}", String::from_utf8_lossy(raw));
    }
    // Two identical lengths are one length.
    let d = decode(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(d.end, Some(true));
}

#[test]
fn broken_heads_are_refused() {
    for raw in [
        &b"HTTP/9.9 200 OK\r\n\r\n"[..],
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n",
        b"HTTP/1.1 200\n\r\n",
        b"HTTP/1.1 200 \n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A:\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1 \t\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\n",
    ] {
        assert!(malformed(raw), "{:?}", String::from_utf8_lossy(raw));
    }
    // Every line ended by CRLF, however sparse.
    for raw in [
        &b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A:\r\nX-B: \r\nX-C: 1 \t\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\n\r\n",
    ] {
        assert_eq!(decode(raw).error, None, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn heads_are_bounded_even_when_they_arrive_whole() {
    let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..100 {
        raw.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(700)).as_bytes());
    }
    raw.extend_from_slice(b"content-length: 0\r\n\r\n");
    assert!(raw.len() > MAX_HEAD);
    assert!(malformed(&raw), "in one piece");
    assert_eq!(
        decode_in_steps(&raw, 4096, false, false).error,
        Some(DecodeError::Malformed("any"))
    );
    // Many small headers within the limit fall back to the heap.
    let mut raw = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..100 {
        raw.push_str(&format!("x-h{i}: v\r\n"));
    }
    raw.push_str("content-length: 2\r\n\r\n{}");
    assert_eq!(decode(raw.as_bytes()).end, Some(true));
    let mut raw = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        raw.push_str(&format!("x-h{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert!(malformed(raw.as_bytes()));
}

#[test]
fn chunk_sizes_are_strict_hex() {
    let chunked =
        |body: &str| format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    for bad in [
        "\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "10000000000000000\r\n",
        "5;a\x01b\r\nhello\r\n0\r\n\r\n",
        "5junk\r\nhello\r\n0\r\n\r\n",
        "0\r\nbad trailer\r\n\r\n",
        "0\r\nx: y\n\r\n",
    ] {
        assert!(malformed(chunked(bad).as_bytes()), "{bad:?}");
    }
    let long_extension = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
    assert!(malformed(chunked(&long_extension).as_bytes()));
    let d = decode(chunked("00005\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n").as_bytes());
    assert_eq!((d.body.as_slice(), d.end), (&b"hello0123456789"[..], Some(true)));
    let d = decode(chunked("ffffffffffffffff\r\nab").as_bytes());
    assert_eq!((d.body.as_slice(), d.error, d.end), (&b"ab"[..], None, None), "needs more");
}

#[test]
fn fields_point_into_the_kept_head() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-One: a b\r\nset-cookie: c=1\r\n\r\n"[..]);
    let mut decoder = ResponseDecoder::new(false, true);
    let Ok(Event::Head(_, Some(raw))) = decoder.decode(&mut buf) else { panic!("a head") };
    let seen: Vec<_> = raw
        .fields
        .iter()
        .map(|f| (&raw.bytes[f.name.clone()], &raw.bytes[f.value.clone()]))
        .collect();
    assert_eq!(seen, [(&b"X-One"[..], &b"a b"[..]), (&b"set-cookie"[..], &b"c=1"[..])]);
    assert!(raw.bytes.ends_with(b"\r\n\r\n") && buf.is_empty());
}

/// Random answers, valid and mutated, decoded whole and in random pieces:
/// the events are the same however the bytes are split, nothing panics,
/// and a valid answer decodes to exactly what was encoded. The fuzz target
/// in `fuzz/` checks the same property with coverage guidance.
#[test]
fn splitting_the_bytes_anywhere_never_changes_the_answer() {
    let executions: usize =
        std::env::var("MOSAIC_DECODER_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3_000);
    let mut rng = fastrand::Rng::with_seed(0x6d6f_7361_6963);
    for case in 0..executions {
        let (raw, expected) = random_answer(&mut rng);
        let whole = decode_in_steps(&raw, raw.len().max(1), false, true);
        let step = rng.usize(1..=raw.len().max(1));
        let pieces = decode_in_steps(&raw, step, false, true);
        assert_eq!(whole, pieces, "case {case}, step {step}: {:?}", String::from_utf8_lossy(&raw));
        if let Some(body) = expected {
            assert_eq!(whole.error, None, "case {case}: {:?}", String::from_utf8_lossy(&raw));
            assert_eq!(whole.body, body, "case {case}");
        }
        let mut mutated = raw.clone();
        for _ in 0..rng.usize(1..4) {
            if mutated.is_empty() {
                break;
            }
            let at = rng.usize(..mutated.len());
            match rng.u8(..3) {
                0 => mutated[at] = rng.u8(..),
                1 => {
                    mutated.remove(at);
                }
                _ => mutated.insert(at, *b"\r\n:; 0aZ\t".get(rng.usize(..9)).unwrap_or(&b'x')),
            }
        }
        let whole = decode_in_steps(&mutated, mutated.len().max(1), false, true);
        let pieces = decode_in_steps(&mutated, rng.usize(1..=mutated.len().max(1)), false, true);
        assert_eq!(whole, pieces, "mutated case {case}: {:?}", String::from_utf8_lossy(&mutated));
    }
}

/// A random well-formed answer and the body it must decode to (`None`
/// when no body is expected to be checked).
fn random_answer(rng: &mut fastrand::Rng) -> (Vec<u8>, Option<Vec<u8>>) {
    let body: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
    let status = [200, 201, 204, 304, 404, 500, 503][rng.usize(..7)];
    let mut raw = format!("HTTP/1.{} {status} Reason\r\n", rng.u8(..2)).into_bytes();
    for i in 0..rng.usize(0..6) {
        raw.extend_from_slice(format!("X-Field-{i}: value {i}\r\n").as_bytes());
    }
    if status == 204 || status == 304 {
        raw.extend_from_slice(b"\r\n");
        return (raw, Some(Vec::new()));
    }
    match rng.u8(..3) {
        0 => {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(&body);
        }
        1 => {
            raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                raw.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                raw.extend_from_slice(&rest[..n]);
                raw.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            raw.extend_from_slice(b"0\r\n");
            if rng.bool() {
                raw.extend_from_slice(b"Trailer-A: 1\r\n");
            }
            raw.extend_from_slice(b"\r\n");
        }
        _ => {
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(&body);
        }
    }
    (raw, Some(body))
}

#[test]
fn a_whole_body_in_one_step_says_what_end_would() {
    let head_then = |raw: &[u8]| {
        let mut buf = BytesMut::from(raw);
        let mut decoder = ResponseDecoder::new(false, false);
        let Ok(Event::Head(..)) = decoder.decode(&mut buf) else { panic!("a head") };
        (decoder, buf)
    };
    let (mut decoder, mut buf) = head_then(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(decoder.whole_body(&mut buf), Some((bytes::Bytes::from_static(b"{}"), true)));
    let (mut decoder, mut buf) = head_then(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}x");
    assert_eq!(decoder.whole_body(&mut buf).map(|(_, reusable)| reusable), Some(false));
    let (mut decoder, mut buf) =
        head_then(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(decoder.whole_body(&mut buf), Some((bytes::Bytes::new(), false)));
    // Not all there, or not a length: step by step.
    let (mut decoder, mut buf) = head_then(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
    assert_eq!(decoder.whole_body(&mut buf), None);
    assert_eq!(&buf[..], b"ab", "nothing consumed");
    let (mut decoder, mut buf) =
        head_then(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(decoder.whole_body(&mut buf), None);
}
