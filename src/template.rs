//! Path templates: matching a route (`/products/{id}`) against a request
//! path, and rendering a service path (`/orders?product={id}`) from the
//! captured parameters.
//!
//! This is where path safety lives. A parameter is captured from exactly one
//! segment of the request path, percent-decoded, refused if it is `.` or `..`
//! (or malformed), and percent-encoded again into the service path with every
//! byte outside RFC 3986's unreserved set escaped. So an id can never add a
//! segment, a query, a fragment or a header line to the service request:
//! `/`, `?`, `#`, `%`, `&`, `=`, `+`, CR and LF all come out as `%XX`.

use std::borrow::Cow;
use std::fmt::Write as _;

use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
/// Used for parameters in both path and query positions: strictest is safest.
const PARAM_ESCAPE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why a template could not be compiled (reported with the TOML path by config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Templates are absolute paths.
    #[error("must start with '/'")]
    NotAbsolute,
    /// `{` without `}` or similar.
    #[error("unbalanced '{{' or '}}' in {0:?}")]
    Unbalanced(String),
    /// A parameter name that is not an identifier.
    #[error("invalid parameter name {0:?}: use letters, digits and '_'")]
    BadParamName(String),
    /// Route parameters must fill a whole segment.
    #[error("parameter {0:?} must be a whole path segment, like /items/{{id}}")]
    PartialSegment(String),
    /// The same parameter twice in a route.
    #[error("parameter {0:?} is declared twice")]
    DuplicateParam(String),
    /// A section path uses a parameter the route does not declare.
    #[error("parameter {{{0}}} is not declared in the route path")]
    UndeclaredParam(String),
    /// Characters that would break the request line.
    #[error("contains a character not allowed in a URL path: {0:?}")]
    BadCharacter(char),
    /// A fragment makes no sense in a service request.
    #[error("must not contain a fragment ('#')")]
    Fragment,
}

/// Why a request path's parameters were refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `.` or `..`, raw or percent-encoded.
    #[error("path parameter {0:?} is a dot segment")]
    DotSegment(String),
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path parameter {0:?}")]
    BadEncoding(String),
}

/// A compiled route path such as `/products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    segments: Vec<RouteSegment>,
    params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteSegment {
    Literal(String),
    Param,
}

/// Parameters captured from one request path, still percent-encoded as the
/// client sent them, in declaration order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawParams<'a> {
    values: Vec<&'a str>,
}

/// Parameters percent-decoded and checked, ready to be rendered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params<'a> {
    values: Vec<Cow<'a, [u8]>>,
}

impl RouteTemplate {
    /// Compiles a route path. Parameters must be whole segments.
    pub fn parse(path: &str) -> Result<Self, TemplateError> {
        if !path.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        check_literal_chars(path, false)?;
        let mut segments = Vec::new();
        let mut params: Vec<String> = Vec::new();
        for segment in path[1..].split('/') {
            match parse_param(segment)? {
                Some(name) => {
                    if params.iter().any(|p| p == name) {
                        return Err(TemplateError::DuplicateParam(name.to_string()));
                    }
                    params.push(name.to_string());
                    segments.push(RouteSegment::Param);
                }
                None => {
                    if segment.contains('{') || segment.contains('}') {
                        return Err(partial_or_unbalanced(segment));
                    }
                    segments.push(RouteSegment::Literal(segment.to_string()));
                }
            }
        }
        Ok(Self { segments, params })
    }

    /// Parameter names, in order.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// Number of literal segments: more literal is more specific.
    pub fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, RouteSegment::Literal(_))).count()
    }

    /// Matches a request path (without query, as sent: percent-encoded).
    /// A parameter matches one non-empty segment.
    pub fn match_path<'a>(&self, path: &'a str) -> Option<RawParams<'a>> {
        let rest = path.strip_prefix('/')?;
        let mut values = Vec::with_capacity(self.params.len());
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                RouteSegment::Literal(lit) => {
                    if lit != part {
                        return None;
                    }
                }
                RouteSegment::Param => {
                    if part.is_empty() {
                        return None;
                    }
                    values.push(part);
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(RawParams { values })
    }
}

