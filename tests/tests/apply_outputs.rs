//! Run-wide outputs over real sshd with the real `edgeforge apply`: a site's
//! first server publishes a generated secret; a later task on another host
//! renders it into a file. The value reaches that file and nothing else: not
//! stdout, stderr, the JSON events, the journal, or any process's arguments
//! on this machine (controller and nodes are both here). After Ctrl-C the
//! joiner alone, re-run, still gets it from the state directory.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeforge::plan::Action;
use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{InventoryOpts, NODE_ROOT as R, Run, Scenario};

/// Writes `playbooks/<action's playbook>.yaml` into the scenario's data directory.
fn layer_playbook(sc: &Scenario, action: Action<'_>, body: &str) {
    let path = sc.path(&format!("data/playbooks/{}.yaml", action.playbook()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!(
            "name: {}\nvars:\n  base: {}\n{body}",
            action.name(),
            sc.base.display()
        ),
    )
    .unwrap();
}

/// Samples every process's command line on this machine until stopped;
/// returns the lines that contain `needle` (read from `needle_file` once it exists).
fn watch_processes(
    needle_file: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let seen = Mutex::new(Vec::new());
        let mut needle = None;
        while !stop.load(Ordering::Relaxed) {
            if needle.is_none() {
                needle = std::fs::read_to_string(&needle_file)
                    .ok()
                    .filter(|s| !s.is_empty());
            }
            let out = std::process::Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .unwrap();
            if let Some(n) = &needle {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if line.contains(n.as_str()) {
                        seen.lock().unwrap().push(line.to_string());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        seen.into_inner().unwrap()
    })
}

/// Waits until `path` exists while `child` runs; a child that ended first is a failure, shown.
fn wait_for(path: &Path, child: &mut std::process::Child, sc: &Scenario, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!(
                "apply ended ({status}) before {} appeared:\n{err}\n{}",
                path.display(),
                std::fs::read_to_string(sc.path(log)).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared; events so far:\n{}",
            path.display(),
            std::fs::read_to_string(sc.path(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_secret_output_reaches_only_its_file_and_survives_an_interrupted_run() {
    let fleet = SshdFleet::start(2).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            per_site: 2,
            ..InventoryOpts::default()
        },
    );
    layer_playbook(
        &sc,
        Action::InitFirstServer,
        &format!(
            r#"steps:
  - name: cluster token
    secret: {{ name: token }}
  - name: token file
    copy: {{ content: "{{{{ outputs['node0/k3s'].token }}}}", dest: "{R}/token", mode: "0600" }}
"#
        ),
    );
    layer_playbook(
        &sc,
        Action::JoinAgent { first: "node0" },
        &format!(
            r#"steps:
  - name: slow start
    command: {{ cmd: "touch {R}/started; sleep 3" }}
  - name: join config
    copy: {{ content: "token: {{{{ outputs['node0/k3s'].token }}}}\n", dest: "{R}/join.conf", mode: "0600" }}
"#
        ),
    );
    let token_file = fleet.node(0).root().join("token");
    let log = |name: &str| sc.path(name);

    // First run: interrupted (Ctrl-C) while the joiner's slow step runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_processes(token_file.clone(), stop.clone());
    let mut child = sc
        .layers_cmd("first.jsonl", &["--layer", "k3s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &fleet.node(1).root().join("started"),
        &mut child,
        &sc,
        "first.jsonl",
    );
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let first = Run::new(child.wait_with_output().unwrap(), &log("first.jsonl"));
    assert_eq!(first.code, 130, "{}", first.dump());
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64, "a generated 32-byte token: {token}");
    assert!(
        !fleet.node(1).root().join("join.conf").exists(),
        "the joiner did not finish"
    );

    // Second run: only the joiner (its server task is outside --limit,
    // assumed done); the token comes from the state directory.
    let second = sc
        .layers_cmd("second.jsonl", &["--layer", "k3s", "--limit", "node1"])
        .output()
        .unwrap();
    let second = Run::new(second, &log("second.jsonl"));
    stop.store(true, Ordering::Relaxed);
    let in_ps = watcher.join().unwrap();
    assert_eq!(second.code, 0, "{}", second.dump());
    assert_eq!(
        std::fs::read_to_string(fleet.node(1).root().join("join.conf")).unwrap(),
        format!("token: {token}\n")
    );

    for run in [&first, &second] {
        assert!(!run.stdout.contains(&token), "stdout:\n{}", run.stdout);
        assert!(!run.stderr.contains(&token), "stderr:\n{}", run.stderr);
        assert!(!run.log.contains(&token), "events:\n{}", run.log);
    }
    assert!(
        first.events.iter().any(|e| e["event"] == "output_published"
            && e["name"] == "token"
            && e["secret"] == true),
        "{}",
        first.dump()
    );
    for entry in std::fs::read_dir(sc.path("state/journal")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(&token), "journal: {text}");
    }
    assert!(
        in_ps.is_empty(),
        "the token showed in process arguments: {in_ps:?}"
    );
    let outputs = sc.path("state/outputs/node0_k3s.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&outputs).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sc.path("state")).unwrap().permissions(),
    );
    assert_eq!(dir_mode & 0o777, 0o700, "the state directory is private");
}
