//! End to end: one `edgeforge apply` on a machine with no lab creates three
//! TCG guests from the project's own base image, waits for each guest's
//! SSH and cloud-init, and lays down the os layer in them — the machine
//! layer and the os layer in one run, with per-layer times in the summary,
//! and the virt layer on node-1 (`hypervisorHost: true`), which then serves
//! as a remote hypervisor: the controller defines and starts a small domain
//! on it over SSH with the host key edgeforge pinned, and `lab down` removes
//! that domain before node-1 itself.
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
            // node-1 is also a hypervisor: the virt layer makes it one, and
            // the controller then runs a domain on it over SSH.
            hypervisor_host: i == 1,
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

    // One command: VMs, SSH, cloud-init, os layer, and the virt layer on node-1.
    let (first, ev) = apply("first", "machine,os,virt");
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
    assert!(summary.contains("virt "), "{summary}");
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
    // The virt layer, for real, on node-1 only: the packages are in the base
    // image (a lab guest has no mirror), libvirt is not running until the
    // layer starts it, then the pool and the NAT network are made.
    for step in [
        "libvirtd running (systemd)",
        "storage pool defined, started and autostarted",
        "NAT network defined, started and autostarted",
    ] {
        assert_eq!(finished(step, "changed"), 1, "{step}:\n{out}");
    }
    assert_eq!(finished("libvirt offers qemu domains", "ok"), 1, "{out}");
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
        let libvirtd = check("systemctl is-active libvirtd || true");
        if n.hypervisor_host {
            assert_eq!(libvirtd, "active", "{}", n.name);
            let pool = check("virsh -c qemu:///system pool-info edgeforge");
            assert!(pool.contains("running"), "{}: {pool}", n.name);
            let net = check("virsh -c qemu:///system net-info edgeforge");
            assert!(
                net.lines()
                    .any(|l| l.starts_with("Active:") && l.ends_with("yes")),
                "{}: {net}",
                n.name
            );
        } else {
            assert_eq!(
                libvirtd, "inactive",
                "{}: libvirt runs only where the virt layer put it",
                n.name
            );
        }
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
    let (second, ev) = apply("second", "machine,os,virt");
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

    // node-1 as a remote hypervisor of the controller, over SSH with the host
    // key edgeforge generated for it.
    remote_hypervisor(&keys, nodes[0].port);

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
    // The domain on node-1 goes first, while node-1 still runs.
    let down = edgeforge_in(&home, &["lab", "down", "-i", &inv]).expect("lab down");
    let out = output_text(&down);
    println!("--- lab down\n{out}");
    assert!(down.status.success(), "{out}");
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("lab down did not say `{needle}`:\n{out}"))
    };
    let nested_line = at(&format!(
        "{NESTED} (on node-1): destroyed, undefined; volumes deleted: {NESTED}.qcow2, {NESTED}-seed.img"
    ));
    assert!(
        nested_line < at(&format!("{LAB}-node-1 (on local): destroyed")),
        "{out}"
    );
    // Again: node-1 is gone, so its hypervisor is skipped, and nothing is left.
    let again = edgeforge_in(&home, &["lab", "down", "-i", &inv]).expect("lab down");
    let out = output_text(&again);
    assert!(again.status.success(), "{out}");
    assert!(
        out.contains("hypervisor node-1: not reachable, skipped"),
        "{out}"
    );
    assert!(out.contains("nothing to remove"), "{out}");
    let domains = virsh(&["list", "--all", "--name"]).expect("virsh list");
    assert!(
        !domains.lines().any(|d| d.starts_with(&format!("{LAB}-"))),
        "{domains}"
    );
    let volumes = virsh(&["vol-list", "edgeforge"]).expect("virsh vol-list");
    assert!(!volumes.contains(&format!("{LAB}-node")), "{volumes}");
    assert!(volumes.contains(".qcow2"), "base image gone: {volumes}");
}

/// The domain the controller runs on node-1.
const NESTED: &str = "e2e-nested";

