//! The `edgeforge` binary's plan command and global conventions: formats,
//! exit codes, colour, completions and man pages.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const INVENTORY: &str = "\
apiVersion: edgeforge/v1
name: cli-test
federation: { type: karmada, kubeconfig: /dev/null }
hypervisors:
  - { name: kvm1, uri: 'qemu+ssh://root@10.0.0.5/system' }
sites:
  - name: core
    nodes:
      - { name: host1, role: server, address: 10.0.0.5, hypervisorHost: true }
  - name: edge-a
    region: eu
    nodes:
      - { name: a-s1, role: server, address: 127.0.0.1, machine: { type: libvirt, hypervisor: kvm1, sshForwardPort: 2201 } }
      - { name: a-a1, role: agent, address: 10.0.1.3 }
";

fn edgeforge(args: &[&str]) -> Output {
    edgeforge_env(args, &[])
}

fn edgeforge_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeforge"));
    cmd.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("edgeforge runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_inventory(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write inventory");
    path
}

fn inventory_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_inventory(dir.path(), "inv.yaml", INVENTORY);
    (dir, path.display().to_string())
}

#[test]
fn text_plan_lists_sites_nodes_layers_and_dependencies() {
    let (_dir, inv) = inventory_file();
    let out = edgeforge(&["plan", "-i", &inv]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("plan: 2 site(s), 3 node(s), 14 task(s)"),
        "{text}"
    );
    assert!(text.contains("\nsite edge-a (region eu)\n"), "{text}");
    assert!(text.contains("  node a-a1 (agent, existing)\n"), "{text}");
    assert!(
        text.contains("k3s        install k3s, join as agent via a-s1  after a-s1/k3s, a-a1/os\n"),
        "{text}"
    );
    assert!(
        text.contains("machine    define+boot VM on kvm1, wait for SSH  after host1/virt\n"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour when piped");
    assert_eq!(
        text,
        stdout(&edgeforge(&["plan", "-i", &inv])),
        "deterministic"
    );
}

#[test]
fn json_plan_is_valid_and_honours_limit_and_layer() {
    let (_dir, inv) = inventory_file();
    let out = edgeforge(&[
        "plan",
        "-i",
        &inv,
        "--format",
        "json",
        "--limit",
        "site:edge-*",
        "--layer",
        "k3s,federation",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["schema"], "edgeforge.plan/v1");
    assert_eq!(v["inventory"], "cli-test");
    assert_eq!(
        v["selection"]["layers"],
        serde_json::json!(["k3s", "federation"])
    );
    let keys: Vec<&str> = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "a-s1/k3s",
            "a-a1/k3s",
            "site/edge-a/kubeconfig",
            "site/edge-a/register"
        ]
    );
}

#[test]
fn dot_plan_renders_with_graphviz() {
    let (_dir, inv) = inventory_file();
    let out = edgeforge(&["plan", "-i", &inv, "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph edgeforge_plan {"));
    assert_eq!(dot.matches("subgraph cluster_site_").count(), 2);
    assert!(dot.contains("\"host1/virt\" -> \"a-s1/machine\";"), "{dot}");
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("graphviz not installed: structural checks only");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("feed dot");
    let svg = child.wait_with_output().expect("dot runs");
    assert!(svg.status.success(), "dot failed: {}", stderr(&svg));
    let svg = stdout(&svg);
    assert!(
        svg.contains("<svg") && svg.contains(">site core</text>"),
        "{svg}"
    );
}

#[test]
fn invalid_inventories_exit_2_with_the_file_and_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown-field.yaml",
            INVENTORY.replace("region: eu", "regoin: eu"),
            "regoin",
        ),
        (
            "bad-yaml.yaml",
            "apiVersion: [edgeforge/v1\n".to_string(),
            "bad-yaml.yaml",
        ),
        (
            "no-server.yaml",
            INVENTORY.replace("{ name: a-s1, role: server", "{ name: a-s1, role: agent"),
            "has no server node",
        ),
    ];
    for (name, text, needle) in cases {
        let path = write_inventory(dir.path(), name, &text);
        let out = edgeforge(&["plan", "-i", &path.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty());
    }
    // An unreadable file is a runtime failure (exit 1), as for `check`.
    let out = edgeforge(&["plan", "-i", "/nonexistent/inv.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/inv.yaml"));
}

