//! Authentication through a real ssh-agent (own test binary: it sets SSH_AUTH_SOCK).

use std::process::Command;

use edgeforge::transport::SshTransport;
use edgeforge_tests::transport_checks::sh;
use edgeforge_tests::{KeyKind, SshdFleet, sshd};

#[tokio::test]
async fn ssh_agent_keys_authenticate() {
    let fleet = SshdFleet::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let key = dir.path().join("agent_key");
    sshd::keygen(&key, KeyKind::Ed25519, None).unwrap();
    fleet.authorize(&sshd::pub_path(&key)).unwrap();
    // `ssh-agent -D` stays in the foreground, so this test owns and kills it.
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // SAFETY: this binary has one test, so no other thread reads the environment.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &sock) };

    let mut target = fleet.target(0);
    target.identity_files.clear();
    target.agent = true;
    let result = SshTransport::connect(&target).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let t = result.expect("agent key accepted");
    assert_eq!(sh(&t, "echo via-agent").await.stdout, b"via-agent\n");
}
