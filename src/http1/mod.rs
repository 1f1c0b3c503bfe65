//! HTTP/1.1 message rules (RFC 9110, RFC 9112) that the edge and the client
//! to services share: which headers are hop-by-hop, what a valid
//! `Content-Length` is ([`fields`]), and how a service's answer is framed
//! ([`response`], the one response decoder every exchange with a service
//! goes through).
//!
//! Strict on purpose: a gateway sits between strangers, and every byte a
//! service sends is read as if it came from an attacker. Where RFC 9112
//! lets a recipient be lenient (bare LF line ends, a `+` or a list in
//! `Content-Length`, both `Content-Length` and `Transfer-Encoding`), mosaic
//! refuses the message instead, so the framing it acts on is never a guess.

pub mod fields;
pub mod response;
