//! What a service's answer means for a section (SPEC.md, "A composed
//! page"): a 2xx with a JSON body is the section, a 4xx is an answer
//! without a body (never replaced by cache or default, no breaker fault), a
//! 5xx is a fault, and anything else (a 1xx or 3xx final answer, a 2xx that
//! is not JSON) is an invalid body. The transport only says what came; this
//! is the one place that judges it.

use bytes::Bytes;

use super::client::Reply;
use super::error::FetchError;
use super::json_check::is_json;

/// A service's answer that was not a fault: 2xx with a JSON body, or 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// The body for 2xx (validated JSON); empty for 4xx.
    pub body: Bytes,
}

impl Fetched {
    /// A 2xx answer (its body is the section).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Judges a section's reply.
pub fn judge(reply: Reply) -> Result<Fetched, FetchError> {
    let status = reply.status;
    match status {
        500..=599 => Err(FetchError::Status5xx),
        400..=499 => Ok(Fetched { status, body: Bytes::new() }),
        200..=299 if is_json(&reply.body) => Ok(Fetched { status, body: reply.body }),
        // Not JSON; or a 1xx/3xx final answer (redirects are not followed).
        _ => Err(FetchError::InvalidBody),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &'static [u8]) -> Reply {
        Reply { status, body: Bytes::from_static(body) }
    }

    #[test]
    fn only_2xx_json_and_4xx_are_answers() {
        assert_eq!(
            judge(reply(200, b"{\"a\":1}")).map(|f| f.body),
            Ok(Bytes::from_static(b"{\"a\":1}"))
        );
        assert_eq!(judge(reply(204, b"")), Err(FetchError::InvalidBody), "no JSON in it");
        assert_eq!(judge(reply(200, b"<html>")), Err(FetchError::InvalidBody));
        assert_eq!(judge(reply(404, b"")), Ok(Fetched { status: 404, body: Bytes::new() }));
        assert_eq!(judge(reply(503, b"{}")), Err(FetchError::Status5xx));
        assert_eq!(judge(reply(302, b"")), Err(FetchError::InvalidBody));
        assert_eq!(judge(reply(101, b"")), Err(FetchError::InvalidBody));
    }

    #[test]
    fn json_check_accepts_any_json_value_and_nothing_else() {
        for ok in [&b"{}"[..], b"[1,2]", b" \"s\" ", b"null", b"12.5", b"{\"a\":{\"b\":[true]}}"] {
            assert!(is_json(ok), "{ok:?}");
        }
        for bad in [&b""[..], b"<html>", b"{", b"{} {}", b"{\"a\":}"] {
            assert!(!is_json(bad), "{bad:?}");
        }
    }
}
