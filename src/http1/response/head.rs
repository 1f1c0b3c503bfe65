//! The head of an answer: its status line and fields parsed (httparse),
//! every line end checked, and the framing and connection rules applied
//! (see the parent module's doc).

use super::super::fields::{parse_content_length, tokens};
use super::{
    DecodeError, Framing, Head, RawField, HEADER_SLOTS, MAX_HEAD, MAX_HEADERS,
    STATUS_LINE_WITHOUT_REASON,
};

/// Parses a response head: `None` while incomplete, else the head and its
/// length in bytes. With `fields`, every header is recorded there.
pub(super) fn parse_head(
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
    let reason = response.reason.unwrap_or("").as_bytes();
    if !status_line_and_head_end_with_crlf(buf, len, reason) {
        return Err(DecodeError::Malformed("line not ended by CRLF"));
    }
    let mut framing_fields = FramingFields::default();
    for header in response.headers.iter() {
        if !field_line_ends_with_crlf(buf, header.value) {
            return Err(DecodeError::Malformed("line not ended by CRLF"));
        }
        if let Some(out) = fields.as_deref_mut() {
            out.push(raw_field(buf, header));
        }
        framing_fields.note(header.name.as_bytes(), header.value)?;
    }
    framing_fields.head(status, head_request, response.version == Some(0))
}

// httparse also ends a line at a bare LF. With obs-fold refused, the only
// LFs in a head end its status line, its field lines and the blank line, so
// checking for a CR before each of those ends is a complete check (and
// cheaper than a scan of the head).

/// Whether the status line (ending after `reason`) and the head's blank
/// line end with CRLF.
fn status_line_and_head_end_with_crlf(buf: &[u8], len: usize, reason: &[u8]) -> bool {
    // An empty reason after no space is a static "" outside the buffer: the
    // line then ends right after the status code.
    let status_end = match (reason.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize) {
        at if at <= len => at + reason.len(),
        _ => STATUS_LINE_WITHOUT_REASON,
    };
    buf.get(status_end) == Some(&b'\r') && buf[..len].get(len.wrapping_sub(2)) == Some(&b'\r')
}

/// Whether the field line whose value (a slice of `buf`) is `value` ends
/// with CRLF, after the whitespace httparse trimmed off the value.
fn field_line_ends_with_crlf(buf: &[u8], value: &[u8]) -> bool {
    let mut line_end = value.as_ptr() as usize - buf.as_ptr() as usize + value.len();
    while matches!(buf.get(line_end), Some(b' ' | b'\t')) {
        line_end += 1;
    }
    buf.get(line_end) == Some(&b'\r')
}

/// Where a parsed header lies in `buf`: name and value are slices of it, so
/// their offsets are differences of addresses within the one buffer.
fn raw_field(buf: &[u8], header: &httparse::Header<'_>) -> RawField {
    let name_start = header.name.as_ptr() as usize - buf.as_ptr() as usize;
    let value_start = header.value.as_ptr() as usize - buf.as_ptr() as usize;
    RawField {
        name: name_start..name_start + header.name.len(),
        value: value_start..value_start + header.value.len(),
    }
}

/// What a head's framing and connection fields say, gathered field by field.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl FramingFields {
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_content_length(value)
                .ok_or(DecodeError::Malformed("invalid Content-Length"))?;
            if self.length.is_some_and(|l| l != value) {
                return Err(DecodeError::Malformed("conflicting Content-Length"));
            }
            self.length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            for coding in tokens(value) {
                if coding.is_empty() {
                    return Err(DecodeError::Malformed("empty transfer coding"));
                }
                if self.chunked {
                    // Chunked must be applied once, and last.
                    return Err(DecodeError::Malformed("transfer coding after chunked"));
                }
                self.chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The head these fields frame, for an answer with `status` to a
    /// request that was HEAD or not, in HTTP/1.0 or 1.1.
    fn head(self, status: u16, head_request: bool, http10: bool) -> Result<Head, DecodeError> {
        let no_body =
            head_request || status == 204 || status == 304 || (100..200).contains(&status);
        if self.transfer_encoding && self.length.is_some() && !no_body {
            return Err(DecodeError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty
        // framing; the message is read, and the connection closed after it.
        let mut close = self.close || (http10 && (self.transfer_encoding || !self.keep_alive));
        let framing = if no_body {
            Framing::Empty
        } else if self.chunked {
            Framing::Chunked
        } else if self.transfer_encoding {
            Framing::UntilClose
        } else if let Some(n) = self.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        close |= framing == Framing::UntilClose;
        Ok(Head { status, framing, close })
    }
}
