//! End to end, the k3s layer on three TCG guests with the **k3s stand-in**
//! (`edgeforge_tests::k3s_standin`, stamped releases and a generated
//! air-gap tarball in an artifact cache): the production path of the
//! playbooks, templates, transfers, systemd units and token handling, inside
//! the lab's guests, driven only through the `edgeforge` binary.
//!
//! One test, phases on the same VMs (boots are the expensive part):
//! 1. `apply` from nothing: machine, os, k3s; the merged kubeconfig works
//!    with kubectl 1.37 and shows 3 Ready nodes; files, modes and owners on
//!    the nodes; the token appears nowhere but in its files;
//! 2. `apply` again changes nothing and restarts nothing;
//! 3. a changed `registryMirrors` changes registries.yaml and restarts k3s
//!    on every node, and nothing else;
//! 4. a new `versions.k3s` rolls the cluster one node at a time, the server
//!    first, each cordoned, upgraded and uncordoned (seen on the Node
//!    objects through the API while it runs), the old air-gap tarball gone;
//! 5. `reset` leaves no k3s file, unit, link, interface or iptables chain,
//!    and the test's own iptables rule is still there;
//! 6. `apply` of three servers on the same VMs: the stand-in fails
//!    concurrent etcd joins, so success proves the servers joined one at a
//!    time, each a voter before the next.
//!
//! Needs root, libvirtd, qemu, passt and the cached base image (see
//! lab_e2e.rs); run under the VM lock:
//! `flock /tmp/edgeforge-vm.lock cargo test -p edgeforge-tests --test k3s_lab_e2e`.

mod k3s_lab_common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k3s_lab_common::{
    API_PORT, LAB, Lab, NODES, Phase, assert_no_k3s_left, layer_times, main_pids, merge_kubeconfig,
    no_secret_in,
};

const OLD: &str = "v1.33.6+k3s1";
const NEW: &str = "v1.34.2+k3s1";

