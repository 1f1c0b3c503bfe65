//! Error collection for the config pipeline: TOML paths, the error sink,
//! and "poisoned" paths.
//!
//! Every stage pushes into one [`Sink`] instead of returning early, so a file
//! with five mistakes gets five errors. A path is *poisoned* once an error
//! has been reported for it (an unset `${VAR}`, a key removed after a serde
//! error): later stages would only restate that error in other words
//! ("missing key", "invalid address \"\""), so errors at or below a poisoned
//! path are dropped.

use super::error::{ConfigError, ConfigErrors};

/// Collects errors in discovery order.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    errors: Vec<ConfigError>,
    poisoned: Vec<String>,
}

impl Sink {
    /// Records an error unless its path is poisoned.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.is_poisoned(&path) {
            self.errors.push(ConfigError { path, message: message.into() });
        }
    }

    /// Records an error and poisons its path, so stages that read the same
    /// value later stay quiet about it.
    pub(crate) fn push_and_poison(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.push(path.clone(), message);
        self.poison(path);
    }

    /// Marks `path` (and everything below it) as already reported.
    pub(crate) fn poison(&mut self, path: impl Into<String>) {
        self.poisoned.push(path.into());
    }

    /// True when `path` is, or lies below, a poisoned path.
    pub(crate) fn is_poisoned(&self, path: &str) -> bool {
        self.poisoned.iter().any(|p| is_at_or_below(path, p))
    }

    /// Number of errors so far (a mark for [`Sink::remap_since`]).
    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    /// Rewrites the paths of the errors recorded since `mark` (used to report
    /// a value inherited from `[defaults]` where it was written); a moved
    /// error whose new path is poisoned is dropped.
    pub(crate) fn remap_since(&mut self, mark: usize, remap: impl Fn(&str) -> Option<String>) {
        let tail = self.errors.split_off(mark.min(self.errors.len()));
        for mut error in tail {
            // Only a moved error is checked again: the others passed the
            // check when pushed, and may since have poisoned their own path.
            if let Some(path) = remap(&error.path) {
                if self.is_poisoned(&path) {
                    continue;
                }
                error.path = path;
            }
            self.errors.push(error);
        }
    }

    /// The collected errors, exact duplicates removed (first kept), or `Ok`.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        let mut unique: Vec<ConfigError> = Vec::with_capacity(self.errors.len());
        for error in self.errors {
            if !unique.contains(&error) {
                unique.push(error);
            }
        }
        if unique.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { errors: unique })
        }
    }
}

/// True when `path` equals `ancestor` or is a key or index below it.
pub(crate) fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => ancestor.is_empty() || rest.is_empty() || rest.starts_with(['.', '[']),
        None => false,
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys (`backends."a b"`).
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    let bare =
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_string() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_formatted_like_toml() {
        assert_eq!(key_path("", "server"), "server");
        assert_eq!(key_path("backends", "reviews"), "backends.reviews");
        assert_eq!(key_path("backends", "a b"), "backends.\"a b\"");
        assert_eq!(index_path("routes", 0), "routes[0]");
    }

    #[test]
    fn poisoned_paths_hide_errors_at_and_below_them_only() {
        let mut sink = Sink::default();
        sink.push_and_poison("backends.a.timeout", "first");
        sink.push("backends.a.timeout", "again");
        sink.push("backends.a.timeouts", "other key");
        sink.poison("routes[0]");
        sink.push("routes[0].sections[1].name", "hidden");
        sink.push("routes[01]", "shown");
        let errors = sink.finish().unwrap_err().errors;
        let shown: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(shown, ["first", "other key", "shown"]);
    }

    #[test]
    fn remapped_duplicates_are_reported_once() {
        let mut sink = Sink::default();
        sink.push("defaults.timeout", "bad");
        let mark = sink.len();
        sink.push("backends.a.timeout", "bad");
        sink.push("backends.a.retries", "bad");
        sink.remap_since(mark, |p| p.strip_suffix("a.timeout").map(|_| "defaults.timeout".into()));
        let errors = sink.finish().unwrap_err().errors;
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["defaults.timeout", "backends.a.retries"]);
    }
}
