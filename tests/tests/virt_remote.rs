//! A "remote" hypervisor through edgeforge's own SSH connection: this
//! machine's libvirtd, reached as `qemu+ssh://root@127.0.0.x:<port>/system`
//! through a real OpenSSH sshd on loopback. The host key is checked against
//! what the target pins (a wrong one is refused before libvirt is spoken
//! to), libvirt calls go through to the real daemon, a socket that is not
//! there and a URI edgeforge does not drive get clear errors, and the
//! forwarded socket's directory goes away with the connection.
//!
//! Needs root, sshd, and libvirtd with qemu (started by the test).

use std::path::PathBuf;

use edgeforge::data::DataDir;
use edgeforge::transport::SshTarget;
use edgeforge::virt::Hypervisor;
use edgeforge_tests::lab::{ensure_libvirtd, virsh};
use edgeforge_tests::sshd::SshdFleet;

fn tunnel_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("edgeforge-libvirt-"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

async fn connect(uri: &str, target: &SshTarget) -> Result<Hypervisor, String> {
    Hypervisor::connect_via(uri, Some(target), &DataDir::Embedded)
        .await
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirt_over_edgeforges_ssh_checks_the_host_key_and_reaches_the_daemon() {
    ensure_libvirtd().expect("libvirtd");
    let fleet = SshdFleet::start(2).expect("sshd");
    let node = fleet.node(0);
    let uri = format!("qemu+ssh://root@{}:{}/system", node.addr(), node.port());
    let target = fleet.target(0);
    let before = tunnel_dirs();

    // Node 1's key pinned for node 0: refused, and no tunnel is left behind.
    let mut wrong = fleet.target(0);
    wrong.host_key.known_hosts.clear();
    wrong.host_key.pinned = Some(fleet.node(1).host_fingerprint().expect("fingerprint"));
    let err = connect(&uri, &wrong).await.err().unwrap_or_default();
    assert!(
        err.contains("host key") && err.contains(&uri),
        "a changed host key must be refused, naming the hypervisor: {err}"
    );
    assert_eq!(tunnel_dirs(), before);

    // The right key: calls reach this machine's libvirtd.
    let hv = connect(&uri, &target).await.expect("connect");
    assert_eq!(hv.uri(), uri);
    let net = "ef-tunnel-test";
    let _ = virsh(&["net-destroy", net]);
    let _ = virsh(&["net-undefine", net]);
    assert!(hv.ensure_isolated_network(net).await.expect("define"));
    let listed = virsh(&["net-list", "--name"]).expect("virsh");
    assert!(listed.lines().any(|l| l == net), "{listed}");
    assert!(!hv.ensure_isolated_network(net).await.expect("again"));
    assert!(hv.remove_network_if_unused(net).await.expect("remove"));
    let listed = virsh(&["net-list", "--all", "--name"]).expect("virsh");
    assert!(!listed.lines().any(|l| l == net), "{listed}");
    assert_eq!(
        hv.vm_status("ef-no-such-domain").await.expect("status"),
        None
    );
    assert_eq!(tunnel_dirs().len(), before.len() + 1);
    drop(hv);
    assert_eq!(
        tunnel_dirs(),
        before,
        "the forwarded socket goes with the connection"
    );

    // A socket that is not there, and a URI edgeforge does not drive.
    let err = connect(&format!("{uri}?socket=/run/ef-no-such.sock"), &target)
        .await
        .err()
        .unwrap_or_default();
    assert!(
        err.contains("libvirtd does not answer there") && err.contains("--layer virt"),
        "{err}"
    );
    let session = uri.replace("/system", "/session");
    let err = connect(&session, &target).await.err().unwrap_or_default();
    assert!(err.contains("not `/session`"), "{err}");
    assert_eq!(tunnel_dirs(), before);
}