#[test]
fn k3s_lab_install_idempotent_mirrors_upgrade_reset_ha_with_the_standin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = edgeforge_tests::k3s_standin::Artifacts::prepare(
        &dir.path().join("artifacts"),
        &[OLD, NEW],
    );
    let lab = Lab::new(&artifacts.cache, &artifacts.manifest, dir, 1024);
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut phase = Phase {
        version: OLD.into(),
        ..Phase::default()
    };

    // ------------------------------------------------ 1. from nothing
    lab.write_inventory(&phase);
    let check = lab.edgeforge(&["check", "-i", &lab.inv()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let install = lab.run("apply", "1-install", &[]);
    assert!(
        install.output.status.success(),
        "apply from nothing failed:\n{}",
        install.text()
    );
    timings.push(("1 apply from nothing".into(), install.took));
    layer_times(&install, &mut timings);

    // The kubeconfig merges into an existing one, keeping its entries.
    std::fs::create_dir_all(lab.kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(
        &lab.kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\nclusters:\n- name: elsewhere\n  \
         cluster: {server: 'https://192.0.2.1:6443'}\nusers:\n- name: elsewhere\n  user: {token: t}\n\
         contexts:\n- name: elsewhere\n  context: {cluster: elsewhere, user: elsewhere}\n",
    )
    .unwrap();
    merge_kubeconfig(&lab);
    let contexts = lab.kubectl(&["config", "get-contexts", "-o", "name"]);
    let contexts = String::from_utf8_lossy(&contexts.stdout).to_string();
    assert!(
        contexts.contains("elsewhere") && contexts.contains(LAB),
        "{contexts}"
    );
    let backups: Vec<_> = std::fs::read_dir(lab.kubeconfig.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".edgeforge-"))
        .collect();
    assert_eq!(backups.len(), 1, "one backup of the merged file");
    let printed = lab.edgeforge(&["kubeconfig", "-i", &lab.inv()]);
    assert!(
        String::from_utf8_lossy(&printed.stdout).contains(&format!("https://127.0.0.1:{API_PORT}"))
    );

    let nodes = lab.nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (name, ready, version, unschedulable, labels) in &nodes {
        assert!(*ready && !*unschedulable, "{name} not Ready: {nodes:?}");
        assert_eq!(version, OLD, "{name}");
        assert_eq!(labels["edgeforge.io/site"], LAB, "{name}");
    }
    let server = nodes
        .iter()
        .find(|n| n.0 == NODES[0])
        .expect("the server's Node");
    assert_eq!(server.4["node-role.kubernetes.io/control-plane"], "true");

    // Files on the nodes: modes and owners as install.sh's, the binary
    // verified and in place, links where free.
    for (i, unit) in [(0, "k3s"), (1, "k3s-agent"), (2, "k3s-agent")] {
        let stat = lab.ssh(
            i,
            &format!(
                "stat -c '%n %a %U:%G' /usr/local/bin/k3s /etc/rancher/k3s/config.yaml /etc/rancher/k3s/token \
                 /etc/rancher/k3s/registries.yaml /etc/systemd/system/{unit}.service \
                 /etc/systemd/system/{unit}.service.env /usr/local/bin/k3s-killall.sh /usr/local/bin/k3s-uninstall.sh"
            ),
        );
        for want in [
            "/usr/local/bin/k3s 755 root:root",
            "/etc/rancher/k3s/config.yaml 600 root:root",
            "/etc/rancher/k3s/token 600 root:root",
            "/etc/rancher/k3s/registries.yaml 600 root:root",
            &format!("/etc/systemd/system/{unit}.service 644 root:root"),
            &format!("/etc/systemd/system/{unit}.service.env 600 root:root"),
            "/usr/local/bin/k3s-killall.sh 755 root:root",
            "/usr/local/bin/k3s-uninstall.sh 755 root:root",
        ] {
            assert!(stat.contains(want), "{}: `{want}` not in\n{stat}", NODES[i]);
        }
        assert_eq!(
            lab.ssh(
                i,
                "readlink /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr"
            ),
            "k3s\nk3s\nk3s"
        );
        assert_eq!(lab.ssh(i, &format!("systemctl is-active {unit}")), "active");
        assert_eq!(
            lab.ssh(i, &format!("systemctl is-enabled {unit}")),
            "enabled"
        );
        let images = lab.ssh(i, "ls /var/lib/rancher/k3s/agent/images/");
        assert_eq!(
            images,
            format!("edgeforge-airgap-{OLD}.tar.zst"),
            "{}",
            NODES[i]
        );
        // The second NIC: the static address on the isolated network, the one k3s uses.
        let addr = lab.ssh(i, "ip -o -4 addr show dev ef-cluster0 | awk '{print $4}'");
        assert_eq!(addr, format!("10.77.0.{}/24", 11 + i));
    }
    // The agents reach the server over the isolated network, not through the host.
    let agent_config = lab.ssh(1, "cat /etc/rancher/k3s/config.yaml");
    assert!(
        agent_config.contains("server: \"https://10.77.0.11:6443\""),
        "{agent_config}"
    );

    // The tokens appear nowhere but in their files.
    let outputs = lab.state().join("outputs");
    let first: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outputs.join(format!("{}_k3s.json", NODES[0])))
            .expect("the first server's outputs"),
    )
    .unwrap();
    let token = first["outputs"]["token"]["value"]
        .as_str()
        .expect("token")
        .to_string();
    let agent_token = first["outputs"]["agent_token"]["value"]
        .as_str()
        .expect("agent token")
        .to_string();
    assert!(token.len() >= 64 && agent_token.len() >= 64 && token != agent_token);
    assert_eq!(lab.ssh(0, "cat /etc/rancher/k3s/token"), token);
    assert!(
        lab.ssh(1, "cat /etc/rancher/k3s/token")
            .ends_with(&format!("::node:{agent_token}"))
    );
    no_secret_in(&install, &[&token, &agent_token]);
    let journals = std::fs::read_dir(lab.state().join("journal")).unwrap();
    for j in journals.flatten() {
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(
            !text.contains(&token) && !text.contains(&agent_token),
            "{}",
            j.path().display()
        );
    }
    for (i, node) in NODES.iter().enumerate() {
        let ps = lab.ssh(i, "ps -eo args");
        assert!(
            !ps.contains(&token) && !ps.contains(&agent_token),
            "{}: ps shows a token",
            node
        );
        assert!(ps.contains("/usr/local/bin/k3s"), "{}: {ps}", node);
        let env = lab.ssh(i, "cat /etc/systemd/system/k3s*.service.env");
        assert!(!env.contains(&token) && !env.contains(&agent_token) && !env.contains("TOKEN"));
    }
    let pids = main_pids(&lab);

    // ------------------------------------------------ 2. again: nothing
    let again = lab.run("apply", "2-again", &[]);
    assert!(again.output.status.success(), "{}", again.text());
    timings.push(("2 apply again".into(), again.took));
    assert_eq!(
        again.changed(),
        Vec::<(String, String)>::new(),
        "a second apply changed something"
    );
    assert!(!again.steps().iter().any(|e| e["step"] == "restart k3s"));
    assert_eq!(main_pids(&lab), pids, "k3s restarted");
    no_secret_in(&again, &[&token, &agent_token]);

    // ------------------------------------------------ 3. new mirror: registries.yaml and a restart
    phase.mirror = "https://mirror-b.example.com:5000".into();
    lab.write_inventory(&phase);
    let mirrors = lab.run("apply", "3-mirrors", &[]);
    assert!(mirrors.output.status.success(), "{}", mirrors.text());
    timings.push(("3 apply, new registry mirror".into(), mirrors.took));
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (subject, step) in mirrors.changed() {
        changed.entry(subject).or_default().push(step);
    }
    for node in NODES {
        assert_eq!(
            changed.remove(node).unwrap_or_default(),
            ["registries.yaml", "restart k3s"],
            "{node}"
        );
    }
    assert!(
        changed.is_empty(),
        "only registries.yaml and the restart changed: {changed:?}"
    );
    let after = main_pids(&lab);
    for (i, (before, now)) in pids.iter().zip(&after).enumerate() {
        assert_ne!(before, now, "{} was not restarted", NODES[i]);
    }
    assert!(
        lab.ssh(2, "cat /etc/rancher/k3s/registries.yaml")
            .contains("mirror-b.example.com")
    );

    // ------------------------------------------------ 4. upgrade, one node at a time
    phase.version = NEW.into();
    lab.write_inventory(&phase);
    let watch = NodeWatch::start(&lab.kubeconfig);
    let upgrade = lab.run("apply", "4-upgrade", &["--max-unavailable", "1"]);
    let seen = watch.stop();
    assert!(upgrade.output.status.success(), "{}", upgrade.text());
    timings.push(("4 apply, k3s upgrade".into(), upgrade.took));
    check_rolling(&seen, NEW);
    // edgeforge's own events agree: the server's task ended before any agent was cordoned.
    let server_done = upgrade
        .position(|e| e["event"] == "task_finished" && e["task"] == format!("{}/k3s", NODES[0]))
        .expect("the server's k3s task");
    for agent in &NODES[1..] {
        let cordon = upgrade
            .position(|e| {
                e["event"] == "step_finished"
                    && e["subject"] == *agent
                    && e["step"] == "cordon for the upgrade"
            })
            .unwrap_or_else(|| panic!("{agent} was not cordoned"));
        assert!(
            server_done < cordon,
            "{agent} was cordoned before the server was upgraded"
        );
    }
    for (name, ready, version, unschedulable, _) in lab.nodes() {
        assert!(
            ready && !unschedulable && version == NEW,
            "{name}: {version}"
        );
    }
    for i in 0..3 {
        assert_eq!(
            lab.ssh(i, "ls /var/lib/rancher/k3s/agent/images/"),
            format!("edgeforge-airgap-{NEW}.tar.zst"),
            "the old air-gap tarball is removed"
        );
        assert!(lab.ssh(i, "/usr/local/bin/k3s --version").contains(NEW));
    }

    // A downgrade is refused before any node is touched.
    phase.version = OLD.into();
    lab.write_inventory(&phase);
    let down = lab.run("apply", "4b-downgrade", &["--layer", "k3s"]);
    assert!(!down.output.status.success(), "{}", down.text());
    assert!(down.log.contains("cannot be downgraded"), "{}", down.log);
    for (name, _, version, unschedulable, _) in lab.nodes() {
        assert!(
            version == NEW && !unschedulable,
            "{name} was touched: {version}"
        );
    }
    phase.version = NEW.into();
    lab.write_inventory(&phase);

    // ------------------------------------------------ 5. reset
    for (i, node) in NODES.iter().enumerate() {
        lab.ssh(i, "iptables -A INPUT -p tcp --dport 2299 -m comment --comment edgeforge-test-keep -j ACCEPT");
        let before = lab.ssh(i, "iptables-save; ip link show");
        assert!(
            before.contains("KUBE-") && before.contains("cni0"),
            "{}: the stand-in left nothing to reset:\n{before}",
            node
        );
    }
    let reset = lab.run("reset", "5-reset", &["--yes"]);
    assert!(reset.output.status.success(), "{}", reset.text());
    timings.push(("5 reset".into(), reset.took));
    let order: Vec<usize> = NODES
        .iter()
        .map(|n| {
            reset
                .position(|e| e["event"] == "task_finished" && e["task"] == format!("{n}/reset"))
                .expect("reset task")
        })
        .collect();
    assert!(
        order[0] > order[1] && order[0] > order[2],
        "the server is reset last"
    );
    for i in 0..3 {
        assert_no_k3s_left(&lab, i);
        lab.ssh(i, "iptables -D INPUT -p tcp --dport 2299 -m comment --comment edgeforge-test-keep -j ACCEPT");
    }
    // What edgeforge kept about them is forgotten.
    for node in NODES {
        assert!(
            !outputs.join(format!("{node}_k3s.json")).exists(),
            "{node}'s outputs"
        );
        assert!(
            !lab.state()
                .join("journal")
                .join(format!("{node}.jsonl"))
                .exists(),
            "{node}'s journal"
        );
    }
    assert!(
        !lab.state()
            .join("kubeconfig")
            .join(format!("{LAB}.yaml"))
            .exists()
    );

    // ------------------------------------------------ 6. three servers, joined one at a time
    phase.ha = true;
    lab.write_inventory(&phase);
    let ha = lab.run("apply", "6-ha", &[]);
    assert!(ha.output.status.success(), "{}", ha.text());
    timings.push(("6 apply, three servers on the reset VMs".into(), ha.took));
    let finished = |n: &str| {
        ha.position(|e| e["event"] == "task_finished" && e["task"] == format!("{n}/k3s"))
            .expect("finished")
    };
    let started = |n: &str| {
        ha.position(|e| e["event"] == "task_started" && e["task"] == format!("{n}/k3s"))
            .expect("started")
    };
    assert!(
        finished(NODES[0]) < started(NODES[1]) && finished(NODES[1]) < started(NODES[2]),
        "servers joined one at a time"
    );
    merge_kubeconfig(&lab);
    let nodes = lab.nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (name, ready, _, _, labels) in &nodes {
        assert!(*ready, "{name}");
        assert_eq!(
            labels["node-role.kubernetes.io/control-plane"], "true",
            "{name}"
        );
        assert_eq!(labels["node-role.kubernetes.io/etcd"], "true", "{name}");
    }
    let voters = lab.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"EtcdIsVoter\")].status}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&voters.stdout).trim(),
        "True\nTrue\nTrue"
    );
    assert!(
        lab.ssh(0, "cat /etc/rancher/k3s/config.yaml")
            .contains("cluster-init: true")
    );

    println!("--- timings");
    for (what, took) in &timings {
        println!("{what:<44} {:>6.0} s", took.as_secs_f64());
    }
}

