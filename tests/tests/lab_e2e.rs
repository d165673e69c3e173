//! End to end: one `edgeforge apply` on a machine with no lab creates three
//! TCG guests from the project's own base image, waits for each guest's
//! SSH and cloud-init, and lays down the os layer in them — the machine
//! layer and the os layer in one run, with per-layer times in the summary.
//! Guests are reached through forwarded loopback ports with the host keys
//! edgeforge generated and pinned. A second apply changes nothing and
//! opens one SSH connection per guest; a changed VM spec is drift (reported,
//! left alone); `lab down` leaves no domain and no per-VM volume (the base
//! image stays).
//!
//! Needs root, libvirtd + qemu-system-x86 + passt, debootstrap, mtools and
//! the Debian mirror when the base image is not cached yet (`edgeforge
//! images build-base` once, ~3-9 min; CI builds it once per run). Boots VMs:
//! run it alone (`flock /tmp/edgeforge-vm.lock` when other suites boot VMs).

use std::path::Path;

use edgeforge_tests::lab::{
    LabNode, edgeforge_in, ensure_libvirtd, json_events, lab_inventory, lab_keys, output_text, ssh,
    virsh,
};

const LAB: &str = "e2e";

/// Runs `lab down` for the e2e lab when dropped, so a failed assertion
/// leaves no VM running.
struct Teardown<'a> {
    home: &'a Path,
    inventory: String,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let _ = edgeforge_in(self.home, &["lab", "down", "-i", &self.inventory]);
    }
}

#[test]
fn one_apply_brings_up_three_tcg_guests_and_their_os_layer_then_changes_nothing() {
    ensure_libvirtd().expect("libvirtd");
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("state-home");
    let nodes: Vec<LabNode> = (1..=3)
        .map(|i| LabNode {
            name: format!("node-{i}"),
            port: 2230 + i,
            memory_mib: 1024,
        })
        .collect();
    let inventory = dir.path().join("lab.yaml");
    std::fs::write(&inventory, lab_inventory(LAB, &nodes)).expect("inventory");
    let inv = inventory.display().to_string();
    let _teardown = Teardown {
        home: &home,
        inventory: inv.clone(),
    };
    // A previous run killed halfway may have left the lab behind.
    let _ = edgeforge_in(&home, &["lab", "down", "-i", &inv]);
    let keys = lab_keys(&home, LAB);
    let apply = |round: &str, layers: &str| {
        let log = dir.path().join(format!("apply-{round}.jsonl"));
        let out = edgeforge_in(
            &home,
            &[
                "apply",
                "-i",
                &inv,
                "--layer",
                layers,
                "--log-format",
                "json",
                "--log-file",
                &log.display().to_string(),
            ],
        )
        .expect("apply");
        println!("--- apply ({round})\n{}", output_text(&out));
        (out, json_events(&log))
    };

    // One command: VMs, SSH, cloud-init, os layer.
    let (first, ev) = apply("first", "machine,os");
    let out = output_text(&first);
    assert!(first.status.success(), "apply failed:\n{out}");
    let summary = String::from_utf8_lossy(&first.stdout).into_owned();
    for n in &nodes {
        let row = summary
            .lines()
            .find(|l| l.starts_with(&n.name))
            .unwrap_or_else(|| panic!("no summary row for {}\n{summary}", n.name));
        assert!(
            row.contains("machine ") && row.contains("os ") && row.ends_with(" ok"),
            "{row}"
        );
    }
    assert!(summary.contains("by layer: machine "), "{summary}");
    let finished = |step: &str, status: &str| {
        ev.iter()
            .filter(|e| e["event"] == "step_finished" && e["step"] == step && e["status"] == status)
            .count()
    };
    assert_eq!(
        finished("VM defined", "changed"),
        3,
        "three VMs created:\n{out}"
    );
    assert_eq!(finished("VM booted (SSH answers)", "changed"), 3, "{out}");
    assert_eq!(finished("cloud-init finished", "ok"), 3, "{out}");
    let progress: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["event"] == "step_progress")
        .collect();
    assert!(
        !progress.is_empty(),
        "the machine layer reports its stages:\n{out}"
    );

    // Inside each guest: cloud-init done, the hostname from the seed, the
    // size asked for, and what the os layer lays down.
    for n in &nodes {
        let check = |cmd: &str| ssh(&keys, n.port, cmd).expect("ssh");
        assert!(check("cloud-init status").contains("done"), "{}", n.name);
        assert_eq!(check("hostname"), n.name);
        let mem_kib: u64 = check("awk '/MemTotal/ {print $2}' /proc/meminfo")
            .parse()
            .expect("MemTotal");
        assert!(
            (700_000..=1_100_000).contains(&mem_kib),
            "{}: MemTotal {mem_kib} kB for 1024 MiB",
            n.name
        );
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

    // Again: nothing changes, and each guest gets exactly one SSH session
    // from edgeforge (the machine layer's cloud-init check and the os layer
    // share it). Sessions are counted in each guest's sshd log since a mark.
    let marks: Vec<String> = nodes
        .iter()
        .map(|n| ssh(&keys, n.port, "echo $(( $(date +%s) + 1 ))").expect("ssh"))
        .collect();
    // The mark is a second after the session that read it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (second, ev) = apply("second", "machine,os");
    let out = output_text(&second);
    assert!(second.status.success(), "{out}");
    let changed: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "the second apply changed: {changed:#?}");
    for (n, mark) in nodes.iter().zip(&marks) {
        let log = ssh(
            &keys,
            n.port,
            &format!("journalctl -q -u ssh --since @{mark} | grep -c 'Accepted publickey' || true"),
        )
        .expect("ssh");
        // edgeforge's one session, and the one running this very query.
        assert_eq!(
            log.trim(),
            "2",
            "{}: SSH sessions since the second apply started",
            n.name
        );
    }

    // A changed spec is drift: a warning, left alone without --recreate.
    let mut bigger = nodes.clone();
    bigger[2].memory_mib = 768;
    std::fs::write(&inventory, lab_inventory(LAB, &bigger)).expect("inventory");
    let drift = edgeforge_in(&home, &["lab", "up", "-i", &inv]).expect("lab up");
    let out = output_text(&drift);
    println!("--- lab up (drift)\n{out}");
    assert!(drift.status.success(), "{out}");
    assert!(
        out.contains(&format!("VM {LAB}-node-3 drifted")) && out.contains("--recreate"),
        "{out}"
    );
    let status = edgeforge_in(&home, &["lab", "status", "-i", &inv]).expect("status");
    let out = output_text(&status);
    println!("--- lab status\n{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{LAB}-{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("node-1").contains("running") && line("node-1").ends_with(" no"),
        "{out}"
    );
    assert!(line("node-3").contains("yes (lab up --recreate"), "{out}");

    // Down: no domain, no per-VM volume; the base image stays in the pool.
    let down = edgeforge_in(&home, &["lab", "down", "-i", &inv]).expect("lab down");
    let out = output_text(&down);
    println!("--- lab down\n{out}");
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
