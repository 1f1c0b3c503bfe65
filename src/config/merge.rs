//! `[defaults]` merged key by key into each backend, before serde sees it.
//!
//! Tables (`breaker`, `cache`, `breaker.backoff`) merge recursively and a
//! value the backend writes wins. Two exceptions keep the result coherent:
//! - `default` (the fallback response) is one value: a backend's replaces
//!   the defaults' whole, it is never mixed with it;
//! - when a backend switches `breaker.policy` or `breaker.backoff.kind`,
//!   the defaults' keys that only the other policy or kind understands are
//!   not inherited (`threshold` must not follow into `success_rate`, `start`
//!   and `max` not into `constant`).
//!
//! The merge also records which keys came from `[defaults]`, so an error in
//! an inherited value is reported where it was written (`defaults.timeout`).

/// Keys merged as one opaque value, never key by key.
const OPAQUE: &[&str] = &["default"];

/// A merged backend table and the relative paths (`.timeout`,
/// `.breaker.backoff`) whose values came from `[defaults]`.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// The backend's table with the defaults filled in.
    pub table: toml::Table,
    /// Paths relative to the backend, each starting with `.`.
    pub inherited: Vec<String>,
}

/// Merges `defaults` under `backend`.
pub(crate) fn merge_backend(defaults: &toml::Table, backend: toml::Table) -> Merged {
    let mut merged = Merged { table: backend, inherited: Vec::new() };
    merge_into(&mut merged.table, defaults, "", None, &mut merged.inherited);
    merged
}

/// Which keys a variant of a tagged table understands, by tag key and value.
fn variant_keys(table: &str, tag: &str) -> Option<&'static [&'static str]> {
    match (table, tag) {
        (".breaker", "consecutive_failures") => Some(&["threshold"]),
        (".breaker", "success_rate") => Some(&["required_success_rate", "minimum_calls", "window"]),
        (".breaker.backoff", "constant") => Some(&["delay"]),
        (".breaker.backoff", "exponential" | "equal_jittered" | "full_jittered") => {
            Some(&["start", "max"])
        }
        _ => None,
    }
}

/// The tag key of a tagged table, and its value when absent.
fn tag_of(table: &str) -> Option<(&'static str, Option<&'static str>)> {
    match table {
        ".breaker" => Some(("policy", Some("consecutive_failures"))),
        ".breaker.backoff" => Some(("kind", None)),
        _ => None,
    }
}

/// All variant-specific keys of a tagged table.
fn all_variant_keys(table: &str) -> &'static [&'static str] {
    match table {
        ".breaker" => &["threshold", "required_success_rate", "minimum_calls", "window"],
        ".breaker.backoff" => &["delay", "start", "max"],
        _ => &[],
    }
}

fn merge_into(
    target: &mut toml::Table,
    base: &toml::Table,
    path: &str,
    skip: Option<&[&str]>,
    inherited: &mut Vec<String>,
) {
    for (key, base_value) in base {
        if skip.is_some_and(|skip| skip.contains(&key.as_str())) {
            continue;
        }
        let child = format!("{path}.{key}");
        match target.get_mut(key) {
            None => {
                target.insert(key.clone(), base_value.clone());
                inherited.push(child);
            }
            Some(toml::Value::Table(over)) if !OPAQUE.contains(&key.as_str()) => {
                if let toml::Value::Table(base_table) = base_value {
                    let skip = switched_variant_skips(&child, base_table, over);
                    merge_into(over, base_table, &child, skip.as_deref(), inherited);
                }
            }
            Some(_) => {}
        }
    }
}

/// When `over` names another variant than `base`, the base keys to leave out:
/// those of every variant except the one `over` chose.
fn switched_variant_skips(
    table: &str,
    base: &toml::Table,
    over: &toml::Table,
) -> Option<Vec<&'static str>> {
    let (tag, implicit) = tag_of(table)?;
    let over_tag = over.get(tag)?.as_str()?;
    let base_tag = base.get(tag).and_then(|v| v.as_str()).or(implicit)?;
    if over_tag == base_tag {
        return None;
    }
    let keep = variant_keys(table, over_tag).unwrap_or(&[]);
    Some(all_variant_keys(table).iter().copied().filter(|k| !keep.contains(k)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(defaults: &str, backend: &str) -> Merged {
        merge_backend(&defaults.parse().unwrap(), backend.parse().unwrap())
    }

    const DEFAULTS: &str = r#"
        timeout = "300ms"
        retries = 1
        default = { a = 1, b = 2 }
        [breaker]
        policy = "consecutive_failures"
        threshold = 5
        half_open_calls = 1
        backoff = { kind = "exponential", start = "1s", max = "30s" }
    "#;

    #[test]
    fn backend_values_win_and_tables_merge_recursively() {
        let m = merge(
            DEFAULTS,
            "timeout = \"1s\"\nbreaker = { threshold = 3, backoff = { max = \"1m\" } }",
        );
        let t = &m.table;
        assert_eq!(t["timeout"].as_str(), Some("1s"));
        assert_eq!(t["retries"].as_integer(), Some(1));
        assert_eq!(t["breaker"]["threshold"].as_integer(), Some(3));
        assert_eq!(t["breaker"]["half_open_calls"].as_integer(), Some(1));
        assert_eq!(t["breaker"]["backoff"]["start"].as_str(), Some("1s"));
        assert_eq!(t["breaker"]["backoff"]["max"].as_str(), Some("1m"));
        assert!(m.inherited.contains(&".retries".to_string()));
        assert!(m.inherited.contains(&".breaker.backoff.start".to_string()));
        assert!(!m.inherited.contains(&".timeout".to_string()));
    }

    #[test]
    fn default_response_is_replaced_whole() {
        let m = merge(DEFAULTS, "default = { c = 3 }");
        assert_eq!(m.table["default"].as_table().unwrap().len(), 1);
    }

    #[test]
    fn switching_backoff_kind_drops_the_other_kinds_keys() {
        let m = merge(DEFAULTS, "breaker = { backoff = { kind = \"constant\", delay = \"2s\" } }");
        let backoff = m.table["breaker"]["backoff"].as_table().unwrap();
        let keys: Vec<_> = backoff.keys().map(String::as_str).collect();
        assert_eq!(keys, ["delay", "kind"]);
        let m = merge(DEFAULTS, "breaker = { backoff = { kind = \"full_jittered\" } }");
        assert_eq!(m.table["breaker"]["backoff"]["start"].as_str(), Some("1s"));
    }

    #[test]
    fn switching_policy_drops_the_other_policys_keys() {
        let m = merge(DEFAULTS, "breaker = { policy = \"success_rate\", minimum_calls = 5 }");
        let breaker = m.table["breaker"].as_table().unwrap();
        assert!(!breaker.contains_key("threshold"));
        assert!(breaker.contains_key("backoff"));
        // No policy in [defaults] means consecutive_failures.
        let m = merge("[breaker]\nthreshold = 5", "breaker = { policy = \"success_rate\" }");
        assert!(!m.table["breaker"].as_table().unwrap().contains_key("threshold"));
    }
}