#[test]
fn bad_limits_and_arguments_exit_2() {
    let (_dir, inv) = inventory_file();
    let cases: [(&[&str], &str); 7] = [
        (
            &["plan", "-i", &inv, "--limit", "nobody"],
            "matches no node, site or task",
        ),
        (
            &["plan", "-i", &inv, "--limit", "a-s1,,x"],
            "term 2 is empty",
        ),
        (
            &["plan", "-i", &inv, "--format", "yaml"],
            "invalid value 'yaml'",
        ),
        (
            &["plan", "-i", &inv, "--layer", "network"],
            "invalid value 'network'",
        ),
        (&["plan", "-i", &inv, "--frobnicate"], "unexpected argument"),
        (&["plan", "-i", &inv, "-q", "-v"], "cannot be used with"),
        (&["deploy"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let out = edgeforge(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    let (_dir, inv) = inventory_file();
    let always = edgeforge(&["plan", "-i", &inv, "--color", "always"]);
    assert!(
        stdout(&always).contains("\x1b[1msite\x1b[0m"),
        "{}",
        stdout(&always)
    );
    let never = edgeforge(&["plan", "-i", &inv, "--color", "never"]);
    assert!(!stdout(&never).contains('\x1b'));
    let auto = edgeforge_env(&["plan", "-i", &inv], &[("NO_COLOR", "1")]);
    assert!(!stdout(&auto).contains('\x1b'));
    // Uncoloured output is the same text as coloured output without escapes.
    let stripped = stdout(&always)
        .replace("\x1b[1m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[2m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, stdout(&never));
}

#[test]
fn verbose_reports_timing_and_quiet_stays_silent() {
    let (_dir, inv) = inventory_file();
    let loud = edgeforge(&["plan", "-i", &inv, "-v"]);
    assert!(
        stderr(&loud).contains("planned 14 task(s) for 3 node(s)"),
        "{}",
        stderr(&loud)
    );
    let quiet = edgeforge(&["-q", "plan", "-i", &inv]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stderr.is_empty(), "{}", stderr(&quiet));
}

#[test]
fn help_and_version_follow_conventions() {
    let out = edgeforge(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out).trim(),
        format!("edgeforge {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
        &["bmc", "--help"],
        &["bmc", "status", "--help"],
        &["bmc", "power", "--help"],
        &["bmc", "boot", "--help"],
        &["bmc", "media", "--help"],
    ] {
        let out = edgeforge(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = stdout(&out);
        assert!(help.contains("Examples:\n  edgeforge "), "{args:?}: {help}");
        assert!(
            help.contains("--color <COLOR>"),
            "{args:?}: global options shown"
        );
    }
    let top = stdout(&edgeforge(&["--help"]));
    for cmd in ["check", "plan", "apply", "bmc", "completions", "man"] {
        assert!(top.contains(&format!("\n  {cmd} ")), "{cmd} listed: {top}");
    }
}

#[test]
fn completions_exist_for_every_shell_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = edgeforge(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for word in ["plan", "check", "completions", "limit", "format"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = edgeforge(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_renders_and_man_out_writes_one_page_per_command() {
    let out = edgeforge(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let roff = stdout(&out);
    assert!(roff.contains("\n.TH edgeforge 1 "), "{roff}");
    assert!(roff.contains("\n.SH SUBCOMMANDS\n"), "{roff}");
    assert!(roff.contains("\nedgeforge\\-plan(1)\n"), "{roff}");
    assert!(roff.contains("\n.SH EXAMPLES\n.nf\nExamples:\n"), "{roff}");

    let dir = tempfile::tempdir().expect("tempdir");
    let pages = dir.path().join("man1");
    let out = edgeforge(&["man", "--out", &pages.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in [
        "edgeforge.1",
        "edgeforge-plan.1",
        "edgeforge-check.1",
        "edgeforge-completions.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page}");
    }
    let plan_page = std::fs::read_to_string(pages.join("edgeforge-plan.1")).expect("plan page");
    assert!(plan_page.contains("\\-\\-limit"), "{plan_page}");

    // groff is part of man-db's dependencies; render as a reader would.
    if let Ok(rendered) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(pages.join("edgeforge-plan.1"))
        .output()
    {
        assert!(rendered.status.success(), "{}", stderr(&rendered));
        let text = stdout(&rendered);
        assert!(text.contains("Limit: comma-separated globs"), "{text}");
        assert!(
            text.contains("\n         edgeforge plan -i inventory/lab.yaml\n"),
            "examples keep their lines: {text}"
        );
        assert!(
            !stderr(&rendered).contains("warning"),
            "{}",
            stderr(&rendered)
        );
    }
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").expect("write");
    let out = edgeforge(&["man", "--out", &blocked.join("sub").display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("error: writing the man page to"));
}

#[test]
fn a_failed_write_exits_1_and_a_closed_pipe_exits_0() {
    let (_dir, inv) = inventory_file();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeforge"))
        .args(["plan", "-i", &inv, "--format", "json"])
        .stdout(full)
        .output()
        .expect("edgeforge runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: writing the plan:"),
        "{}",
        stderr(&out)
    );

    // Far more output than a pipe buffers, so the writer must meet the closed pipe.
    let mut big = String::from("apiVersion: edgeforge/v1\nsites:\n");
    for s in 0..300 {
        big.push_str(&format!(
            "  - {{ name: s{s}, nodes: [ {{ name: n{s}, role: server, address: 10.1.{}.{} }} ] }}\n",
            s / 250,
            s % 250
        ));
    }
    let big = write_inventory(_dir.path(), "big.yaml", &big);
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeforge"))
        .args(["plan", "--format", "json", "-i"])
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgeforge runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}
