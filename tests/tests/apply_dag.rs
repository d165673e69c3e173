//! The executor's graph over real sshd with the real `edgeforge apply` and
//! layer playbooks: when node0's os layer fails, node0's later layers and
//! the agent that joins through node0 do not start, and the other site
//! finishes all its layers without waiting for node0 — node0's failing step
//! waits until the other site's last layer is done before it fails, which a
//! run in waves (every site waiting for the slowest at each layer) could
//! never let happen.

use edgeforge::plan::Action;
use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{InventoryOpts, NODE_ROOT as R, Run, Scenario};

fn layer_playbook(sc: &Scenario, key: &str, steps: &str) {
    let path = sc.path(&format!("data/playbooks/{key}.yaml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!(
            "name: {key}\nvars:\n  base: {}\nsteps:\n{steps}",
            sc.base.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_failed_os_layer_stops_its_own_chain_and_the_other_site_does_not_wait() {
    let fleet = SshdFleet::start(4).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            per_site: 2,
            ..InventoryOpts::default()
        },
    );
    let site1_done = fleet.node(3).root().join("k3s");
    layer_playbook(&sc, Action::WaitForSsh.playbook(), "  []\n");
    layer_playbook(
        &sc,
        Action::ConfigureOs.playbook(),
        &format!(
            r#"  - name: os marker
    command: {{ cmd: "touch {R}/os" }}
    when: node.name != "node0"
  - name: node0 fails once site-1 is done
    command: {{ cmd: "for i in $(seq 600); do [ -e {done} ] && break; sleep 0.1; done; [ -e {done} ] && touch {R}/saw-site-1; echo 'os broke' >&2; exit 5" }}
    when: node.name == "node0"
"#,
            done = site1_done.display()
        ),
    );
    for action in [Action::InitFirstServer, Action::JoinAgent { first: "" }] {
        layer_playbook(
            &sc,
            action.playbook(),
            &format!("  - name: k3s marker\n    command: {{ cmd: \"touch {R}/k3s\" }}\n"),
        );
    }
    let run = Run::new(
        sc.layers_cmd("dag.jsonl", &["--layer", "machine,os,k3s"])
            .output()
            .unwrap(),
        &sc.path("dag.jsonl"),
    );
    assert_eq!(run.code, 1, "{}", run.dump());
    assert!(
        fleet.node(0).root().join("saw-site-1").exists(),
        "site-1 finished its k3s layer while node0's os layer was still running\n{}",
        run.dump()
    );
    let outcome = |task: &str| {
        run.events
            .iter()
            .find(|e| {
                (e["event"] == "task_finished" || e["event"] == "task_not_started")
                    && e["task"] == task
            })
            .cloned()
            .unwrap_or_else(|| panic!("no end for {task}\n{}", run.dump()))
    };
    assert!(
        outcome("node0/os")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("os broke")
    );
    assert_eq!(
        outcome("node0/k3s")["reason"],
        "it needs node0/os, which failed"
    );
    assert_eq!(
        outcome("node1/os")["event"],
        "task_finished",
        "node1's own os layer runs"
    );
    assert_eq!(
        outcome("node1/k3s")["reason"],
        "it needs node0/k3s, which did not start"
    );
    for task in [
        "node2/machine",
        "node2/os",
        "node2/k3s",
        "node3/os",
        "node3/k3s",
    ] {
        let e = outcome(task);
        assert_eq!(e["event"], "task_finished", "{task}");
        assert!(e.get("error").is_none(), "{task}: {e}");
    }
    assert!(!fleet.node(0).root().join("k3s").exists());
    assert!(!fleet.node(1).root().join("k3s").exists());
    assert!(fleet.node(3).root().join("k3s").exists());
    // The summary says which layer failed, and why the others did not start.
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("node0 ") && l.contains("FAILED (os)")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("node1 ") && l.contains("k3s not started")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("node3 ") && l.ends_with(" ok")),
        "{}",
        run.stdout
    );
}
