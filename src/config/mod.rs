//! Configuration: TOML text → raw serde structs → validated [`Config`].
//!
//! The pipeline is `file → ${VAR} expansion → raw (serde, deny_unknown_fields)
//! → [defaults] merged into each backend → validated`. Every step collects
//! all of its errors, each with the TOML path it is about
//! (`routes[0].sections[4].backend: ...`), so `mosaic check` can print them
//! all at once and `mosaic run` can refuse the same file.
//!
//! Files, in pipeline order:
//! - `env.rs`: `${VAR}` expansion;
//! - `raw.rs`: serde structs and the per-unit deserializer that collects errors;
//! - `merge.rs`: `[defaults]` into each backend;
//! - `validate.rs`: the pipeline, `[server]`, `[admin]`, `[discovery]`;
//! - `backend.rs`, `breaker.rs`, `routes.rs`, `auth.rs`, `jwt.rs`: the rest of the file;
//! - `fields.rs`, `units.rs`: single values (durations, sizes, ranges);
//! - `sink.rs`: error collection and TOML paths; `summary.rs`: `mosaic check`'s output.

mod amqp;
mod auth;
mod backend;
mod breaker;
mod env;
mod error;
mod fields;
mod jwt;
mod merge;
mod model;
mod raw;
mod redis;
mod routes;
mod sink;
mod summary;
mod tls;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use amqp::parse_uri as parse_amqp_uri;
pub use error::{ConfigError, ConfigErrors};
pub use jwt::{JwksTls, JwtConfig, JwtKeys, Secret};
pub use model::*;
pub use redis::from_url as redis_from_url;
pub use tls::{provider as tls_provider, TlsConfig, TlsVersion};

use std::path::Path;

/// Reads and validates a config file, reading `${VAR}` from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single("", format!("cannot read {}: {e}", path.display())))?;
    parse_str(&text)
}

/// Validates config text, reading `${VAR}` from the process environment.
pub fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse_str_with_env(text, &|name| std::env::var(name).ok())
}

/// Validates config text with an explicit environment (for tests).
pub fn parse_str_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let table = text.parse::<toml::Table>().map_err(|e| syntax_error(text, &e))?;
    validate::validate(table, env)
}

/// A TOML syntax error: nothing else can be checked, so it is the only one.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigErrors {
    let message = error.message().trim_end().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            ConfigErrors::single(
                "",
                format!("TOML syntax error at line {line}, column {column}: {message}"),
            )
        }
        None => ConfigErrors::single("", format!("TOML syntax error: {message}")),
    }
}
