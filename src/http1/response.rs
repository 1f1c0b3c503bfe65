//! The response decoder: a service's answer, from raw bytes to a head,
//! body data and an end, with no I/O of its own (the caller reads from the
//! socket and feeds the buffer; section calls and streamed proxy bodies
//! drive the same decoder).
//!
//! Framing follows RFC 9112 section 6.3, strictly:
//! - the head is parsed by `httparse` (hyper's parser; obs-fold, spaces
//!   before a colon and control characters refused) and must end every line
//!   with CRLF, be at most [`MAX_HEAD`] bytes and carry a status of 100-599;
//! - a HEAD request and 204/304 answers have no body, whatever their headers
//!   say; 1xx interim answers are skipped (at most [`MAX_INTERIM`]), 101 is
//!   refused (nothing mosaic sends asks to switch protocols);
//! - `Transfer-Encoding` with `chunked` last means chunked; any other coding
//!   last means the body runs to the end of the connection; `chunked` twice
//!   or before another coding, an empty coding, or `Transfer-Encoding`
//!   together with `Content-Length` are refused;
//! - `Content-Length` is digits only, every copy identical;
//! - chunk sizes are 1 to 16 hex digits, extensions and trailers bounded,
//!   every line ended by CRLF.
//!
//! Whether the connection may carry another exchange is decided here and
//! nowhere else ([`Event::End`]): only after a body framed exactly (length or
//! chunked, complete), with nothing left over in the buffer, no `close`, and
//! not after an answer that has no body by definition (HEAD, 204, 304): bytes
//! that a broken service writes after one of those would be read as the next
//! caller's answer, and there is no way to tell them apart from it.

use bytes::{Buf, Bytes, BytesMut};

use super::fields::{parse_content_length, tokens};

/// A response head larger than this is refused.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head.
pub const MAX_HEADERS: usize = 256;
/// Interim (1xx) answers skipped before the final one; more is refused.
pub const MAX_INTERIM: usize = 8;
/// Longest chunk-size line (size and extensions).
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Header slots parsed on the stack; a head with more falls back to the heap.
const HEADER_SLOTS: usize = 32;
/// Body data up to this size is copied out of the read buffer, which then
/// serves the next read without a new allocation; larger runs are split off
/// without a copy.
const COPY_BELOW: usize = 16 * 1024;
/// Length of `HTTP/1.1 200`: where a status line without a reason ends.
const STATUS_LINE_WITHOUT_REASON: usize = 12;
/// Most hex digits in a chunk size (a `u64`).
const MAX_CHUNK_DIGITS: usize = 16;

/// Why an answer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid, unambiguous HTTP/1.x answer.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The connection ended before any byte of an answer: on a reused
    /// connection, the service most likely closed it while it was idle.
    #[error("connection closed before an answer")]
    ClosedBeforeAnswer,
    /// The connection ended in the middle of the answer.
    #[error("connection closed mid-answer")]
    Truncated,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (an answer to HEAD, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the service closes the connection.
    UntilClose,
}

/// What the final answer's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code (100-599).
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection cannot carry another exchange after this one: the
    /// service said `close`, spoke HTTP/1.0 without keep-alive, sent
    /// `Transfer-Encoding` on HTTP/1.0, or the body runs until close.
    pub close: bool,
}

/// A header as ranges of the head's bytes: the proxy passes header lines on
/// as they came (httparse checked the name is a token and the value has no
/// CR, LF or other control character), without building a `HeaderName`.
#[derive(Debug, Clone)]
pub struct RawField {
    /// Where the name is in the head (case as sent).
    pub name: std::ops::Range<usize>,
    /// Where the value is in the head.
    pub value: std::ops::Range<usize>,
}

/// The final head's bytes and fields, for a caller that relays them.
#[derive(Debug)]
pub struct RawHead {
    /// The head as received, status line to the blank line.
    pub bytes: Bytes,
    /// Every field, pointing into `bytes`.
    pub fields: Vec<RawField>,
}

