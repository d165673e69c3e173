//! End to end: a lab of three TCG guests on the local libvirtd, built from
//! the project's own base image, reached over SSH through forwarded
//! loopback ports with pinned host keys; `lab up` again changes nothing, a
//! changed spec is reported as drift, and `lab down` leaves no domain and
//! no per-VM volume (the base image stays).
//!
//! Needs root, libvirtd + qemu-system-x86 + passt, debootstrap, mtools and
//! the Debian mirror when the base image is not cached yet (`edgeforge
//! images build-base` once, ~3-9 min; CI caches it).

use std::process::Output;

use edgeforge_tests::lab::{LabNode, edgeforge, ensure_libvirtd, lab_inventory, ssh, virsh};

const LAB: &str = "e2e";

/// Runs `lab down` for the e2e lab when dropped, so a failed assertion
/// leaves no VM running.
struct Teardown {
    inventory: String,
    state: String,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = edgeforge(&[
            "lab",
            "down",
            "-i",
            &self.inventory,
            "--state-dir",
            &self.state,
        ]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn lab_of_three_tcg_guests_up_ssh_idempotent_drift_down() {
    ensure_libvirtd().expect("libvirtd");
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes: Vec<LabNode> = (1..=3)
        .map(|i| LabNode {
            name: format!("node-{i}"),
            port: 2230 + i,
            memory_mib: 1024,
        })
        .collect();
    let inventory = dir.path().join("lab.yaml");
    std::fs::write(&inventory, lab_inventory(LAB, &nodes)).expect("inventory");
    let state = dir.path().join("state");
    let (inv, st) = (inventory.display().to_string(), state.display().to_string());
    let _teardown = Teardown {
        inventory: inv.clone(),
        state: st.clone(),
    };
    // A previous run killed halfway may have left the lab behind.
    let _ = edgeforge(&["lab", "down", "-i", &inv, "--state-dir", &st]);

    let up = edgeforge(&[
        "lab",
        "up",
        "-i",
        &inv,
        "--state-dir",
        &st,
        "--ssh-timeout",
        "1800",
    ])
    .expect("lab up");
    let out = text(&up);
    println!("{out}");
    assert!(up.status.success(), "lab up failed:\n{out}");
    assert!(out.contains("acceleration "), "{out}");
    for n in &nodes {
        assert!(out.contains(&format!("{LAB}-{}: created", n.name)), "{out}");
        assert!(
            out.contains(&format!(
                "{LAB}-{}: SSH answers on 127.0.0.1:{}",
                n.name, n.port
            )),
            "{out}"
        );
    }

    // Inside each guest: the hostname from the seed, root login by the lab
    // key, the host key the lab pinned in known_hosts (StrictHostKeyChecking).
    for n in &nodes {
        // cloud-init restarts sshd once while it finishes; wait for it so
        // that what follows talks to a settled guest.
        ssh(&state, n.port, "cloud-init status --wait >/dev/null; true").expect("ssh");
    }
    for n in &nodes {
        let hostname = ssh(&state, n.port, "hostname").expect("ssh");
        assert_eq!(hostname, n.name);
        let mem_kib: u64 = ssh(&state, n.port, "awk '/MemTotal/ {print $2}' /proc/meminfo")
            .expect("ssh")
            .parse()
            .expect("MemTotal");
        assert!(
            (700_000..=1_100_000).contains(&mem_kib),
            "{}: MemTotal {mem_kib} kB for 1024 MiB",
            n.name
        );
    }

    // The os layer over SSH, with the lab's key and pinned host keys; then
    // inside each guest, what it must have done; a second apply changes nothing.
    let apply_inv = dir.path().join("lab-apply.yaml");
    std::fs::write(
        &apply_inv,
        lab_inventory(LAB, &nodes).replace(
            "ssh: {user: root}",
            &format!(
                "ssh: {{user: root, identityFile: {}, hostKey: {{knownHosts: {}}}}}",
                state.join("id_ed25519").display(),
                state.join("known_hosts").display()
            ),
        ),
    )
    .expect("apply inventory");
    for round in ["first", "second"] {
        let log = dir.path().join(format!("apply-{round}.jsonl"));
        let apply = edgeforge(&[
            "apply",
            "-i",
            &apply_inv.display().to_string(),
            "--layer",
            "os",
            "--force",
            "--state-dir",
            &dir.path().join("apply-state").display().to_string(),
            "--log-format",
            "json",
            "--log-file",
            &log.display().to_string(),
        ])
        .expect("apply");
        let out = text(&apply);
        println!("{out}");
        assert!(apply.status.success(), "apply ({round}) failed:\n{out}");
        let events = std::fs::read_to_string(&log).expect("event log");
        let steps: Vec<serde_json::Value> = events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "step_finished")
            .collect();
        assert!(steps.len() >= 3 * 10, "too few steps ran:\n{events}");
        let changed: Vec<&serde_json::Value> =
            steps.iter().filter(|e| e["status"] == "changed").collect();
        if round == "second" {
            assert!(changed.is_empty(), "second apply changed: {changed:?}");
        }
    }
    for n in &nodes {
        let check = |cmd: &str| ssh(&state, n.port, cmd).expect("ssh");
        assert_eq!(check("sysctl -n net.ipv4.ip_forward"), "1", "{}", n.name);
        assert_eq!(
            check("sysctl -n net.bridge.bridge-nf-call-iptables"),
            "1",
            "{}",
            n.name
        );
        assert!(
            check("cat /proc/modules").contains("br_netfilter"),
            "{}",
            n.name
        );
        assert_eq!(check("tail -n +2 /proc/swaps"), "", "{}", n.name);
        // The node's own name; the other nodes are reached here through
        // loopback port forwards, which are no address of theirs, so the
        // template leaves them out rather than write a wrong entry.
        let hosts = check("cat /etc/hosts");
        assert!(
            hosts.contains("Managed by edgeforge"),
            "{}: /etc/hosts\n{hosts}",
            n.name
        );
        assert!(
            hosts.contains(&format!("127.0.1.1\t{}", n.name)),
            "{}: /etc/hosts\n{hosts}",
            n.name
        );
        assert!(
            !hosts.contains("127.0.0.1\tnode-"),
            "{}: /etc/hosts\n{hosts}",
            n.name
        );
    }

    // Again: nothing changes.
    let again = edgeforge(&["lab", "up", "-i", &inv, "--state-dir", &st]).expect("lab up");
    let out = text(&again);
    println!("{out}");
    assert!(again.status.success(), "{out}");
    for n in &nodes {
        assert!(
            out.contains(&format!("{LAB}-{}: unchanged", n.name)),
            "{out}"
        );
    }
    assert!(out.contains(&format!("lab {LAB}: unchanged")), "{out}");

    // A changed spec is drift: reported, not acted on without --recreate.
    let mut changed = nodes.clone();
    changed[2].memory_mib = 768;
    std::fs::write(&inventory, lab_inventory(LAB, &changed)).expect("inventory");
    let drift = edgeforge(&["lab", "up", "-i", &inv, "--state-dir", &st]).expect("lab up");
    let out = text(&drift);
    println!("{out}");
    assert!(drift.status.success(), "{out}");
    assert!(out.contains(&format!("{LAB}-node-3: drift")), "{out}");
    assert!(out.contains("--recreate"), "{out}");
    assert!(out.contains(&format!("{LAB}-node-1: unchanged")), "{out}");
    let status = edgeforge(&["lab", "status", "-i", &inv, "--state-dir", &st]).expect("status");
    let out = text(&status);
    println!("{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{LAB}-{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("node-1").contains("running"), "{out}");
    assert!(line("node-1").ends_with(" no"), "{out}");
    assert!(line("node-3").contains("yes (lab up --recreate"), "{out}");

    // Down: no domain, no per-VM volume; the base image stays in the pool.
    let down = edgeforge(&["lab", "down", "-i", &inv, "--state-dir", &st]).expect("lab down");
    let out = text(&down);
    println!("{out}");
    assert!(down.status.success(), "{out}");
    let domains = virsh(&["list", "--all", "--name"]).expect("virsh list");
    assert!(
        !domains.lines().any(|d| d.starts_with(&format!("{LAB}-"))),
        "{domains}"
    );
    let volumes = virsh(&["vol-list", "edgeforge"]).expect("virsh vol-list");
    assert!(!volumes.contains(&format!("{LAB}-node")), "{volumes}");
    assert!(volumes.contains(".qcow2"), "base image gone: {volumes}");
}
