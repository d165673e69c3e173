//! The local transport holds to the same framing checks as SSH.

use edgeforge::transport::LocalTransport;
use edgeforge_tests::transport_checks as checks;

#[tokio::test]
async fn exit_codes_and_streams() {
    checks::exit_codes_and_streams(&LocalTransport::new()).await;
}

#[tokio::test]
async fn signals_report_128_plus_n() {
    checks::signals(&LocalTransport::new()).await;
}

#[tokio::test]
async fn binary_and_large_output() {
    checks::binary_and_large_output(&LocalTransport::new()).await;
}

#[tokio::test]
async fn output_mimicking_frame_markers() {
    checks::fake_frame_markers(&LocalTransport::new()).await;
}

#[tokio::test]
async fn stdin_feeding() {
    checks::stdin_feeding(&LocalTransport::new()).await;
}

#[tokio::test]
async fn timeout_kills_the_shell_and_recovers() {
    checks::timeout(&LocalTransport::new()).await;
}

#[tokio::test]
async fn concurrent_commands() {
    checks::concurrent_commands(&LocalTransport::new()).await;
}

#[tokio::test]
async fn put_and_sha256_skip() {
    let dir = tempfile::tempdir().unwrap();
    checks::put_and_skip(&LocalTransport::new(), dir.path()).await;
}

#[tokio::test]
async fn put_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    checks::put_file_source(&LocalTransport::new(), dir.path(), scratch.path()).await;
}
