//! `mosaic check` as an operator runs it: the real binary on real files.
//! A valid file exits 0 with a summary; a file with many mistakes exits 1
//! and prints every one of them on stderr, one per line, path first.

use std::io::Write;
use std::process::{Command, Output};

fn check(contents: &str) -> Output {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents.as_bytes()).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .arg("check")
        .arg("--config")
        .arg(file.path())
        .env_remove("MOSAIC_TEST_UNSET_HOST")
        .output()
        .expect("run mosaic check")
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:18080"

[backends.catalog]
instances = ["127.0.0.1:7001"]

[backends.reviews]
instances = ["127.0.0.1:7003"]
timeout = "200ms"

[[routes]]
path = "/products/{id}"
deadline = "250ms"
sections = [
  { name = "product", backend = "catalog", path = "/products/{id}", required = true },
  { name = "reviews", backend = "reviews", path = "/reviews/{id}" },
]

[[proxy]]
prefix = "/api/reviews/"
backend = "reviews"
"#;

#[test]
fn a_valid_file_exits_0_with_a_summary() {
    let out = check(GOOD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("127.0.0.1:18080"), "{stdout}");
    assert!(stdout.contains("2 backends"), "{stdout}");
    assert!(stdout.contains("/products/{id}") && stdout.contains("2 sections"), "{stdout}");
    assert!(stdout.contains("1 proxy"), "{stdout}");
}

#[test]
fn every_mistake_is_printed_on_its_own_line_with_its_path() {
    let bad = GOOD
        .replace("timeout = \"200ms\"", "timeout = \"fast\"\ntimeot = \"1s\"")
        .replace("backend = \"reviews\", path", "backend = \"reviewz\", path")
        .replace("path = \"/products/{id}\", required", "path = \"/products/{sku}\", required")
        .replace("127.0.0.1:7001", "${MOSAIC_TEST_UNSET_HOST}:7001");
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        "backends.catalog.instances[0]: environment variable MOSAIC_TEST_UNSET_HOST is not set",
        "backends.reviews.timeot: unknown key \"timeot\"",
        "backends.reviews.timeout: invalid duration \"fast\"",
        "routes[0].sections[0].path: invalid service path \"/products/{sku}\"",
        "routes[0].sections[1].backend: no backend named \"reviewz\"",
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(line.starts_with(start), "{line:?} should start with {start:?}\n{stderr}");
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["check", "--config", "/nonexistent/mosaic.toml"])
        .output()
        .expect("run mosaic check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// An admin API reachable from other hosts without a token is refused,
/// and the token of one that has it is never printed.
#[test]
fn an_open_admin_listener_beyond_loopback_is_refused() {
    let open = GOOD
        .replace("[backends.catalog]", "[admin]\nlisten = \"0.0.0.0:19901\"\n\n[backends.catalog]");
    let out = check(&open);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin.token") && stderr.contains("beyond loopback"), "{stderr}");
    let guarded = GOOD.replace(
        "[backends.catalog]",
        "[admin]\nlisten = \"0.0.0.0:19901\"\ntoken = \"hunter2-admin\"\n\n[backends.catalog]",
    );
    let out = check(&guarded);
    let printed =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("token set") && !printed.contains("hunter2"), "{printed}");
}
