//! Which requests a proxy route takes and the path it sends on: prefix
//! matching at a segment boundary, the rewrite, and refusal of paths that
//! could climb out of the prefix on a service that normalises them.

/// Whether `path` falls under `prefix`, at a segment boundary:
/// `/api/cart/` matches `/api/cart` and `/api/cart/x`, never `/api/cartoon`.
pub fn matches(prefix: &str, path: &str) -> bool {
    let base = prefix.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The service path: the prefix replaced by `rewrite` (if any), query kept.
pub fn target_path(prefix: &str, rewrite: Option<&str>, path: &str, query: &str) -> String {
    let base = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(base).unwrap_or(path);
    let (head, tail) = match rewrite {
        Some(rewrite) => (rewrite.trim_end_matches('/'), rest),
        None => (path, ""),
    };
    let mut out = String::with_capacity(head.len() + tail.len() + 1 + query.len() + 1);
    out.push_str(head);
    out.push_str(tail);
    if out.is_empty() {
        out.push('/');
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Whether `path` holds a `.` or `..` segment as any service might read it:
/// dots raw or as `%2e`; segments split at `/`, and also at `\`, `%2f` and
/// `%5c` (which services that decode or normalise backslashes treat as
/// separators); a segment's `;` parameters ignored (`..;/` is `..` to Java
/// servlet containers). Refused, so a prefix can never be escaped.
///
/// Not decoded twice: `%252e` stays `%2e` to a service that decodes once.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Most paths hold no dot and no escape: one pass settles those.
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    let mut dots = 0;
    let mut other = false;
    let mut in_parameters = false;
    let mut at = 0;
    loop {
        let separator = match bytes.get(at) {
            None => Some(0),
            Some(b'/' | b'\\') => Some(1),
            Some(b'%') if escape_is(bytes, at, b"2f") || escape_is(bytes, at, b"5c") => Some(3),
            _ => None,
        };
        if let Some(width) = separator {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if at >= bytes.len() {
                return false;
            }
            (dots, other, in_parameters) = (0, false, false);
            at += width;
            continue;
        }
        if in_parameters {
            at += 1;
        } else if bytes[at] == b';' {
            in_parameters = true;
            at += 1;
        } else if bytes[at] == b'.' {
            dots += 1;
            at += 1;
        } else if escape_is(bytes, at, b"2e") {
            dots += 1;
            at += 3;
        } else {
            other = true;
            at += 1;
        }
    }
}

/// Whether `bytes[at..]` starts with `%` and the two hex digits `hex`
/// (lower case given; either case matches).
fn escape_is(bytes: &[u8], at: usize, hex: &[u8; 2]) -> bool {
    bytes.get(at) == Some(&b'%')
        && bytes.get(at + 1..at + 3).is_some_and(|digits| digits.eq_ignore_ascii_case(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_at_segment_boundary() {
        assert!(matches("/api/cart/", "/api/cart/x"));
        assert!(matches("/api/cart/", "/api/cart"));
        assert!(matches("/api/cart", "/api/cart/x/y"));
        assert!(!matches("/api/cart/", "/api/cartoon"));
        assert!(!matches("/api/cart", "/api/cartoon"));
        assert!(matches("/", "/anything"));
    }

    #[test]
    fn rewrite_replaces_prefix_and_keeps_query() {
        assert_eq!(
            target_path("/api/cart/", Some("/cart/"), "/api/cart/items", "a=1"),
            "/cart/items?a=1"
        );
        assert_eq!(target_path("/api/cart/", Some("/cart/"), "/api/cart", ""), "/cart");
        assert_eq!(target_path("/api/", None, "/api/x", ""), "/api/x");
        assert_eq!(target_path("/api/", Some("/"), "/api", ""), "/");
    }

    #[test]
    fn dot_segments_are_found_however_they_are_spelled() {
        for path in [
            "/api/cart/../admin",
            "/api/cart/%2e%2E/admin",
            "/api/cart/.%2e/admin",
            "/api/cart/%2E./admin",
            "/api/./x",
            "/api/cart/..",
            "/api/cart/..%2fadmin",
            "/api/cart/..%2Fadmin",
            "/api/cart/%2e%2e%2fadmin",
            "/api/cart/%2E%2E%2Fadmin",
            "/api/cart/..;/admin",
            "/api/cart/..;jsessionid=1/admin",
            "/api/cart/.;x/admin",
            "/api/cart/..%5cadmin",
            "/api/cart/..%5Cadmin",
            "/api/cart/..\\admin",
            "/api/cart\\..\\admin",
            "/api/cart/..",
            "/..",
        ] {
            assert!(has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn ordinary_dots_and_escapes_pass() {
        for path in [
            "/api/cart/...x/a.b",
            "/api/cart/.../x",
            "/api/cart/%2e%2e%2e/x",
            "/api/cart/%2f/x",
            "/api/cart/a%2fb",
            "/api/cart/.a/x",
            "/api/cart/a.b;v=1.2",
            "/api/cart/;../x",
            "/api/cart/%252e%252e/x",
            "/api/cart/%2",
            "/api/cart/v1.0%",
            "/",
        ] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }
}
