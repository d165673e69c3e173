//! What a running k3s leaves on a node, made for real by the stand-in in a
//! network namespace this test creates (`ip netns add`), so a reset can be
//! checked against it: `cni0`, `flannel.1`, a `cni-<uuid>` namespace and the
//! KUBE-/CNI-/FLANNEL- chains with their jumps in filter and nat. The host's
//! own links and iptables are never touched: on the host (outside a
//! namespace of its own, not booted with systemd) the stand-in skips them.

mod k3s_standin_common;

use std::process::Command;

use k3s_standin_common::*;

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Deletes the test's namespace (and the pod namespace the stand-in made) on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

#[test]
fn a_server_in_a_network_namespace_leaves_k3s_links_namespace_and_chains() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !sh(&["iptables", "--version"]).0 {
        eprintln!("skipped: needs root and iptables (CI has both)");
        return;
    }
    let ns = format!("k3s-standin-test-{}", std::process::id());
    let mut cleanup = Namespaces(vec![ns.clone()]);
    assert!(sh(&["ip", "netns", "add", &ns]).0);
    assert!(sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]).0);
    let host_links = sh(&["ip", "-o", "link", "show"]).1;
    let host_rules = sh(&["iptables-save"]).1;
    let before: Vec<String> = sh(&["ip", "netns", "list"])
        .1
        .lines()
        .map(str::to_string)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let bin = edgeforge_tests::k3s_standin::binary();
    let port = free_port().to_string();
    let args: Vec<String> = [
        "netns",
        "exec",
        &ns,
        bin.to_str().unwrap(),
        "server",
        "--https-listen-port",
        &port,
        "--node-ip",
        "127.0.0.1",
        "--node-name",
        "net-s1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = Standin::spawn_with(std::path::Path::new("/usr/sbin/ip"), dir.path(), &args, &[]);
    let log = s.wait_log("k3s is up and running");
    let pod_ns = log
        .lines()
        .find_map(|l| l.split("Created network namespace ").nth(1))
        .map(|rest| rest.trim_end_matches('"').to_string())
        .expect(&log);
    cleanup.0.push(pod_ns.clone());
    assert!(pod_ns.starts_with("cni-"), "{pod_ns}");
    let in_ns = |cmd: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend(cmd);
        sh(&full)
    };
    let (ok, cni0) = in_ns(&["ip", "-o", "addr", "show", "cni0"]);
    assert!(ok && cni0.contains("10.42.0.1/24"), "{cni0}");
    assert!(in_ns(&["ip", "link", "show", "flannel.1"]).0);
    let rules = in_ns(&["iptables-save"]).1;
    for want in [
        ":KUBE-SERVICES",
        ":KUBE-FORWARD",
        ":CNI-FORWARD",
        ":FLANNEL-FWD",
        ":FLANNEL-POSTRTG",
        ":CNI-HOSTPORT-DNAT",
        "-A FORWARD -m comment --comment k3s-standin -j KUBE-FORWARD",
        "-A POSTROUTING -m comment --comment k3s-standin -j FLANNEL-POSTRTG",
    ] {
        assert!(rules.contains(want), "{want} in\n{rules}");
    }
    let after = sh(&["ip", "netns", "list"]).1;
    assert!(after.lines().any(|l| l.starts_with(&pod_ns)), "{after}");
    assert!(
        after
            .lines()
            .filter(|l| !before.contains(&l.to_string()))
            .count()
            >= 1
    );
    // Nothing on the host.
    assert_eq!(
        sh(&["ip", "-o", "link", "show"]).1.contains("cni0"),
        host_links.contains("cni0")
    );
    assert_eq!(
        sh(&["iptables-save"]).1.contains("k3s-standin"),
        host_rules.contains("k3s-standin")
    );
    assert!(s.term().success());
}

#[test]
fn on_the_host_itself_the_leftovers_are_skipped_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standin::spawn(
        dir.path(),
        &server_args("net-host", port, "127.0.0.91", &[]),
        &[],
    );
    let log = s.wait_log("k3s is up and running");
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("this host is booted with systemd: the stand-in treats it as a node");
    } else {
        assert!(log.contains("skipping the cni0/flannel.1 links"), "{log}");
    }
    assert!(s.term().success());
}
