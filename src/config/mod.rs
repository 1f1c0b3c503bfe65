//! Configuration: TOML text → raw serde structs → validated [`Config`].
//!
//! The pipeline is `file → ${VAR} expansion → raw (serde, deny_unknown_fields)
//! → [defaults] merged into each backend → validated`. Every step collects
//! all of its errors, each with the TOML path it is about
//! (`routes[0].sections[4].backend: ...`), so `mosaic check` can print them
//! all at once and `mosaic run` can refuse the same file.

mod error;
mod model;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

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
    _text: &str,
    _env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors::single("", "config parsing not implemented yet"))
}