/// Defines and starts a small domain on node-1 (reached as
/// `qemu+ssh://root@127.0.0.1:<port>/system`) through edgeforge's libvirt
/// backend, the way the machine layer does on a remote hypervisor: pool,
/// base volumes, seed, overlay disk, domain on the virt layer's NAT network.
/// Its "base image" is an empty 64 MiB disk with the real kernel and initrd,
/// which is enough to start it: booting it to SSH under nested TCG is not
/// the point. First, a connection that expects another host key is refused
/// before libvirt is spoken to.
fn remote_hypervisor(keys: &Path, port: u16) {
    use edgeforge::data::DataDir;
    use edgeforge::transport::{HostKeyCheck, SshTarget, SudoMode};
    use edgeforge::virt::{Accel, Hypervisor, NicSpec, SeedSpec, VmSpec, VmState, baseimage};

    let uri = format!("qemu+ssh://root@127.0.0.1:{port}/system");
    let target = |known_hosts: &Path| SshTarget {
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity_files: vec![keys.join("id_ed25519")],
        passphrase: None,
        agent: false,
        jump: Vec::new(),
        host_key: HostKeyCheck {
            pinned: None,
            known_hosts: vec![known_hosts.to_owned()],
            accept_new: None,
        },
        connect_timeout: std::time::Duration::from_secs(20),
        keepalive: std::time::Duration::from_secs(15),
        sudo: SudoMode::None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The lab's known_hosts with node-1's entry holding node-2's key.
    let known = std::fs::read_to_string(keys.join("known_hosts")).expect("known_hosts");
    let key_of = |p: u16| {
        known
            .lines()
            .find(|l| l.starts_with(&format!("[127.0.0.1]:{p} ")))
            .and_then(|l| l.split_once(' '))
            .map(|(_, k)| k.to_owned())
            .expect("known_hosts entry")
    };
    let wrong = dir.path().join("known_hosts.wrong");
    std::fs::write(&wrong, format!("[127.0.0.1]:{port} {}\n", key_of(port + 1))).expect("write");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let refused = Hypervisor::connect_via(&uri, Some(&target(&wrong)), &DataDir::Embedded).await;
        let err = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(err.contains("host key"), "a changed host key must be refused: {err}");

        let started = std::time::Instant::now();
        let hv = Hypervisor::connect_via(&uri, Some(&target(&keys.join("known_hosts"))), &DataDir::Embedded)
            .await
            .expect("connect over SSH");
        let pool = hv
            .ensure_pool(edgeforge::virt::DEFAULT_POOL, edgeforge::virt::DEFAULT_POOL_PATH)
            .await
            .expect("pool");
        let opts = baseimage::BuildOptions::new(baseimage::DEFAULT_RELEASE).expect("options");
        let real = baseimage::find_cached(&opts)
            .expect("cache")
            .expect("the lab's base image is cached");
        let mut tiny = real.clone();
        tiny.dir = dir.path().join("tiny");
        tiny.sha256 = "e2e-tiny-base".into();
        std::fs::create_dir_all(&tiny.dir).expect("mkdir");
        for (from, to) in [
            (real.kernel_path(), tiny.kernel_path()),
            (real.initrd_path(), tiny.initrd_path()),
        ] {
            std::fs::copy(from, to).expect("copy");
        }
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(tiny.image_path())
            .arg("64M")
            .status()
            .expect("qemu-img");
        assert!(made.success());
        let base = hv.ensure_base(&pool, &tiny).await.expect("base volumes");
        let host_key = keys.join("hostkeys").join(format!("{LAB}-node-2_ed25519"));
        let seed = SeedSpec {
            hostname: "nested".into(),
            instance_id: NESTED.into(),
            user: "root".into(),
            authorized_key: std::fs::read_to_string(keys.join("id_ed25519.pub")).expect("key"),
            host_key_private: std::fs::read_to_string(&host_key).expect("host key"),
            host_key_public: std::fs::read_to_string(format!("{}.pub", host_key.display()))
                .expect("host public key"),
            cluster: None,
        };
        let spec = VmSpec {
            name: NESTED.into(),
            hostname: "nested".into(),
            lab: LAB.into(),
            cpus: 1,
            memory_mib: 192,
            disk_gib: 1,
            image_sha256: base.sha256.clone(),
            seed_sha256: String::new(),
            machine: edgeforge::virt::DEFAULT_MACHINE.into(),
            network: NicSpec::Network {
                name: "edgeforge".into(),
            },
            cluster: None,
        };
        hv.create_vm(&pool, &spec, &base, &seed, Accel::Tcg)
            .await
            .expect("define the domain on node-1");
        hv.start_vm(NESTED).await.expect("start it");
        let status = hv.vm_status(NESTED).await.expect("status").expect("defined");
        assert_eq!(status.state, VmState::Running, "{status:?}");
        let listed = hv.list_lab(LAB).await.expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        println!(
            "remote hypervisor: connected, base volumes, seed, disk, domain defined and started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
    // node-1's own libvirt agrees.
    let running = ssh(keys, port, "virsh -c qemu:///system list --name").expect("ssh");
    assert!(running.lines().any(|l| l == NESTED), "{running}");
}
