//! Redis keys of the shared tier (SPEC.md, "Shared cache (Redis)").
//!
//! A key is `prefix`, the backend, the resolved path and a SHA-256 of the
//! forwarded header values, joined by `|`:
//! `mosaic:cart|/carts/7|3b4c…` (64 hex digits). The header values are only
//! ever hashed, so a credential forwarded to the service (`authorization`)
//! never reaches Redis in the clear, and two users' answers never share a
//! key. The path comes from the local key (see `Backend::cache_key`: the
//! path, then `\nname=value` per header; a path holds no LF).

use sha2::{Digest, Sha256};

/// Joins the parts of a key.
const SEPARATOR: u8 = b'|';

/// `prefix` + `backend` + `|`: the start of every key of one backend.
pub fn backend_prefix(prefix: &str, backend: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(prefix.len() + backend.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(backend.as_bytes());
    out.push(SEPARATOR);
    out.into_boxed_slice()
}

/// The shared key of a local cache key, under `backend_prefix`.
pub fn shared_key(backend_prefix: &[u8], local_key: &[u8]) -> Vec<u8> {
    let split = memchr::memchr(b'\n', local_key).unwrap_or(local_key.len());
    let (path, headers) = local_key.split_at(split);
    let digest = Sha256::digest(headers);
    let mut out = Vec::with_capacity(backend_prefix.len() + path.len() + 1 + 64);
    out.extend_from_slice(backend_prefix);
    out.extend_from_slice(path);
    out.push(SEPARATOR);
    for byte in digest {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A `SCAN MATCH` pattern for every key of a backend (`path: None`) or of
/// one path, whatever the header values. Paths start with `/`, so the
/// pattern of backend `a` (`a|/*`) cannot match a backend named `a|b`.
pub fn pattern(backend_prefix: &[u8], path: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(backend_prefix.len() + 64);
    escape_glob(&mut out, backend_prefix);
    match path {
        Some(path) => {
            escape_glob(&mut out, path.as_bytes());
            out.push(SEPARATOR);
            out.push(b'*');
        }
        None => out.extend_from_slice(b"/*"),
    }
    out
}

/// Glob-escapes bytes for Redis's `MATCH` (`*`, `?`, `[`, `]`, `\`).
fn escape_glob(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_values_are_hashed_and_split_the_key() {
        let prefix = backend_prefix("mosaic:", "cart");
        let alice = shared_key(&prefix, b"/carts/7\nauthorization=Bearer alice-token");
        let bob = shared_key(&prefix, b"/carts/7\nauthorization=Bearer bob-token");
        let anonymous = shared_key(&prefix, b"/carts/7");
        assert_ne!(alice, bob);
        assert_ne!(alice, anonymous);
        let text = String::from_utf8(alice.clone()).unwrap();
        assert!(text.starts_with("mosaic:cart|/carts/7|"), "{text}");
        assert_eq!(text.len(), "mosaic:cart|/carts/7|".len() + 64);
        assert!(!text.contains("alice"), "{text}");
        // The same call gives the same key on every replica.
        assert_eq!(alice, shared_key(&prefix, b"/carts/7\nauthorization=Bearer alice-token"));
    }

    #[test]
    fn patterns_escape_glob_characters() {
        let prefix = backend_prefix("m[1]:", "p*");
        assert_eq!(pattern(&prefix, None), b"m\\[1\\]:p\\*|/*".to_vec());
        assert_eq!(pattern(&prefix, Some("/a?b")), b"m\\[1\\]:p\\*|/a\\?b|*".to_vec());
    }
}
