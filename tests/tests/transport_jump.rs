//! ProxyJump through a chain of two jump-only sshd hosts.

use edgeforge::transport::{ExecRequest, SshTransport, Transport};
use edgeforge_tests::transport_checks::sh;
use edgeforge_tests::{NodeSpec, SshdFleet};

#[tokio::test]
async fn chain_of_two_jump_hosts() {
    let jump = NodeSpec {
        jump_only: true,
        ..Default::default()
    };
    let fleet = SshdFleet::start_with(&[jump, jump, NodeSpec::default()]).unwrap();
    let mut target = fleet.target(2);
    target.jump = vec![fleet.target(0), fleet.target(1)];
    let t = SshTransport::connect(&target)
        .await
        .expect("through two jumps");
    assert_eq!(
        sh(&t, "echo behind-two-jumps").await.stdout,
        b"behind-two-jumps\n"
    );

    // The tunnel really runs 0 → 1 → 2.
    assert!(
        fleet.node(0).has_connection_to(fleet.node(1).port()),
        "jump 1 does not reach jump 2"
    );
    assert!(
        fleet.node(1).has_connection_to(fleet.node(2).port()),
        "jump 2 does not reach the target"
    );

    // The jump hosts refuse commands: they only forward.
    let j = SshTransport::connect(&fleet.target(0)).await.unwrap();
    let out = j
        .exec(ExecRequest {
            script: "echo hi",
            stdin: None,
            privileged: false,
            timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.stdout.as_slice()),
        (1, &b""[..]),
        "ForceCommand /bin/false"
    );
}

#[tokio::test]
async fn jump_host_key_is_verified_too() {
    let jump = NodeSpec {
        jump_only: true,
        ..Default::default()
    };
    let fleet = SshdFleet::start_with(&[jump, NodeSpec::default()]).unwrap();
    let mut target = fleet.target(1);
    let mut hop = fleet.target(0);
    hop.host_key.known_hosts = vec![fleet.dir().join("empty_known_hosts")];
    target.jump = vec![hop];
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("unknown jump host key");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "[{}]:{}",
            fleet.node(0).addr(),
            fleet.node(0).port()
        )),
        "{msg}"
    );
    assert!(msg.contains("unknown"), "{msg}");
}
