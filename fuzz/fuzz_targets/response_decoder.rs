//! Fuzzes the response decoder with any bytes a service could send.
//!
//! Input: one byte choosing how the bytes are split into reads (1-64 bytes
//! per read), one choosing whether the request was HEAD, then the answer.
//! Checked: nothing panics; decoding in pieces gives exactly what decoding
//! in one piece gives (head, body, end, kind of error); the body is never
//! longer than the input; a connection is said reusable only after an
//! answer framed by length or chunks, with nothing left over.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mosaic::http1::response::{DecodeError, Event, Framing, Head, ResponseDecoder};

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    head: Option<Head>,
    body: Vec<u8>,
    end: Option<bool>,
    error: Option<bool>,
}

fn decode(raw: &[u8], step: usize, head_request: bool) -> Decoded {
    let mut decoder = ResponseDecoder::new(head_request, true);
    let mut buf = BytesMut::new();
    let mut out = Decoded { head: None, body: Vec::new(), end: None, error: None };
    let (mut fed, mut eof) = (0, false);
    // Bounded: every event consumes input or ends the loop.
    for _ in 0..(raw.len() * 4 + 16) {
        let event = if eof { decoder.decode_eof(&mut buf) } else { decoder.decode(&mut buf) };
        match event {
            Ok(Event::Head(head, raw_head)) => {
                assert!(out.head.is_none(), "one head");
                let raw_head = raw_head.expect("kept");
                for field in &raw_head.fields {
                    assert!(field.name.end <= raw_head.bytes.len());
                    assert!(field.value.end <= raw_head.bytes.len());
                }
                out.head = Some(head);
            }
            Ok(Event::Data(data)) => {
                assert!(!data.is_empty());
                out.body.extend_from_slice(&data);
            }
            Ok(Event::End { reusable }) => {
                out.end = Some(reusable && fed == raw.len());
                return out;
            }
            Ok(Event::NeedMore) if fed < raw.len() => {
                let next = (fed + step).min(raw.len());
                buf.extend_from_slice(&raw[fed..next]);
                fed = next;
            }
            Ok(Event::NeedMore) if !eof => eof = true,
            Ok(Event::NeedMore) => panic!("NeedMore after the end of the connection"),
            Err(error) => {
                out.error = Some(matches!(error, DecodeError::Malformed(_)));
                return out;
            }
        }
    }
    panic!("the decoder made no progress");
}

fuzz_target!(|input: &[u8]| {
    let [split, flags, raw @ ..] = input else { return };
    let step = usize::from(*split % 64) + 1;
    let head_request = flags & 1 == 1;
    let whole = decode(raw, raw.len().max(1), head_request);
    let pieces = decode(raw, step, head_request);
    assert_eq!(whole, pieces);
    assert!(whole.body.len() <= raw.len());
    if whole.end == Some(true) {
        let framing = whole.head.expect("a head before the end").framing;
        assert!(matches!(framing, Framing::Length(_) | Framing::Chunked), "{framing:?}");
    }
});
