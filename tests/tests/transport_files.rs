//! put/get over SSH (shell for small content, SFTP for files) against real sshd.

use edgeforge::transport::SshTransport;
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
async fn upload_then_sha256_skip() {
    let (f, t) = one_node().await;
    checks::put_and_skip(&t, f.node(0).root()).await;
}

#[tokio::test]
async fn file_source_streams_over_sftp() {
    let (f, t) = one_node().await;
    let scratch = tempfile::tempdir().unwrap();
    checks::put_file_source(&t, f.node(0).root(), scratch.path()).await;
}

#[tokio::test]
async fn interrupted_upload_leaves_old_file() {
    let (f, t) = one_node().await;
    let scratch = tempfile::tempdir().unwrap();
    checks::interrupted_put_keeps_old_file(&t, f.node(0).root(), scratch.path()).await;
}

#[tokio::test]
async fn put_into_missing_directory_says_so() {
    let (f, t) = one_node().await;
    let path = f.node(0).path("no/such/dir/file");
    let err = edgeforge::transport::Transport::put(
        &t,
        edgeforge::transport::PutRequest {
            path: &path,
            source: edgeforge::transport::PutSource::Bytes(b"x"),
            sha256: None,
            mode: 0o644,
            owner: None,
            privileged: false,
        },
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("cannot place {path}")), "{msg}");
    assert!(msg.contains("does not exist; create it first"), "{msg}");
}