/// What the test saw of each Node while an upgrade ran: (when, name, unschedulable, kubelet version).
type Seen = Vec<(Instant, String, bool, String)>;

/// Watches the lab's Nodes through its API (reconnecting while k3s restarts).
struct NodeWatch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl NodeWatch {
    fn start(kubeconfig: &std::path::Path) -> NodeWatch {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st, path) = (seen.clone(), stop.clone(), kubeconfig.to_path_buf());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use futures_util::StreamExt;
                use kube::runtime::{WatchStreamExt, watcher};
                let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
                let opts = kube::config::KubeConfigOptions {
                    context: Some(LAB.into()),
                    ..Default::default()
                };
                let config = kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .unwrap();
                let client = kube::Client::try_from(config).unwrap();
                let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
                // A fixed 300 ms retry, not kube-rs's default backoff: that one
                // grows to 30 s while the server restarts for its upgrade, long
                // enough to miss an agent's whole cordon window.
                let mut stream = Box::pin(
                    watcher(api, watcher::Config::default())
                        .backoff(Retry)
                        .applied_objects(),
                );
                while !st.load(std::sync::atomic::Ordering::SeqCst) {
                    let next =
                        tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
                    if let Ok(Some(Ok(node))) = next {
                        let name = node.metadata.name.clone().unwrap_or_default();
                        let unschedulable = node
                            .spec
                            .as_ref()
                            .and_then(|s| s.unschedulable)
                            .unwrap_or(false);
                        let version = node
                            .status
                            .as_ref()
                            .and_then(|s| s.node_info.as_ref())
                            .map(|i| i.kubelet_version.clone())
                            .unwrap_or_default();
                        s.lock()
                            .unwrap()
                            .push((Instant::now(), name, unschedulable, version));
                    }
                }
            });
        });
        NodeWatch { seen, stop, thread }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.thread.join();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The watch's retry delay: constant and short.
