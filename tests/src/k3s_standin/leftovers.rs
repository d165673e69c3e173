//! What a running k3s leaves on a node that a reset must remove, created for
//! real in the current network namespace: the `cni0` bridge (with the first
//! address of the node's pod range), `flannel.1` (vxlan, or a dummy link
//! where the kernel has no vxlan), a `cni-<uuid>` network namespace (what a
//! pod sandbox gets), `/var/lib/cni/`, and iptables chains k3s owns
//! (`KUBE-*`, `CNI-*`, `FLANNEL-*` in the filter and nat tables, with the
//! jump rules from the built-in chains into them) — so a reset can be
//! checked to remove exactly these, as `k3s-killall.sh` does. Skipped, with a
//! log line, when not root or without `ip`/`iptables`.
//!
//! Safety gate (stand-in only): they are made only on a node booted with
//! systemd (`/run/systemd/system` exists: the lab's guests) or in a network
//! namespace other than its parent's or PID 1's (a test's `ip netns exec`), so a stand-in
//! started on a test host itself (the sshd fleet, CI) never touches the
//! host's links and iptables. `EDGEFORGE_K3S_STANDIN_NETWORK=1` forces them,
//! `=0` turns them off.

use std::path::Path;
use std::process::Command;

use super::log;

/// Chains per table and the jumps into them, modelled on kube-proxy, flannel and the CNI portmap plugin.
/// A table, the chains k3s's components create in it, and (built-in chain, jump target) rules.
type TableChains = (
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const CHAINS: &[TableChains] = &[
    (
        "filter",
        &[
            "KUBE-FIREWALL",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-PROXY-FIREWALL",
            "KUBE-KUBELET-CANARY",
            "FLANNEL-FWD",
            "CNI-FORWARD",
        ],
        &[
            ("INPUT", "KUBE-FIREWALL"),
            ("INPUT", "KUBE-NODEPORTS"),
            ("FORWARD", "KUBE-FORWARD"),
            ("FORWARD", "KUBE-SERVICES"),
            ("FORWARD", "FLANNEL-FWD"),
            ("FORWARD", "CNI-FORWARD"),
            ("OUTPUT", "KUBE-FIREWALL"),
        ],
    ),
    (
        "nat",
        &[
            "KUBE-SERVICES",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            "KUBE-NODEPORTS",
            "KUBE-KUBELET-CANARY",
            "FLANNEL-POSTRTG",
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
        ],
        &[
            ("PREROUTING", "KUBE-SERVICES"),
            ("PREROUTING", "CNI-HOSTPORT-DNAT"),
            ("OUTPUT", "KUBE-SERVICES"),
            ("OUTPUT", "CNI-HOSTPORT-DNAT"),
            ("POSTROUTING", "KUBE-POSTROUTING"),
            ("POSTROUTING", "FLANNEL-POSTRTG"),
            ("POSTROUTING", "CNI-HOSTPORT-MASQ"),
        ],
    ),
];

/// Creates the leftovers (idempotent); `pod_gateway` is `10.42.0.1/24` for the default cluster CIDR.
pub fn create(root: &Path, pod_gateway: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        log::info(
            "Not running as root: skipping the cni0/flannel.1 links, cni- namespace and iptables chains",
        );
        return;
    }
    match std::env::var("EDGEFORGE_K3S_STANDIN_NETWORK").as_deref() {
        Ok("0") => {
            log::info(
                "EDGEFORGE_K3S_STANDIN_NETWORK=0: skipping the cni0/flannel.1 links, cni- namespace and iptables chains",
            );
            return;
        }
        Ok("1") => {}
        _ if Path::new("/run/systemd/system").is_dir() || own_network_namespace() => {}
        _ => {
            log::info(
                "Not a systemd-booted node and not in a network namespace of its own: skipping the cni0/flannel.1 links, cni- namespace and iptables chains (EDGEFORGE_K3S_STANDIN_NETWORK=1 forces them)",
            );
            return;
        }
    }
    if !tool("ip") || !tool("iptables") {
        log::info(
            "ip or iptables not found: skipping the cni0/flannel.1 links, cni- namespace and iptables chains",
        );
        return;
    }
    if !link_exists("cni0") {
        run("ip", &["link", "add", "cni0", "type", "bridge"]);
        run("ip", &["addr", "add", pod_gateway, "dev", "cni0"]);
        run("ip", &["link", "set", "cni0", "up"]);
        log::info(format!("Created bridge cni0 ({pod_gateway})"));
    }
    if !link_exists("flannel.1") {
        let vxlan = run(
            "ip",
            &[
                "link",
                "add",
                "flannel.1",
                "type",
                "vxlan",
                "id",
                "1",
                "dstport",
                "8472",
                "nolearning",
            ],
        );
        if !vxlan {
            run("ip", &["link", "add", "flannel.1", "type", "dummy"]);
            log::info("Created flannel.1 as a dummy link (no vxlan in this kernel)");
        } else {
            log::info("Created vxlan link flannel.1");
        }
        run("ip", &["link", "set", "flannel.1", "up"]);
    }
    let namespaces = output("ip", &["netns", "list"]);
    if !namespaces.lines().any(|l| l.starts_with("cni-")) {
        let name = format!("cni-{}", uuid::Uuid::new_v4());
        if run("ip", &["netns", "add", &name]) {
            log::info(format!("Created network namespace {name}"));
        }
    }
    let cni_dir = root.join("var/lib/cni/networks/cbr0");
    if std::fs::create_dir_all(&cni_dir).is_ok() {
        let _ = std::fs::write(cni_dir.join("last_reserved_ip.0"), "10.42.0.2");
    }
    for (table, chains, jumps) in CHAINS {
        for chain in *chains {
            // -N fails when the chain exists: that is the idempotent case.
            let _ = Command::new("iptables")
                .args(["-w", "-t", table, "-N", chain])
                .output();
        }
        for (from, to) in *jumps {
            let rule = ["-m", "comment", "--comment", "k3s-standin", "-j", to];
            let mut check = vec!["-w", "-t", table, "-C", from];
            check.extend(rule);
            if !run_quiet("iptables", &check) {
                let mut insert = vec!["-w", "-t", table, "-I", from];
                insert.extend(rule);
                run("iptables", &insert);
            }
        }
    }
    log::info("Created KUBE-*, CNI-* and FLANNEL-* iptables chains in the filter and nat tables");
}

/// True when this process is in another network namespace than its parent or PID 1 (`ip netns exec`).
fn own_network_namespace() -> bool {
    let Ok(mine) = std::fs::read_link("/proc/self/ns/net") else {
        return false;
    };
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    [
        format!("/proc/{parent}/ns/net"),
        "/proc/1/ns/net".to_string(),
    ]
    .iter()
    .filter_map(|p| std::fs::read_link(p).ok())
    .any(|other| other != mine)
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
}

fn link_exists(name: &str) -> bool {
    run_quiet("ip", &["link", "show", name])
}

fn run(program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            log::debug(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            log::debug(format!("{program}: {e}"));
            false
        }
    }
}

fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
