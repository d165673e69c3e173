//! Host key verification against real sshd host keys.

use std::time::Duration;

use edgeforge::transport::{HostKeyCheck, HostKeyError, SshTransport, TransportError};
use edgeforge_tests::{KeyKind, NodeSpec, SshdFleet, sshd};

fn with_check(fleet: &SshdFleet, check: HostKeyCheck) -> edgeforge::transport::SshTarget {
    let mut t = fleet.target(0);
    t.host_key = check;
    t.connect_timeout = Duration::from_secs(5);
    t
}

fn known_hosts(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("kh");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn mismatch_is_refused_with_both_fingerprints() {
    let fleet = SshdFleet::start(1).unwrap();
    let node = fleet.node(0);
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    sshd::keygen(&other, KeyKind::Ed25519, None).unwrap();
    let other_line = std::fs::read_to_string(sshd::pub_path(&other)).unwrap();
    let kh = known_hosts(
        dir.path(),
        &format!("[{}]:{} {other_line}", node.addr(), node.port()),
    );
    let target = with_check(
        &fleet,
        HostKeyCheck {
            known_hosts: vec![kh],
            ..Default::default()
        },
    );
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("must be refused");
    let msg = err.to_string();
    assert!(
        matches!(err, TransportError::HostKey(HostKeyError::Mismatch { .. })),
        "{msg}"
    );
    assert!(msg.contains(&node.host_fingerprint().unwrap()), "{msg}");
    assert!(
        msg.contains(&sshd::fingerprint_of(&sshd::pub_path(&other)).unwrap()),
        "{msg}"
    );
    assert!(msg.contains("verify the new fingerprint"), "{msg}");
}

#[tokio::test]
async fn hashed_entry_is_accepted() {
    let fleet = SshdFleet::start(1).unwrap();
    let node = fleet.node(0);
    let dir = tempfile::tempdir().unwrap();
    let kh = known_hosts(
        dir.path(),
        &format!(
            "[{}]:{} {}\n",
            node.addr(),
            node.port(),
            node.host_key_line()
        ),
    );
    // ssh-keygen -H hashes the host names in place, as OpenSSH's HashKnownHosts does.
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(st.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0."),
        "{text}"
    );
    let target = with_check(
        &fleet,
        HostKeyCheck {
            known_hosts: vec![kh],
            ..Default::default()
        },
    );
    SshTransport::connect(&target)
        .await
        .expect("hashed entry must match");
}

#[tokio::test]
async fn port_matters_in_entries() {
    let fleet = SshdFleet::start(1).unwrap();
    let node = fleet.node(0);
    let dir = tempfile::tempdir().unwrap();
    // An entry for the bare address means port 22 only.
    let kh = known_hosts(
        dir.path(),
        &format!("{} {}\n", node.addr(), node.host_key_line()),
    );
    let target = with_check(
        &fleet,
        HostKeyCheck {
            known_hosts: vec![kh],
            ..Default::default()
        },
    );
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("unknown on this port");
    assert!(
        matches!(err, TransportError::HostKey(HostKeyError::Unknown { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("accept-new"), "{err}");
}

#[tokio::test]
async fn pinned_fingerprint() {
    let fleet = SshdFleet::start(1).unwrap();
    let fp = fleet.node(0).host_fingerprint().unwrap();
    let ok = with_check(
        &fleet,
        HostKeyCheck {
            pinned: Some(fp.clone()),
            ..Default::default()
        },
    );
    SshTransport::connect(&ok)
        .await
        .expect("pinned key accepted");
    let wrong = with_check(
        &fleet,
        HostKeyCheck {
            pinned: Some("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            ..Default::default()
        },
    );
    let msg = SshTransport::connect(&wrong)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains(&fp) && msg.contains("SHA256:AAAA"), "{msg}");
}

#[tokio::test]
async fn rsa_host_key_in_known_hosts() {
    let fleet = SshdFleet::start_with(&[NodeSpec {
        rsa_host_key: true,
        ..Default::default()
    }])
    .unwrap();
    assert!(fleet.node(0).host_key_line().starts_with("ssh-rsa "));
    let t = SshTransport::connect(&fleet.target(0))
        .await
        .expect("rsa host key");
    assert_eq!(
        edgeforge_tests::transport_checks::sh(&t, "echo ok")
            .await
            .stdout,
        b"ok\n"
    );
}

#[tokio::test]
async fn accept_new_records_then_refuses_changed_key() {
    let mut fleet = SshdFleet::start(1).unwrap();
    let state = tempfile::tempdir().unwrap();
    let own = state.path().join("deep/state/known_hosts");
    let check = HostKeyCheck {
        known_hosts: vec![own.clone()],
        accept_new: Some(own.clone()),
        pinned: None,
    };
    let target = with_check(&fleet, check.clone());
    SshTransport::connect(&target)
        .await
        .expect("first sight accepted");
    let recorded = std::fs::read_to_string(&own).unwrap();
    assert_eq!(recorded.lines().count(), 1);
    assert!(
        recorded.contains(fleet.node(0).host_key_line()),
        "{recorded}"
    );
    SshTransport::connect(&target)
        .await
        .expect("same key accepted again");
    assert_eq!(std::fs::read_to_string(&own).unwrap(), recorded);

    // The host gets a new key (reinstalled, or an impostor on its address).
    let old_fp = fleet.node(0).host_fingerprint().unwrap();
    let key = fleet.node(0).host_key_path();
    sshd::keygen(&key, KeyKind::Ed25519, None).unwrap();
    fleet.restart(0).unwrap();
    let new_fp = fleet.node(0).host_fingerprint().unwrap();
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("changed key refused");
    let msg = err.to_string();
    assert!(msg.contains(&old_fp) && msg.contains(&new_fp), "{msg}");
    assert_eq!(
        std::fs::read_to_string(&own).unwrap(),
        recorded,
        "nothing recorded for a changed key"
    );
}