impl<'a> RawParams<'a> {
    /// Decodes every parameter and refuses dot segments and malformed escapes.
    pub fn decode(&self) -> Result<Params<'a>, ParamError> {
        let mut values = Vec::with_capacity(self.values.len());
        for raw in &self.values {
            if !well_formed_escapes(raw) {
                return Err(ParamError::BadEncoding((*raw).to_string()));
            }
            let decoded: Cow<'a, [u8]> = percent_decode(raw.as_bytes()).into();
            if decoded.as_ref() == b"." || decoded.as_ref() == b".." {
                return Err(ParamError::DotSegment((*raw).to_string()));
            }
            values.push(decoded);
        }
        Ok(Params { values })
    }

    /// The raw values, in order.
    pub fn values(&self) -> &[&'a str] {
        &self.values
    }
}

impl<'a> Params<'a> {
    /// Builds parameters from decoded values (for tests and benchmarks).
    pub fn from_decoded(values: Vec<Cow<'a, [u8]>>) -> Self {
        Self { values }
    }

    /// The decoded bytes of parameter `index`.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.values.get(index).map(|v| v.as_ref())
    }
}

/// A compiled service path such as `/orders?product={id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<PathPart>,
    /// Literal bytes, to size the output.
    literal_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Literal(String),
    /// Index into the route's parameters.
    Param(usize),
}

impl PathTemplate {
    /// Compiles a service path against the route's parameter names.
    /// Parameters may sit anywhere (`/items/{id}.json`, `?product={id}`).
    pub fn parse(path: &str, route_params: &[String]) -> Result<Self, TemplateError> {
        if !path.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        if path.contains('#') {
            return Err(TemplateError::Fragment);
        }
        check_literal_chars(path, true)?;
        let mut parts = Vec::new();
        let mut literal_len = 0;
        let mut rest = path;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(TemplateError::Unbalanced(path.to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| TemplateError::Unbalanced(path.to_string()))?;
            let name = &rest[open + 1..close];
            if !is_identifier(name) {
                return Err(TemplateError::BadParamName(name.to_string()));
            }
            let index = route_params
                .iter()
                .position(|p| p == name)
                .ok_or_else(|| TemplateError::UndeclaredParam(name.to_string()))?;
            if open > 0 {
                literal_len += open;
                parts.push(PathPart::Literal(rest[..open].to_string()));
            }
            parts.push(PathPart::Param(index));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            literal_len += rest.len();
            parts.push(PathPart::Literal(rest.to_string()));
        }
        Ok(Self { parts, literal_len })
    }

    /// Renders the service path, every parameter percent-encoded.
    pub fn render(&self, params: &Params<'_>) -> String {
        let mut out = String::with_capacity(self.literal_len + 16);
        for part in &self.parts {
            match part {
                PathPart::Literal(lit) => out.push_str(lit),
                PathPart::Param(index) => {
                    // Compile-time checks guarantee the index exists; an empty
                    // value is the safe answer if that ever breaks.
                    let value = params.get(*index).unwrap_or_default();
                    let _ = write!(out, "{}", percent_encode(value, PARAM_ESCAPE));
                }
            }
        }
        out
    }

    /// True when the template has no parameters (same path for every request).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, PathPart::Literal(_)))
    }
}

fn parse_param(segment: &str) -> Result<Option<&str>, TemplateError> {
    if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        if !is_identifier(inner) {
            return Err(TemplateError::BadParamName(inner.to_string()));
        }
        return Ok(Some(inner));
    }
    Ok(None)
}

