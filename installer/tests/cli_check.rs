//! `edgeforge check` and `edgeforge inventory schema` as a user runs them:
//! the built binary, its exit codes (0 valid, 2 invalid, 1 unreadable) and
//! its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgeforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeforge"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run edgeforge")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../inventory")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn examples_exit_0_with_a_summary() {
    for (name, summary) in [
        ("lab.yaml", "1 site, 3 nodes (1 server, 2 agents)"),
        ("appliances.yaml", "6 sites, 12 nodes (8 servers, 4 agents)"),
        ("baremetal.yaml", "1 site, 5 nodes (3 servers, 2 agents)"),
        ("federation.yaml", "3 sites, 4 nodes (3 servers, 1 agent)"),
        ("kubefed.yaml", "2 sites, 2 nodes (2 servers, 0 agents)"),
        (
            "baremetal-emulated.yaml",
            "1 site, 1 node (1 server, 0 agents)",
        ),
    ] {
        let path = example(name);
        let out = edgeforge(&["check", "-i", path.to_str().expect("utf-8 path")]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(": ok: ") && stdout.contains(summary),
            "{name}: {stdout}"
        );
        assert!(
            !text(&out.stderr).contains("error"),
            "{name}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn invalid_inventory_exits_2_with_every_error_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: edgeforge/v1\nsites:\n  - name: s\n    nodes:\n      - {name: n, role: agent, address: 10.0.0.1, ssh: {sudo: {password: pa55word-XYZ}}}\n      - {name: n, role: agent, address: 10.0.0.2, lables: {}}\n",
    )
    .expect("write");
    let shown = path.display().to_string();
    let out = edgeforge(&["check", "--color", "never", "-i", &shown]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for expected in [
        format!("{shown}:3:11: error: Site `s` has no server node"),
        format!("{shown}:5:74: error: `password` is a secret written inline"),
        format!("{shown}:6:16: error: Duplicate node name `n` (first at line 5)."),
        format!("{shown}:6:51: error: Unknown field `lables` in `nodes` item 2."),
        "  help: Did you mean `labels`?".to_owned(),
        format!("{shown}: invalid: 4 errors, 0 warnings"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("pa55word-XYZ") && !text(&out.stdout).contains("pa55word-XYZ"));
    assert!(!stderr.contains('\x1b'), "colour with --color never");

    let coloured = edgeforge(&["check", "--color", "always", "-i", &shown]);
    assert_eq!(coloured.status.code(), Some(2));
    assert!(text(&coloured.stderr).contains("\x1b[1;31merror\x1b[0m"));
}

#[test]
fn malformed_yaml_exits_2_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "apiVersion: edgeforge/v1\nsites:\n  - name: s\n   nodes: [\n",
    )
    .expect("write");
    let out = edgeforge(&["check", "-i", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken.yaml:4:") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
}

#[test]
fn json_format_carries_the_same_diagnostics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: edgeforge/v1\nsites:\n  - name: s\n    nodes: []\n",
    )
    .expect("write");
    let out = edgeforge(&[
        "check",
        "--format",
        "json",
        "-i",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["valid"], false);
    assert_eq!(report["diagnostics"][0]["severity"], "error");
    assert_eq!(report["diagnostics"][0]["line"], 3);
    assert_eq!(report["diagnostics"][0]["col"], 11);
    assert!(
        report["diagnostics"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no server"))
    );

    let lab = example("lab.yaml");
    let out = edgeforge(&[
        "check",
        "--format",
        "json",
        "-i",
        lab.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["valid"], true);
    assert_eq!(report["summary"], "1 site, 3 nodes (1 server, 2 agents)");
    assert_eq!(report["diagnostics"], serde_json::json!([]));
}

#[test]
fn unreadable_file_exits_1() {
    let out = edgeforge(&["check", "-i", "/nonexistent/inventory.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Cannot read the inventory file /nonexistent/inventory.yaml: No such file"),
        "{stderr}"
    );
}

#[test]
fn warnings_do_not_fail_and_quiet_hides_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two.yaml");
    std::fs::write(
        &path,
        "apiVersion: edgeforge/v1\nsites:\n  - name: s\n    nodes:\n      - {name: a, role: server, address: 10.0.0.1}\n      - {name: b, role: server, address: 10.0.0.2}\n",
    )
    .expect("write");
    let p = path.to_str().expect("utf-8");
    let out = edgeforge(&["check", "-i", p]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains(":3:11: warning: Site `s` has 2 servers"));
    assert!(text(&out.stdout).contains("1 warning"));
    let quiet = edgeforge(&["-q", "check", "-i", p]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stderr.is_empty() && quiet.stdout.is_empty());
}

#[test]
fn schema_is_pretty_json_with_title() {
    let out = edgeforge(&["inventory", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n  \""), "not pretty-printed");
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(
        schema["title"]
            .as_str()
            .is_some_and(|t| t.contains("edgeforge/v1"))
    );
    assert!(schema["description"].is_string());
    assert_eq!(
        schema["required"],
        serde_json::json!(["apiVersion", "sites"])
    );
    let machine = schema["$defs"]["Machine"].to_string();
    assert!(machine.contains("sshForwardPort") && !machine.contains("ssh_forward_port"));
}

#[test]
fn help_has_examples() {
    let out = edgeforge(&["check", "--help"]);
    assert!(text(&out.stdout).contains("edgeforge check -i inventory/lab.yaml"));
    let out = edgeforge(&["inventory", "schema", "--help"]);
    assert!(text(&out.stdout).contains("edgeforge inventory schema >"));
}
