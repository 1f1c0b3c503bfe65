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

use chunked::{chunk_end, parse_chunk_size, trailer_section_len};
use head::parse_head;

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
                    if let Some(event) = self.decode_head(buf)? {
                        return Ok(event);
                    }
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
                    if !chunk_end(buf)? {
                        return Ok(Event::NeedMore);
                    }
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

    /// The head state: `None` after an interim answer was skipped (decode
    /// on), else the event to return.
    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, DecodeError> {
        if buf.is_empty() {
            return Ok(Some(Event::NeedMore));
        }
        self.seen_any = true;
        let mut fields = if self.keep_head { Vec::with_capacity(16) } else { Vec::new() };
        let parsed = parse_head(buf, self.head_request, self.keep_head.then_some(&mut fields))?;
        let Some((head, len)) = parsed else {
            if buf.len() > MAX_HEAD {
                return Err(DecodeError::Malformed("head over 64 KiB"));
            }
            return Ok(Some(Event::NeedMore));
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
            return Ok(None);
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
        Ok(Some(Event::Head(head, raw)))
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

mod chunked;
mod head;

#[cfg(test)]
mod tests;