fn partial_or_unbalanced(segment: &str) -> TemplateError {
    match (segment.find('{'), segment.find('}')) {
        (Some(open), Some(close)) if open < close => {
            TemplateError::PartialSegment(segment[open + 1..close].to_string())
        }
        _ => TemplateError::Unbalanced(segment.to_string()),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Only printable ASCII without spaces may appear literally in a URL.
fn check_literal_chars(path: &str, allow_query: bool) -> Result<(), TemplateError> {
    for c in path.chars() {
        let ok = c.is_ascii_graphic() && c != '\\' && c != '"' && (allow_query || c != '?');
        if !ok {
            return Err(TemplateError::BadCharacter(c));
        }
    }
    Ok(())
}

fn well_formed_escapes(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_hexdigit());
            if !hex(bytes.get(i + 1)) || !hex(bytes.get(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(route: &str, service: &str, request: &str) -> Result<String, ParamError> {
        let route = RouteTemplate::parse(route).unwrap();
        let service = PathTemplate::parse(service, route.params()).unwrap();
        let raw = route.match_path(request).expect("route matches");
        Ok(service.render(&raw.decode()?))
    }

    #[test]
    fn plain_id_is_copied() {
        assert_eq!(
            render("/products/{id}", "/products/{id}", "/products/42").unwrap(),
            "/products/42"
        );
    }

    #[test]
    fn encoded_slash_stays_in_one_segment() {
        assert_eq!(
            render("/products/{id}", "/products/{id}", "/products/a%2F..%2Fadmin").unwrap(),
            "/products/a%2F..%2Fadmin"
        );
    }

    #[test]
    fn query_position_keeps_its_parameters() {
        assert_eq!(
            render("/p/{id}", "/orders?product={id}", "/p/1%26admin%3Dtrue%23x%2B").unwrap(),
            "/orders?product=1%26admin%3Dtrue%23x%2B"
        );
    }

    #[test]
    fn crlf_and_percent_are_encoded() {
        assert_eq!(
            render("/p/{id}", "/x/{id}", "/p/a%0D%0AHost:%20evil%25").unwrap(),
            "/x/a%0D%0AHost%3A%20evil%25"
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in ["/p/..", "/p/.", "/p/%2e%2e", "/p/%2E", "/p/.%2e"] {
            assert!(
                matches!(render("/p/{id}", "/x/{id}", bad), Err(ParamError::DotSegment(_))),
                "{bad}"
            );
        }
        assert_eq!(render("/p/{id}", "/x/{id}", "/p/...").unwrap(), "/x/...");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        assert!(matches!(render("/p/{id}", "/x/{id}", "/p/%zz"), Err(ParamError::BadEncoding(_))));
        assert!(matches!(
            render("/p/{id}", "/x/{id}", "/p/abc%4"),
            Err(ParamError::BadEncoding(_))
        ));
    }

    #[test]
    fn route_matching_is_by_whole_segments() {
        let route = RouteTemplate::parse("/products/{id}").unwrap();
        assert!(route.match_path("/products/42").is_some());
        assert!(route.match_path("/products/").is_none());
        assert!(route.match_path("/products/42/x").is_none());
        assert!(route.match_path("/products").is_none());
        assert!(route.match_path("/productsx/42").is_none());
    }

    #[test]
    fn template_errors() {
        assert_eq!(RouteTemplate::parse("products"), Err(TemplateError::NotAbsolute));
        assert_eq!(
            RouteTemplate::parse("/a/{id}/{id}"),
            Err(TemplateError::DuplicateParam("id".into()))
        );
        assert_eq!(
            RouteTemplate::parse("/a/x{id}"),
            Err(TemplateError::PartialSegment("id".into()))
        );
        assert_eq!(RouteTemplate::parse("/a/{1x}"), Err(TemplateError::BadParamName("1x".into())));
        let params = vec!["id".to_string()];
        assert_eq!(
            PathTemplate::parse("/a/{sku}", &params),
            Err(TemplateError::UndeclaredParam("sku".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/{id", &params),
            Err(TemplateError::Unbalanced("/a/{id".into()))
        );
        assert_eq!(PathTemplate::parse("/a b", &params), Err(TemplateError::BadCharacter(' ')));
        assert_eq!(PathTemplate::parse("/a#b", &params), Err(TemplateError::Fragment));
        assert!(PathTemplate::parse("/items/{id}.json", &params).is_ok());
    }
}