/// One step of decoding.
#[derive(Debug)]
pub enum Event {
    /// The final answer's head (interim answers are skipped); `raw` when the
    /// decoder was asked to keep it.
    Head(Head, Option<RawHead>),
    /// Body bytes, in order, framing removed.
    Data(Bytes),
    /// The answer is complete. `reusable`: the connection may carry another
    /// exchange (see the module doc); anything else closes it.
    End {
        /// Whether the connection may go back to the pool.
        reusable: bool,
    },
    /// More bytes are needed: read, then call `decode` again (or `decode_eof`
    /// if the connection ended).
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Decodes one answer on one connection (a new decoder per exchange).
#[derive(Debug)]
pub struct ResponseDecoder {
    /// The request was HEAD: the answer has no body.
    head_request: bool,
    /// Keep the head's bytes and fields ([`Event::Head`]'s `raw`).
    keep_head: bool,
    state: State,
    /// Whether any byte of an answer has been seen.
    seen_any: bool,
    interim: usize,
    /// The connection must close after this answer.
    close: bool,
}

impl ResponseDecoder {
    /// A decoder for the answer to a request (`head_request`: it was HEAD).
    pub fn new(head_request: bool, keep_head: bool) -> Self {
        Self {
            head_request,
            keep_head,
            state: State::Head,
            seen_any: false,
            interim: 0,
            close: false,
        }
    }

    /// Decodes what `buf` holds, consuming the bytes each event accounts
    /// for. After an error the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Event, DecodeError> {
        loop {
            match self.state {
                State::Head => {
                    if buf.is_empty() {
                        return Ok(Event::NeedMore);
                    }
                    self.seen_any = true;
                    let mut fields =
                        if self.keep_head { Vec::with_capacity(16) } else { Vec::new() };
                    let parsed =
                        parse_head(buf, self.head_request, self.keep_head.then_some(&mut fields))?;
                    let Some((head, len)) = parsed else {
                        if buf.len() > MAX_HEAD {
                            return Err(DecodeError::Malformed("head over 64 KiB"));
                        }
                        return Ok(Event::NeedMore);
                    };
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            return Err(DecodeError::Malformed("101 without an upgrade asked"));
                        }
                        self.interim += 1;
                        if self.interim > MAX_INTERIM {
                            return Err(DecodeError::Malformed("too many interim answers"));
                        }
                        buf.advance(len);
                        continue;
                    }
                    self.close = head.close;
                    self.state = match head.framing {
                        Framing::Empty | Framing::Length(0) => State::Done,
                        Framing::Length(n) => State::Length(n),
                        Framing::Chunked => State::ChunkSize,
                        Framing::UntilClose => State::UntilClose,
                    };
                    if head.framing == Framing::Empty {
                        // No body by definition: see the module doc.
                        self.close = true;
                    }
                    let raw = if self.keep_head {
                        Some(RawHead { bytes: buf.split_to(len).freeze(), fields })
                    } else {
                        buf.advance(len);
                        None
                    };
                    return Ok(Event::Head(head, raw));
                }
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Event::NeedMore);
                    }
                    let n = take_len(left, buf.len());
                    self.state =
                        if n as u64 == left { State::Done } else { State::Length(left - n as u64) };
                    return Ok(Event::Data(take(buf, n)));
                }
                State::ChunkSize => match parse_chunk_size(buf)? {
                    None => return Ok(Event::NeedMore),
                    Some((used, size)) => {
                        buf.advance(used);
                        self.state =
                            if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                },
                State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Event::NeedMore);
                    }
                    let n = take_len(left, buf.len());
                    self.state = if n as u64 == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - n as u64)
                    };
                    return Ok(Event::Data(take(buf, n)));
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(DecodeError::Malformed("chunk not followed by CRLF"));
                        }
                        return Ok(Event::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(DecodeError::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => match trailer_section_len(buf)? {
                    None => return Ok(Event::NeedMore),
                    Some(len) => {
                        buf.advance(len);
                        self.state = State::Done;
                    }
                },
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Event::NeedMore);
                    }
                    let n = buf.len();
                    return Ok(Event::Data(take(buf, n)));
                }
                State::Done => {
                    // Bytes beyond the answer: the service is out of step
                    // with its own framing; its next "answer" cannot be
                    // trusted to belong to the next request.
                    return Ok(Event::End { reusable: !self.close && buf.is_empty() });
                }
            }
        }
    }

    /// The rest of the body in one step, when `buf` holds all of it and the
    /// answer has a length (or no body): the body and whether the
    /// connection may be reused, exactly as [`Event::End`] would say it.
    /// `None` otherwise (decode step by step then). The usual answer, a small
    /// JSON body that came with its head, costs one call instead of two.
    pub fn whole_body(&mut self, buf: &mut BytesMut) -> Option<(Bytes, bool)> {
        let body = match self.state {
            State::Length(left) if buf.len() as u64 >= left => take(buf, take_len(left, buf.len())),
            State::Done => Bytes::new(),
            _ => return None,
        };
        self.state = State::Done;
        Some((body, !self.close && buf.is_empty()))
    }

    /// The connection ended (a read returned 0) with `buf` left over: the
    /// end of a body that runs until close, else an error.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Event, DecodeError> {
        match self.state {
            State::UntilClose if !buf.is_empty() => {
                let n = buf.len();
                Ok(Event::Data(take(buf, n)))
            }
            State::UntilClose | State::Done => {
                self.state = State::Done;
                self.close = true;
                Ok(Event::End { reusable: false })
            }
            State::Head if !self.seen_any && buf.is_empty() => Err(DecodeError::ClosedBeforeAnswer),
            _ => Err(DecodeError::Truncated),
        }
    }

    /// Whether the final head has been decoded.
    pub fn has_head(&self) -> bool {
        self.state != State::Head
    }
}

