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
