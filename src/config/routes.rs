//! `[[routes]]` (composed pages and their sections) and `[[proxy]]` (plain
//! routing), validated against the set of backend names.
//!
//! Each route and each section is deserialized on its own, so one bad
//! section does not hide the next. Section paths are compiled against the
//! route's parameters: `{sku}` in a section of `/products/{id}` is an error
//! at that section's `path`.

use std::sync::Arc;

use super::auth::{access, AccessContext};
use super::backend::{is_name, NAME_RULE};
use super::fields::{is_header_token, positive_duration, required};
use super::model::{ProxyConfig, RouteConfig, SectionConfig};
use super::raw::{deserialize_unit, RawProxy, RawRoute, RawSection};
use super::sink::{index_path, key_path, Sink};
use crate::template::{PathTemplate, RouteTemplate, TemplateError};

/// The page member that carries the labels; no section may take its name.
const RESERVED_SECTION: &str = "_mosaic";

/// The names of all backends written in the file, valid or not, so a
/// section naming a broken backend is not reported twice.
pub(crate) struct Backends<'a>(pub &'a [String]);

impl Backends<'_> {
    /// The name, or an error at `path` listing the known backends.
    fn check(&self, sink: &mut Sink, path: &str, name: Option<String>) -> Option<String> {
        let name = required(sink, path, name, "backend = \"catalog\"")?;
        if self.0.contains(&name) {
            return Some(name);
        }
        sink.push(path, format!("no backend named {name:?} (known: {})", self.0.join(", ")));
        None
    }
}

/// The elements of `[[NAME]]`, or an error when it is not an array.
pub(crate) fn array_of_tables(
    value: Option<toml::Value>,
    name: &str,
    sink: &mut Sink,
) -> Vec<toml::Value> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            sink.push_and_poison(
                name,
                format!("expected [[{name}]] tables, found {}", other.type_str()),
            );
            Vec::new()
        }
    }
}

/// `stream`: a route answers `Accept: text/event-stream` with events unless
/// it opts out.
pub const DEFAULT_STREAM: bool = true;

/// Validates every `[[routes]]`.
pub(crate) fn routes(
    value: Option<toml::Value>,
    backends: &Backends<'_>,
    access_context: &AccessContext,
    sink: &mut Sink,
) -> Vec<Arc<RouteConfig>> {
    let mut valid = Vec::new();
    // Shape of each route (parameters anonymised) to catch `/a/{id}` vs `/a/{sku}`.
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, mut value) in array_of_tables(value, "routes", sink).into_iter().enumerate() {
        let path = index_path("routes", i);
        let Some(raw) = deserialize_unit::<RawRoute>(&path, &mut value, sink) else { continue };
        let path_path = key_path(&path, "path");
        let template = required(sink, &path_path, raw.path.clone(), "path = \"/products/{id}\"")
            .and_then(|route| match RouteTemplate::parse(&route) {
                Ok(template) => Some((route, template)),
                Err(e) => {
                    sink.push(&path_path, format!("invalid route path {route:?}: {e}"));
                    None
                }
            });
        if let Some((route, _)) = &template {
            let shape = shape(route);
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == shape) {
                sink.push(&path_path, format!("{route:?} matches the same paths as {other}"));
            } else {
                seen.push((format!("{path} ({route:?})"), shape));
            }
        }
        let deadline_path = key_path(&path, "deadline");
        let deadline =
            required(sink, &deadline_path, raw.deadline.as_ref(), "deadline = \"250ms\"")
                .and_then(|v| positive_duration(sink, &deadline_path, v));
        let params = template.as_ref().map(|(_, t)| t.params());
        let sections = sections(&path, raw.sections, params, backends, sink);
        let access = access(sink, &path, raw.auth, raw.scopes, raw.rate_limit, access_context);
        if let (Some((route, template)), Some(deadline), Some(sections), Some(access)) =
            (template, deadline, sections, access)
        {
            valid.push(Arc::new(RouteConfig {
                path: route,
                template,
                deadline,
                sections,
                access,
                stream: raw.stream.unwrap_or(DEFAULT_STREAM),
            }));
        }
    }
    valid
}

