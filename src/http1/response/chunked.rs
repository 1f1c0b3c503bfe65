//! Chunked bodies: the chunk-size line with its extensions, and the
//! trailer section, each bounded and ended by CRLF.

use bytes::{Buf, BytesMut};

use super::{DecodeError, HEADER_SLOTS, MAX_CHUNK_DIGITS, MAX_CHUNK_LINE, MAX_TRAILERS};

/// Parses a chunk-size line at the front of `buf`: `None` while incomplete,
/// else the line's length (CRLF included) and the size.
pub(super) fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, DecodeError> {
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

/// Consumes the CRLF after a chunk's data: `false` while it has not all
/// arrived.
pub(super) fn chunk_end(buf: &mut BytesMut) -> Result<bool, DecodeError> {
    if buf.len() < 2 {
        if buf.first().is_some_and(|&b| b != b'\r') {
            return Err(DecodeError::Malformed("chunk not followed by CRLF"));
        }
        return Ok(false);
    }
    if &buf[..2] != b"\r\n" {
        return Err(DecodeError::Malformed("chunk not followed by CRLF"));
    }
    buf.advance(2);
    Ok(true)
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
pub(super) fn trailer_section_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
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

/// Whether a line in `bytes` ends with a bare LF (no CR before it).
fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| at == 0 || bytes[at - 1] != b'\r')
}
