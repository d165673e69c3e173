//! Opt-in: the k3s lab flow on three TCG guests with a **real k3s** binary
//! and air-gap tarball instead of the stand-in, when
//! `EDGEFORGE_REAL_K3S_DIR` points at a directory laid out as
//! `<dir>/<version>/k3s` and `<dir>/<version>/k3s-airgap-images-amd64.tar.zst`
//! (one release, or two or more: the newest is then the upgrade target).
//! Without the variable the test says that it skipped and passes: real k3s
//! cannot be downloaded on the CI machines.
//!
//! Phases (same VMs): `apply` from nothing gives 3 Ready nodes through the
//! merged kubeconfig with kubectl 1.37 and the tokens nowhere but in their
//! files; a second `apply` changes and restarts nothing; with two releases,
//! an upgrade leaves every node on the new kubelet version, uncordoned;
//! `reset` leaves no k3s file, unit, link, interface or iptables chain and
//! keeps the test's own iptables rule.
//!
//! `flock /tmp/edgeforge-vm.lock env EDGEFORGE_REAL_K3S_DIR=DIR cargo test -p edgeforge-tests --test k3s_lab_real -- --nocapture`

mod k3s_lab_common;

use k3s_lab_common::{
    Lab, NODES, Phase, RealArtifacts, assert_no_k3s_left, main_pids, merge_kubeconfig, no_secret_in,
};

#[test]
fn k3s_lab_with_a_real_k3s_from_edgeforge_real_k3s_dir() {
    let Some(src) = std::env::var_os("EDGEFORGE_REAL_K3S_DIR") else {
        println!(
            "SKIPPED: EDGEFORGE_REAL_K3S_DIR is not set, so no real k3s was tested \
             (set it to a directory of <version>/k3s and \
             <version>/k3s-airgap-images-amd64.tar.zst to run this lab flow with real k3s)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let real = RealArtifacts::prepare(std::path::Path::new(&src), &dir.path().join("artifacts"));
    println!("real k3s releases: {:?}", real.versions);
    // Real k3s servers want more memory than the stand-in.
    let lab = Lab::new(&real.cache, &real.manifest, dir, 2048);
    let mut phase = Phase {
        version: real.versions[0].clone(),
        ..Phase::default()
    };
    lab.write_inventory(&phase);

    let install = lab.run("apply", "1-install", &[]);
    assert!(install.output.status.success(), "{}", install.text());
    merge_kubeconfig(&lab);
    let nodes = lab.nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (name, ready, version, unschedulable, _) in &nodes {
        assert!(*ready && !*unschedulable, "{name}: {nodes:?}");
        assert_eq!(version, &phase.version, "{name}");
    }
    let token = lab.ssh(0, "cat /etc/rancher/k3s/token");
    let agent_token = lab.ssh(0, "cat /etc/rancher/k3s/agent-token");
    assert!(token.len() >= 64 && agent_token.len() >= 64);
    no_secret_in(&install, &[&token, &agent_token]);
    for (i, node) in NODES.iter().enumerate() {
        let ps = lab.ssh(i, "ps -eo args");
        assert!(
            !ps.contains(&token) && !ps.contains(&agent_token),
            "{}",
            node
        );
    }
    let pids = main_pids(&lab);

    let again = lab.run("apply", "2-again", &[]);
    assert!(again.output.status.success(), "{}", again.text());
    assert_eq!(again.changed(), Vec::<(String, String)>::new());
    assert_eq!(main_pids(&lab), pids, "k3s restarted");

    if let Some(newest) = real.versions.last().filter(|v| **v != phase.version) {
        phase.version = newest.clone();
        lab.write_inventory(&phase);
        let upgrade = lab.run("apply", "3-upgrade", &["--max-unavailable", "1"]);
        assert!(upgrade.output.status.success(), "{}", upgrade.text());
        for (name, ready, version, unschedulable, _) in lab.nodes() {
            assert!(
                ready && !unschedulable && version == phase.version,
                "{name}: {version}"
            );
        }
    } else {
        println!("one release given: the upgrade phase was not run");
    }

    for i in 0..3 {
        lab.ssh(
            i,
            "iptables -A INPUT -p tcp --dport 2299 -m comment --comment edgeforge-test-keep -j ACCEPT",
        );
    }
    let reset = lab.run("reset", "4-reset", &["--yes"]);
    assert!(reset.output.status.success(), "{}", reset.text());
    for i in 0..3 {
        assert_no_k3s_left(&lab, i);
    }
}
