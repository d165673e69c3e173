//! Failures of a real `edgeforge apply` over SSH: unreachable hosts, a
//! changed host key, an sshd killed mid-run, an interrupted run resumed,
//! the run lock, `--max-fail`, `--check` and `--limit`, and an artifact the
//! cache lacks (the task fails before its first step).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{InventoryOpts, NODE_ROOT as R, Run, Scenario};
use edgeforge_tests::sshd::{KeyKind, fingerprint_of, keygen, pub_path};

/// Waits until `path` exists (a step's marker), failing after 30 s.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A playbook: a quick step, a slow one that leaves `started` first, a last one.
fn slow_playbook(sc: &Scenario, secs: u32) -> std::path::PathBuf {
    sc.playbook(
        "slow",
        &format!(
            r#"  - name: first
    command: {{ cmd: "touch {R}/first", creates: "{R}/first" }}
  - name: slow
    command: {{ cmd: "touch {R}/started; sleep {secs}; touch {R}/slow", creates: "{R}/slow" }}
  - name: last
    command: {{ cmd: "echo last >> {R}/last", creates: "{R}/last" }}
"#
        ),
    )
}

fn finish(child: std::process::Child, sc: &Scenario, log: &str) -> Run {
    Run::new(child.wait_with_output().unwrap(), &sc.path(log))
}

#[test]
fn unreachable_hosts_fail_fast_max_fail_and_limit() {
    let mut fleet = SshdFleet::start(4).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            per_site: 2,
            ..Default::default()
        },
    );
    let pb = slow_playbook(&sc, 0);
    // Closed ports: nothing listens there any more.
    fleet.kill(0);
    fleet.kill(1);

    let started = Instant::now();
    let run = sc.apply(&pb, "down.jsonl", &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.dump());
    for h in ["node0", "node1"] {
        let e = run
            .host(h)
            .unwrap_or_else(|| panic!("no task_finished for {h}\n{}", run.dump()));
        let err = e["error"].as_str().unwrap_or_default();
        assert!(err.contains("127.0.0."), "{h}: {err}");
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(h) && l.contains("FAILED")),
            "{}",
            run.stdout
        );
    }
    for h in ["node2", "node3"] {
        assert_eq!(run.host(h).unwrap()["failed"], 0, "{}", run.dump());
        assert!(
            fs::read_to_string(fleet.node(h[4..].parse().unwrap()).root().join("last")).is_ok()
        );
    }
    assert_eq!(run.finished()["ok_tasks"], 2);
    assert_eq!(run.finished()["failed_tasks"], 2);
    // Refused connections fail at once, not after the 10 s connect timeout.
    eprintln!("run with two closed ports took {took:?}");

    // --max-fail 0, one host at a time: the first failure stops the run.
    let run = sc.apply(
        &pb,
        "maxfail.jsonl",
        &["--parallel", "1", "--max-fail", "0", "--force"],
    );
    assert_eq!(run.code, 1, "{}", run.dump());
    assert_eq!(run.finished()["failed_tasks"], 1, "{}", run.dump());
    assert_eq!(run.finished()["not_started"], 3, "{}", run.dump());
    assert!(run.stdout.contains("not started"), "{}", run.stdout);

    // --limit: only the live site, which succeeds.
    let run = sc.apply(&pb, "limit.jsonl", &["--limit", "site:site-1", "--force"]);
    assert_eq!(run.code, 0, "{}", run.dump());
    assert_eq!(
        run.events
            .iter()
            .filter(|e| e["event"] == "task_started")
            .count(),
        2
    );
    assert!(run.host("node0").is_none() && run.host("node2").is_some());
}

#[test]
fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let mut fleet = SshdFleet::start(2).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = slow_playbook(&sc, 0);
    let known = fleet.node(1).host_fingerprint().unwrap();
    // The host was "reinstalled": a new host key, known_hosts unchanged.
    let key = fleet.node(1).host_key_path();
    keygen(&key, KeyKind::Ed25519, None).unwrap();
    let presented = fingerprint_of(&pub_path(&key)).unwrap();
    fleet.restart(1).unwrap();

    let run = sc.apply(&pb, "hostkey.jsonl", &[]);
    assert_eq!(run.code, 1, "{}", run.dump());
    let err = run.host("node1").unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains(&known) && err.contains(&presented), "{err}");
    assert!(
        !fleet.node(1).root().join("first").exists(),
        "nothing ran on node1"
    );
    assert_eq!(run.host("node0").unwrap()["failed"], 0);
}