struct Retry;

impl Iterator for Retry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {}
}

/// One node at a time out of service, each cordoned, the server upgraded
/// before any agent is cordoned, every node on `version` at the end.
fn check_rolling(seen: &Seen, version: &str) {
    let mut state: BTreeMap<&str, (bool, &str)> = BTreeMap::new();
    let mut cordoned: BTreeMap<&str, bool> = BTreeMap::new();
    let mut server_upgraded_at: Option<usize> = None;
    for (i, (_, name, unschedulable, v)) in seen.iter().enumerate() {
        state.insert(name, (*unschedulable, v));
        if *unschedulable {
            cordoned.insert(name, true);
            if name != NODES[0] {
                assert!(
                    server_upgraded_at.is_some(),
                    "agent {name} cordoned before the server ran {version}"
                );
            }
        }
        if name == NODES[0] && v == version && server_upgraded_at.is_none() {
            server_upgraded_at = Some(i);
        }
        let out: Vec<&&str> = state
            .iter()
            .filter(|(_, (u, _))| *u)
            .map(|(n, _)| n)
            .collect();
        assert!(
            out.len() <= 1,
            "several nodes out of service at once: {out:?} (seen: {seen:?})"
        );
    }
    for node in NODES {
        assert!(
            cordoned.contains_key(node),
            "{node} was never seen cordoned: {seen:?}"
        );
        assert_eq!(
            state.get(node).map(|s| (s.0, s.1)),
            Some((false, version)),
            "{node} at the end"
        );
    }
}