/// The route with every `{param}` written `{}`: two routes with the same
/// shape match the same requests.
fn shape(route: &str) -> String {
    route
        .split('/')
        .map(|segment| if segment.starts_with('{') { "{}" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

fn sections(
    route_path: &str,
    value: Option<toml::Value>,
    params: Option<&[String]>,
    backends: &Backends<'_>,
    sink: &mut Sink,
) -> Option<Vec<SectionConfig>> {
    let path = key_path(route_path, "sections");
    let example =
        "sections = [{ name = \"product\", backend = \"catalog\", path = \"/products/{id}\" }]";
    let items = match required(sink, &path, value, example)? {
        toml::Value::Array(items) => items,
        other => {
            sink.push(&path, format!("expected an array of tables, found {}", other.type_str()));
            return None;
        }
    };
    if items.is_empty() {
        sink.push(&path, format!("empty: a page needs at least one section ({example})"));
        return None;
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for (j, mut value) in items.into_iter().enumerate() {
        let path = index_path(&path, j);
        let section = deserialize_unit::<RawSection>(&path, &mut value, sink)
            .and_then(|raw| section(&path, raw, params, &mut names, backends, sink));
        match section {
            Some(section) => valid.push(section),
            None => ok = false,
        }
    }
    ok.then_some(valid)
}

fn section(
    path: &str,
    raw: RawSection,
    params: Option<&[String]>,
    names: &mut Vec<String>,
    backends: &Backends<'_>,
    sink: &mut Sink,
) -> Option<SectionConfig> {
    let name_path = key_path(path, "name");
    let name = required(sink, &name_path, raw.name, "name = \"product\"").filter(|name| {
        let problem = if !is_name(name) {
            Some(format!("invalid section name {name:?}: {NAME_RULE}"))
        } else if name == RESERVED_SECTION {
            Some(format!(
                "{RESERVED_SECTION:?} is reserved for the page's labels: choose another name"
            ))
        } else if names.contains(name) {
            Some(format!("duplicate section name {name:?}: each member of the page needs its own"))
        } else {
            None
        };
        names.push(name.clone());
        problem.map(|p| sink.push(&name_path, p)).is_none()
    });
    let backend = backends.check(sink, &key_path(path, "backend"), raw.backend);
    let service_path = key_path(path, "path");
    let service = required(sink, &service_path, raw.path, "path = \"/products/{id}\"");
    // Without a valid route path there are no parameters to check against.
    let template = match (service.as_deref(), params) {
        (Some(service), Some(params)) => match PathTemplate::parse(service, params) {
            Ok(template) => Some(template),
            Err(e) => {
                let hint = match e {
                    TemplateError::UndeclaredParam(_) => {
                        format!(" (the route declares: {})", declared(params))
                    }
                    _ => String::new(),
                };
                sink.push(&service_path, format!("invalid service path {service:?}: {e}{hint}"));
                None
            }
        },
        _ => None,
    };
    let forward_headers = headers(&key_path(path, "forward_headers"), raw.forward_headers, sink);
    Some(SectionConfig {
        name: name?,
        backend: backend?,
        path: service?,
        template: template?,
        required: raw.required.unwrap_or(false),
        forward_headers: forward_headers?,
    })
}

fn declared(params: &[String]) -> String {
    if params.is_empty() {
        "no parameters".to_string()
    } else {
        params.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
    }
}

/// Header names, lowercased; each must be a valid HTTP token.
fn headers(path: &str, raw: Option<Vec<String>>, sink: &mut Sink) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, header) in raw.unwrap_or_default().iter().enumerate() {
        let lower = header.to_ascii_lowercase();
        if !is_header_token(header) {
            sink.push(
                index_path(path, i),
                format!("invalid header name {header:?} (e.g. \"authorization\", \"x-user-id\")"),
            );
            ok = false;
        } else if names.contains(&lower) {
            sink.push(index_path(path, i), format!("header {header:?} is listed twice"));
            ok = false;
        } else {
            names.push(lower);
        }
    }
    ok.then_some(names)
}

/// Validates every `[[proxy]]`.
pub(crate) fn proxies(
    value: Option<toml::Value>,
    backends: &Backends<'_>,
    access_context: &AccessContext,
    sink: &mut Sink,
) -> Vec<Arc<ProxyConfig>> {
    let mut valid = Vec::new();
    let mut prefixes: Vec<(String, String)> = Vec::new();
    for (i, mut value) in array_of_tables(value, "proxy", sink).into_iter().enumerate() {
        let path = index_path("proxy", i);
        let Some(raw) = deserialize_unit::<RawProxy>(&path, &mut value, sink) else { continue };
        let prefix_path = key_path(&path, "prefix");
        let prefix = required(sink, &prefix_path, raw.prefix, "prefix = \"/api/cart/\"")
            .filter(|prefix| url_path(sink, &prefix_path, "prefix", prefix));
        if let Some(prefix) = &prefix {
            if let Some((other, _)) = prefixes.iter().find(|(_, p)| p == prefix) {
                sink.push(
                    &prefix_path,
                    format!("duplicate prefix {prefix:?} (already used by {other})"),
                );
            } else {
                prefixes.push((path.clone(), prefix.clone()));
            }
        }
        let backend = backends.check(sink, &key_path(&path, "backend"), raw.backend);
        let rewrite_path = key_path(&path, "rewrite");
        let rewrite = match raw.rewrite {
            Some(rewrite) => {
                url_path(sink, &rewrite_path, "rewrite", &rewrite).then_some(Some(rewrite))
            }
            None => Some(None),
        };
        let access = access(sink, &path, raw.auth, raw.scopes, raw.rate_limit, access_context);
        if let (Some(prefix), Some(backend), Some(rewrite), Some(access)) =
            (prefix, backend, rewrite, access)
        {
            valid.push(Arc::new(ProxyConfig { prefix, backend, rewrite, access }));
        }
    }
    valid
}

/// True for an absolute path without query, fragment or spaces.
fn url_path(sink: &mut Sink, path: &str, what: &str, value: &str) -> bool {
    let ok = value.starts_with('/')
        && value.chars().all(|c| c.is_ascii_graphic() && c != '?' && c != '#');
    if !ok {
        sink.push(
            path,
            format!("invalid {what} {value:?}: use an absolute path without query or spaces, e.g. \"/api/cart/\""),
        );
    }
    ok
}
