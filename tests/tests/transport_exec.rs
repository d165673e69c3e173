//! Framed command execution over SSH against a real OpenSSH sshd.

use edgeforge::transport::{SshTransport, Transport};
use edgeforge_tests::SshdFleet;
use edgeforge_tests::transport_checks as checks;

async fn one_node() -> (SshdFleet, SshTransport) {
    let fleet = SshdFleet::start(1).expect("sshd fleet");
    let t = SshTransport::connect(&fleet.target(0))
        .await
        .expect("connect");
    (fleet, t)
}

#[tokio::test]
async fn exit_codes_and_streams() {
    let (_f, t) = one_node().await;
    checks::exit_codes_and_streams(&t).await;
}

#[tokio::test]
async fn signals_report_128_plus_n() {
    let (_f, t) = one_node().await;
    checks::signals(&t).await;
}

#[tokio::test]
async fn binary_and_large_output() {
    let (_f, t) = one_node().await;
    checks::binary_and_large_output(&t).await;
}

#[tokio::test]
async fn output_mimicking_frame_markers() {
    let (_f, t) = one_node().await;
    checks::fake_frame_markers(&t).await;
}

#[tokio::test]
async fn stdin_feeding() {
    let (_f, t) = one_node().await;
    checks::stdin_feeding(&t).await;
}

#[tokio::test]
async fn timeout_kills_the_shell_and_recovers() {
    let (_f, t) = one_node().await;
    checks::timeout(&t).await;
}

#[tokio::test]
async fn concurrent_commands_share_a_bounded_pool() {
    let (_f, t) = one_node().await;
    checks::concurrent_commands(&t).await;
    // The pool never exceeds its bound: count this connection's sshd session
    // processes running `sh` (2 user shells at most).
    let out = checks::sh(
        &t,
        "for p in /proc/[0-9]*; do [ \"$(cut -d' ' -f4 $p/stat 2>/dev/null)\" = \"$PPID\" ] && cat $p/comm; done | grep -c '^sh$'",
    )
    .await;
    let shells: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(99);
    assert!((1..=2).contains(&shells), "{shells} shells open");
}

#[tokio::test]
async fn exec_channel_path_matches_framed_path() {
    let (_f, t) = one_node().await;
    let req = edgeforge::transport::ExecRequest {
        script: "echo out; echo err >&2; cat; exit 5",
        stdin: Some(b"in"),
        privileged: false,
        timeout: None,
    };
    let framed = t.exec(req).await.unwrap();
    let channel = t.exec_channel(req).await.unwrap();
    assert_eq!(framed, channel);
    assert_eq!(framed.stdout, b"out\nin");
    let killed = t
        .exec_channel(edgeforge::transport::ExecRequest {
            script: "kill -KILL $$",
            stdin: None,
            privileged: false,
            timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(killed.status, 137);
}

#[tokio::test]
async fn close_disconnects() {
    let (_f, t) = one_node().await;
    checks::sh(&t, "true").await;
    t.close().await.unwrap();
    assert!(
        t.exec(edgeforge::transport::ExecRequest {
            script: "true",
            stdin: None,
            privileged: false,
            timeout: None,
        })
        .await
        .is_err()
    );
}