#[test]
fn an_sshd_killed_mid_run_fails_that_host_only() {
    let mut fleet = SshdFleet::start(3).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = slow_playbook(&sc, 3);
    let child = sc.spawn(&pb, "killed.jsonl", &[]);
    wait_for_file(&fleet.node(1).root().join("started"));
    fleet.kill(1);
    let run = finish(child, &sc, "killed.jsonl");
    assert_eq!(run.code, 1, "{}", run.dump());
    assert_eq!(run.status("node1", "slow"), "failed", "{}", run.dump());
    assert!(!fleet.node(1).root().join("last").exists());
    for i in [0, 2] {
        assert_eq!(
            run.host(&format!("node{i}")).unwrap()["failed"],
            0,
            "{}",
            run.dump()
        );
        assert!(fleet.node(i).root().join("last").exists());
    }
}

#[test]
fn an_interrupted_run_exits_130_and_the_next_one_resumes() {
    let fleet = SshdFleet::start(2).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = slow_playbook(&sc, 2);
    let child = sc.spawn(&pb, "interrupted.jsonl", &[]);
    for n in fleet.nodes() {
        wait_for_file(&n.root().join("started"));
    }

    // Meanwhile a second apply on the same state directory is refused, naming the holder.
    let second = sc.apply(&pb, "second.jsonl", &[]);
    assert_eq!(second.code, 1, "{}", second.dump());
    assert!(
        second.stderr.contains("another apply is running"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&child.id().to_string()),
        "{}",
        second.stderr
    );

    // SAFETY: kill(2) on the pid of the child this test spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let run = finish(child, &sc, "interrupted.jsonl");
    assert_eq!(run.code, 130, "{}", run.dump());
    for n in fleet.nodes() {
        // The running step was let finish; the next one was not started.
        assert!(n.root().join("slow").exists());
        assert!(!n.root().join("last").exists());
    }
    // The journal holds whole JSON lines: first and slow applied on each host.
    for h in ["node0", "node1"] {
        let journal = fs::read_to_string(sc.path(&format!("state/journal/{h}.jsonl"))).unwrap();
        let steps: Vec<String> = journal
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON lines"))
            .filter(|r| r["t"] == "step")
            .map(|r| r["step"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(steps, ["first", "slow"], "{journal}");
    }

    let resumed = sc.apply(&pb, "resumed.jsonl", &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.dump());
    assert!(
        !resumed.stderr.contains("without releasing the lock"),
        "{}",
        resumed.stderr
    );
    for h in ["node0", "node1"] {
        assert_eq!(resumed.status(h, "first"), "skipped");
        assert_eq!(resumed.status(h, "slow"), "skipped");
        assert_eq!(resumed.status(h, "last"), "changed");
    }
    for n in fleet.nodes() {
        assert_eq!(fs::read_to_string(n.root().join("last")).unwrap(), "last\n");
    }
}

#[test]
fn check_mode_changes_nothing_on_disk() {
    let fleet = SshdFleet::start(1).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    sc.template("c.j2", "node {{ node.name }}\n");
    let pb = sc.playbook(
        "check",
        &format!(
            r#"  - name: dir
    file: {{ path: "{R}/d" }}
  - name: template
    template: {{ src: c.j2, dest: "{R}/d/c.conf" }}
  - name: line
    lineinfile: {{ path: "{R}/existing", line: "added" }}
  - name: command
    command: {{ cmd: "touch {R}/made", creates: "{R}/made" }}
"#
        ),
    );
    let root = fleet.node(0).root();
    fs::write(root.join("existing"), "kept\n").unwrap();
    let run = sc.apply(&pb, "check.jsonl", &["--check", "--diff"]);
    assert_eq!(run.code, 0, "{}", run.dump());
    assert_eq!(run.count("changed"), 4, "{}", run.dump());
    let mut left: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["existing"]);
    assert_eq!(fs::read_to_string(root.join("existing")).unwrap(), "kept\n");
    // A check run records nothing: the real run afterwards changes all four.
    let real = sc.apply(&pb, "real.jsonl", &[]);
    assert_eq!(real.code, 0, "{}", real.dump());
    assert_eq!(real.count("changed"), 4, "{}", real.dump());
}

#[test]
fn a_killed_apply_leaves_a_lock_the_next_run_notes_and_resumes_from() {
    let fleet = SshdFleet::start(1).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = slow_playbook(&sc, 1);
    let mut child = sc.spawn(&pb, "killed.jsonl", &[]);
    wait_for_file(&fleet.node(0).root().join("started"));
    child.kill().unwrap();
    child.wait().unwrap();

    let run = sc.apply(&pb, "after.jsonl", &[]);
    assert_eq!(run.code, 0, "{}", run.dump());
    assert!(
        run.stderr.contains("without releasing the lock"),
        "{}",
        run.stderr
    );
    assert_eq!(run.status("node0", "first"), "skipped", "{}", run.dump());
    // The killed run never journalled `slow`: it runs again (its `creates` decides).
    assert!(
        ["ok", "changed"].contains(&run.status("node0", "slow").as_str()),
        "{}",
        run.dump()
    );
    assert_eq!(run.status("node0", "last"), "changed");
}

#[test]
fn a_wrong_client_key_fails_that_host_and_a_bad_playbook_is_invalid_input() {
    let fleet = SshdFleet::start(2).unwrap();
    let stranger = fleet.dir().join("stranger_ed25519");
    keygen(&stranger, KeyKind::Ed25519, None).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            node_ssh_extra: vec![(1, format!("identityFile: {}", stranger.display()))],
            ..Default::default()
        },
    );
    let pb = slow_playbook(&sc, 0);
    let run = sc.apply(&pb, "key.jsonl", &[]);
    assert_eq!(run.code, 1, "{}", run.dump());
    let err = run.host("node1").unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.to_lowercase().contains("auth"), "{err}");
    assert_eq!(run.host("node0").unwrap()["failed"], 0);

    // Invalid input: exit 2 with file:line, before any host is touched.
    let bad = sc.playbook(
        "bad",
        &format!("  - name: fine\n    command: {{ cmd: \"touch {R}/touched\" }}\n  - name: typo\n    comand: {{ cmd: true }}\n"),
    );
    let run = sc.apply(&bad, "bad.jsonl", &[]);
    assert_eq!(run.code, 2, "{}", run.dump());
    assert!(run.stderr.contains("bad.yaml:"), "{}", run.stderr);
    assert!(run.stderr.contains("comand"), "{}", run.stderr);
    assert!(!fleet.node(0).root().join("touched").exists());
}

