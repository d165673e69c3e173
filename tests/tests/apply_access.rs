//! Reaching hosts the hard way with the real `edgeforge apply`: through a
//! jump host, and as a non-root user whose sudo asks for a password — with
//! every output of the run searched for the sudo password and the k3s token.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use edgeforge_tests::apply::{InventoryOpts, NODE_ROOT as R, Run, Scenario};
use edgeforge_tests::{NodeSpec, SshdFleet, SudoUser};

#[test]
fn a_node_behind_a_jump_host_is_applied_through_it() {
    let bastion = NodeSpec {
        jump_only: true,
        ..Default::default()
    };
    let fleet = SshdFleet::start_with(&[bastion, NodeSpec::default()]).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            top_extra: format!(
                "jumpHosts:\n  - name: bastion\n    address: {}\n    ssh: {{ port: {} }}\n",
                fleet.node(0).addr(),
                fleet.node(0).port()
            ),
            node_ssh_extra: vec![(1, "jump: [bastion]".into())],
            skip: vec![0],
            ..Default::default()
        },
    );
    let pb = sc.playbook(
        "jump",
        &format!(
            "  - name: through the bastion\n    command: {{ cmd: \"touch {R}/started; sleep 1; echo hi > {R}/via-jump\", creates: \"{R}/via-jump\" }}\n"
        ),
    );
    let mut child = sc.spawn(&pb, "jump.jsonl", &[]);
    // While the step runs, the bastion's sshd holds the forwarded connection to node1.
    let started = fleet.node(1).root().join("started");
    let mut forwarded = false;
    while child.try_wait().unwrap().is_none() {
        if started.exists() && fleet.node(0).has_connection_to(fleet.node(1).port()) {
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = Run::new(child.wait_with_output().unwrap(), &sc.path("jump.jsonl"));
    assert_eq!(run.code, 0, "{}", run.dump());
    assert_eq!(run.status("node1", "through the bastion"), "changed");
    assert_eq!(
        fs::read_to_string(fleet.node(1).root().join("via-jump")).unwrap(),
        "hi\n"
    );
    assert!(
        forwarded,
        "the bastion never held a connection to node1's sshd"
    );
}

#[test]
fn sudo_password_and_k3s_token_appear_in_no_output() {
    let fleet = SshdFleet::start(2).unwrap();
    let user = SudoUser::create().unwrap();
    let token = format!("K10tok-{}", user.password().trim_start_matches("pw-"));
    let password = user.password().to_string();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            user: user.name().into(),
            ssh_extra: "    sudo: { enabled: true, password: { env: EF_E2E_SUDO_PASSWORD } }\n"
                .into(),
            defaults_extra: "  k3s:\n    token: { env: EF_E2E_K3S_TOKEN }\n".into(),
            ..Default::default()
        },
    );
    sc.template(
        "k3s.j2",
        "server: https://{{ cluster.nodes[0].address }}:6443\ntoken: {{ secrets.k3s_token }}\n",
    );
    let pb = sc.playbook(
        "secret",
        &format!(
            r#"  - name: config dir
    file: {{ path: "{R}/k3s", mode: "0700" }}
  - name: k3s config
    template: {{ src: k3s.j2, dest: "{R}/k3s/config.yaml", mode: "0600" }}
  - name: as root
    command: {{ cmd: "touch {R}/started; sleep 1; id -u > {R}/root-uid", creates: "{R}/root-uid" }}
  - name: as the user
    command: {{ cmd: "id -u > {R}/user-uid", creates: "{R}/user-uid" }}
    become: false
"#
        ),
    );
    // A failing step whose output carries the token: the error must not.
    let leaky = sc.playbook(
        "leaky",
        &format!("  - name: show the config\n    command: {{ cmd: \"cat {R}/k3s/config.yaml; cat {R}/k3s/config.yaml >&2; exit 3\" }}\n"),
    );

    // Sample every process's command line while the runs go on.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let needles = [password.clone(), token.clone()];
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut samples = 0u32;
            while !stop.load(Ordering::SeqCst) {
                for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
                    if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
                        let c = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                        if needles.iter().any(|n| c.contains(n.as_str())) {
                            seen.push(c);
                        }
                    }
                }
                samples += 1;
            }
            (seen, samples)
        })
    };
    let mut runs = Vec::new();
    for (playbook, log, extra) in [
        (&pb, "first.jsonl", vec!["--diff"]),
        (&pb, "forced.jsonl", vec!["--diff", "--force", "-v"]),
        (&leaky, "leaky.jsonl", vec![]),
    ] {
        let out = sc
            .apply_cmd(playbook, log, &extra)
            .env("EF_E2E_SUDO_PASSWORD", &password)
            .env("EF_E2E_K3S_TOKEN", &token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        runs.push(Run::new(out, &sc.path(log)));
    }
    stop.store(true, Ordering::SeqCst);
    let (seen, samples) = sampler.join().unwrap();

    let [first, forced, leaky_run] = &runs[..] else {
        unreachable!()
    };
    assert_eq!(first.code, 0, "{}", first.dump());
    assert_eq!(first.count("changed"), 8, "{}", first.dump());
    assert_eq!(forced.code, 0, "{}", forced.dump());
    assert_eq!(forced.count("changed"), 0, "{}", forced.dump());
    assert_eq!(leaky_run.code, 1, "{}", leaky_run.dump());
    // Header, one row per host (the failing command's output on its row), total.
    assert_eq!(leaky_run.stdout.lines().count(), 4, "{}", leaky_run.stdout);
    for (i, n) in fleet.nodes().iter().enumerate() {
        let r = n.root();
        // The privileged step ran as root through sudo, the other as the user.
        assert_eq!(fs::read_to_string(r.join("root-uid")).unwrap(), "0\n");
        let uid = fs::read_to_string(r.join("user-uid")).unwrap();
        assert_ne!(uid, "0\n");
        let config = r.join("k3s/config.yaml");
        assert_eq!(fs::metadata(&config).unwrap().uid(), 0);
        // The token is where it belongs: in the rendered file on the host.
        assert!(
            fs::read_to_string(&config).unwrap().contains(&token),
            "node{i}"
        );
    }

    let mut outputs: Vec<(String, String)> = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        outputs.push((format!("run {k} stdout"), run.stdout.clone()));
        outputs.push((format!("run {k} stderr"), run.stderr.clone()));
        outputs.push((format!("run {k} event log"), run.log.clone()));
    }
    for e in walk(&sc.path("state")) {
        outputs.push((
            e.display().to_string(),
            String::from_utf8_lossy(&fs::read(&e).unwrap()).into_owned(),
        ));
    }
    assert!(
        outputs.iter().any(|(_, t)| t.contains("********")),
        "the diff and error show a redaction mark"
    );
    for (what, text) in &outputs {
        assert!(
            !text.contains(&password),
            "the sudo password is in {what}:\n{text}"
        );
        assert!(
            !text.contains(&token),
            "the k3s token is in {what}:\n{text}"
        );
    }
    assert!(samples > 10, "the process sampler ran {samples} times");
    assert!(seen.is_empty(), "a secret was on a command line: {seen:?}");
}

/// Every regular file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
