//! `${VAR}` expansion in every string value of the parsed TOML tree.
//!
//! `${VAR}` is replaced by the variable's value and is an error when the
//! variable is unset; `${VAR:-default}` falls back to `default` (which may
//! be empty); `$${` writes a literal `${`. A `$` not followed by `{` is kept
//! as it is. Only values are expanded, never keys. Expansion happens before
//! serde sees the tree, so `${PORT}` can stand anywhere a string can.

use super::sink::{index_path, key_path, Sink};

/// Why one string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    /// `${VAR}` with `VAR` unset and no default.
    #[error("environment variable {0} is not set (set it, or write ${{{0}:-default}})")]
    Unset(String),
    /// `${` without its `}`.
    #[error("unterminated \"${{\" in {0:?} (write ${{VAR}}, or $${{ for a literal \"${{\")")]
    Unterminated(String),
    /// `${}` or `${1X}`.
    #[error(
        "invalid variable name {0:?} (use letters, digits and '_', not starting with a digit)"
    )]
    BadName(String),
}

/// Expands every string value in `table`. Errors are reported at the path of
/// the string and poison it; the string is then left with the bad
/// references replaced by nothing.
pub(crate) fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    sink: &mut Sink,
) {
    for (key, value) in table.iter_mut() {
        expand_value(value, &key_path(path, key), env, sink);
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    sink: &mut Sink,
) {
    match value {
        toml::Value::String(text) => {
            let (expanded, errors) = expand_str(text, env);
            for error in &errors {
                sink.push(path, error.to_string());
            }
            if !errors.is_empty() {
                sink.poison(path);
            }
            *text = expanded;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &index_path(path, i), env, sink);
            }
        }
        toml::Value::Table(table) => expand_table(table, path, env, sink),
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
}

/// Expands one string, returning the result and every problem in it.
pub(crate) fn expand_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<EnvError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                errors.push(EnvError::Unterminated(text.to_string()));
                return (out, errors);
            };
            let inner = &tail[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(EnvError::BadName(name.to_string()));
            } else {
                match (env(name), default) {
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => errors.push(EnvError::Unset(name.to_string())),
                }
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    (out, errors)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expand(text: &str) -> (String, Vec<EnvError>) {
        expand_str(text, &env)
    }

    #[test]
    fn set_variables_are_substituted() {
        assert_eq!(expand("${HOST}:7001"), ("10.0.0.1:7001".into(), vec![]));
        assert_eq!(expand("a${EMPTY}b"), ("ab".into(), vec![]));
        assert_eq!(expand("no vars, $5 and $ alone"), ("no vars, $5 and $ alone".into(), vec![]));
    }

    #[test]
    fn defaults_apply_only_when_unset() {
        assert_eq!(expand("${NOPE:-fallback}"), ("fallback".into(), vec![]));
        assert_eq!(expand("${NOPE:-}"), (String::new(), vec![]));
        assert_eq!(expand("${HOST:-other}"), ("10.0.0.1".into(), vec![]));
        assert_eq!(expand("${EMPTY:-other}"), (String::new(), vec![]));
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(expand("$${HOST}"), ("${HOST}".into(), vec![]));
        assert_eq!(expand("$$${HOST}"), ("$${HOST}".into(), vec![]));
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let (_, errors) = expand("${A}/${HOST}/${B}");
        assert_eq!(errors, vec![EnvError::Unset("A".into()), EnvError::Unset("B".into())]);
        assert_eq!(
            EnvError::Unset("TOKEN".into()).to_string(),
            "environment variable TOKEN is not set (set it, or write ${TOKEN:-default})"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(expand("${HOST").1, vec![EnvError::Unterminated("${HOST".into())]);
        assert_eq!(expand("${}").1, vec![EnvError::BadName(String::new())]);
        assert_eq!(expand("${1X}").1, vec![EnvError::BadName("1X".into())]);
    }

    #[test]
    fn errors_carry_the_toml_path_and_poison_it() {
        let mut table: toml::Table =
            "[admin]\ntoken = \"${TOKEN}\"\n[backends.a]\ninstances = [\"${HOST}:1\", \"${X}:2\"]"
                .parse()
                .unwrap();
        let mut sink = Sink::default();
        expand_table(&mut table, "", &env, &mut sink);
        assert!(sink.is_poisoned("backends.a.instances[1]"));
        assert!(!sink.is_poisoned("backends.a.instances[0]"));
        let errors = sink.finish().unwrap_err().errors;
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["admin.token", "backends.a.instances[1]"]);
        assert_eq!(table["backends"]["a"]["instances"][0].as_str(), Some("10.0.0.1:1"));
    }
}