/// An `artifact` step whose file the cache lacks fails its task before the
/// task's first step runs, even behind a `register`: the host is left as it
/// was, not with half of the files that belong with the artifact.
#[test]
fn an_artifact_missing_from_the_cache_fails_the_task_before_it_changes_anything() {
    let fleet = SshdFleet::start(1).unwrap();
    let sc = Scenario::new(&fleet, &InventoryOpts::default());
    let pb = sc.playbook(
        "needs-k3s",
        &format!(
            r#"  - name: config first
    copy: {{ content: "token-file: x\n", dest: "{R}/config.yaml" }}
  - name: what is installed
    command: {{ cmd: "echo none" }}
    register: installed
  - name: k3s binary
    artifact: {{ name: k3s, version: v1.34.2+k3s1, dest: "{R}/k3s", mode: "0755" }}
  - name: after
    command: {{ cmd: "touch {R}/after", creates: "{R}/after" }}
"#
        ),
    );
    let empty = sc.path("empty-cache");
    fs::create_dir_all(&empty).unwrap();
    let out = sc
        .apply_cmd(&pb, "missing.jsonl", &[])
        .env("EDGEFORGE_CACHE", &empty)
        .output()
        .unwrap();
    let run = Run::new(out, &sc.path("missing.jsonl"));
    assert_ne!(run.code, 0, "{}", run.dump());
    let host = "node0";
    assert_eq!(run.status(host, "k3s binary"), "failed", "{}", run.dump());
    for step in ["config first", "what is installed", "after"] {
        assert_eq!(run.status(host, step), "missing", "{step}: {}", run.dump());
    }
    let failed = run
        .steps(Some(host))
        .find(|e| e["step"] == "k3s binary")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(failed.contains("lacks k3s v1.34.2+k3s1"), "{failed}");
    let root = fleet.node(0).root();
    assert!(!root.join("config.yaml").exists() && !root.join("after").exists());
}