/// How many of `available` bytes belong to a run with `left` bytes to go.
fn take_len(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

/// The first `n` bytes of `buf`, copied when small (see [`COPY_BELOW`]).
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_BELOW {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// Whether a line in `bytes` ends with a bare LF (no CR before it).
fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| at == 0 || bytes[at - 1] != b'\r')
}

/// Parses a response head: `None` while incomplete, else the head and its
/// length in bytes. With `fields`, every header is recorded there.
fn parse_head(
    buf: &[u8],
    head_request: bool,
    mut fields: Option<&mut Vec<RawField>>,
) -> Result<Option<(Head, usize)>, DecodeError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            Ok(Some((head_of(&response, buf, len, head_request, fields)?, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut slots);
            if let Some(out) = fields.as_deref_mut() {
                out.clear();
            }
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    Ok(Some((head_of(&response, buf, len, head_request, fields)?, len)))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    Err(DecodeError::Malformed("more than 256 header fields"))
                }
                Err(_) => Err(DecodeError::Malformed("head")),
            }
        }
        Err(_) => Err(DecodeError::Malformed("head")),
    }
}

/// The framing and connection rules of a complete head of `len` bytes.
fn head_of(
    response: &httparse::Response<'_, '_>,
    buf: &[u8],
    len: usize,
    head_request: bool,
    mut fields: Option<&mut Vec<RawField>>,
) -> Result<Head, DecodeError> {
    if len > MAX_HEAD {
        return Err(DecodeError::Malformed("head over 64 KiB"));
    }
    let status = response.code.ok_or(DecodeError::Malformed("no status"))?;
    if !(100..=599).contains(&status) {
        return Err(DecodeError::Malformed("status outside 100-599"));
    }
    let http10 = response.version == Some(0);
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    // httparse also ends a line at a bare LF. With obs-fold refused, the
    // only LFs in a head end its status line, its field lines and the blank
    // line, so checking for a CR before each of those ends is a complete
    // check (and cheaper than a scan of the head).
    let base = buf.as_ptr() as usize;
    let reason = response.reason.unwrap_or("").as_bytes();
    // An empty reason after no space is a static "" outside the buffer: the
    // line then ends right after the status code.
    let status_end = match (reason.as_ptr() as usize).wrapping_sub(base) {
        at if at <= len => at + reason.len(),
        _ => STATUS_LINE_WITHOUT_REASON,
    };
    if buf.get(status_end) != Some(&b'\r') || buf[..len].get(len.wrapping_sub(2)) != Some(&b'\r') {
        return Err(DecodeError::Malformed("line not ended by CRLF"));
    }
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        let mut line_end = header.value.as_ptr() as usize - base + header.value.len();
        while matches!(buf.get(line_end), Some(b' ' | b'\t')) {
            line_end += 1;
        }
        if buf.get(line_end) != Some(&b'\r') {
            return Err(DecodeError::Malformed("line not ended by CRLF"));
        }
        if let Some(out) = fields.as_deref_mut() {
            // Name and value are slices of `buf`: their offsets are
            // differences of addresses within the one buffer.
            let name_start = name.as_ptr() as usize - buf.as_ptr() as usize;
            let value_start = header.value.as_ptr() as usize - buf.as_ptr() as usize;
            out.push(RawField {
                name: name_start..name_start + name.len(),
                value: value_start..value_start + header.value.len(),
            });
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_content_length(header.value)
                .ok_or(DecodeError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(DecodeError::Malformed("conflicting Content-Length"));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in tokens(header.value) {
                if coding.is_empty() {
                    return Err(DecodeError::Malformed("empty transfer coding"));
                }
                if chunked {
                    // Chunked must be applied once, and last.
                    return Err(DecodeError::Malformed("transfer coding after chunked"));
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(header.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    if transfer_encoding && length.is_some() && !no_body {
        return Err(DecodeError::Malformed("both Transfer-Encoding and Content-Length"));
    }
    // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty
    // framing; the message is read, and the connection closed after it.
    close |= http10 && (transfer_encoding || !keep_alive);
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if transfer_encoding {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    close |= framing == Framing::UntilClose;
    Ok(Head { status, framing, close })
}

/// Parses a chunk-size line at the front of `buf`: `None` while incomplete,
/// else the line's length (CRLF included) and the size.
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, DecodeError> {
    let mut size: u64 = 0;
    let mut digits = 0;
    while let Some(&b) = buf.get(digits) {
        let value = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        if digits == MAX_CHUNK_DIGITS {
            return Err(DecodeError::Malformed("chunk size over 16 hex digits"));
        }
        size = (size << 4) | u64::from(value);
        digits += 1;
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err(DecodeError::Malformed("chunk size missing"));
    }
    let Some(newline) = memchr::memchr(b'\n', &buf[digits..]) else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(DecodeError::Malformed("chunk-size line too long"));
        }
        return chunk_extension(&buf[digits..], false).map(|()| None);
    };
    let end = digits + newline;
    if end + 1 > MAX_CHUNK_LINE {
        return Err(DecodeError::Malformed("chunk-size line too long"));
    }
    if buf[end - 1] != b'\r' {
        return Err(DecodeError::Malformed("chunk-size line not ended by CRLF"));
    }
    chunk_extension(&buf[digits..end - 1], true)?;
    Ok(Some((end + 1, size)))
}

/// Checks what follows a chunk size: nothing, or `;` extensions (after
/// optional whitespace) of visible characters. `complete`: the line's CR
/// has been cut off; otherwise a trailing CR may still be waiting for its LF.
fn chunk_extension(rest: &[u8], complete: bool) -> Result<(), DecodeError> {
    let rest = if complete { rest } else { rest.strip_suffix(b"\r").unwrap_or(rest) };
    let after_space = match rest.iter().position(|&b| b != b' ' && b != b'\t') {
        Some(at) => &rest[at..],
        None => &[][..],
    };
    if after_space.is_empty() {
        // Whitespace alone after the size: a BWS before an extension still
        // to come is fine, a finished line with only whitespace is not.
        return if complete && !rest.is_empty() {
            Err(DecodeError::Malformed("space after chunk size"))
        } else {
            Ok(())
        };
    }
    if after_space[0] != b';' {
        return Err(DecodeError::Malformed("junk after chunk size"));
    }
    if after_space.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(DecodeError::Malformed("control character in chunk extension"))
    }
}

/// The length of the trailer section at the front of `buf` (field lines,
/// then CRLF): `None` while incomplete.
fn trailer_section_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some(2));
    }
    if buf.len() < 2 {
        return match buf.first() {
            Some(b'\n') => Err(DecodeError::Malformed("trailer line not ended by CRLF")),
            _ => Ok(None),
        };
    }
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, _))) => {
            if len > MAX_TRAILERS {
                return Err(DecodeError::Malformed("trailers over 16 KiB"));
            }
            if has_bare_lf(&buf[..len]) {
                return Err(DecodeError::Malformed("trailer line not ended by CRLF"));
            }
            Ok(Some(len))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => Ok(None),
        Ok(httparse::Status::Partial) => Err(DecodeError::Malformed("trailers over 16 KiB")),
        Err(_) => Err(DecodeError::Malformed("trailer field")),
    }
}

#[cfg(test)]
mod tests;
