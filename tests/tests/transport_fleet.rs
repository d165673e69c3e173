//! A fleet of 200 sshd nodes starts, and one transport per node connects
//! and runs a command on each, 20 hosts at a time (as `--parallel 20` would).

use std::time::Instant;

use futures_util::StreamExt;

use edgeforge::transport::{SshTransport, Transport};
use edgeforge_tests::SshdFleet;
use edgeforge_tests::transport_checks::sh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes() {
    let started = Instant::now();
    let fleet = SshdFleet::start(200).expect("200 sshd");
    let up = started.elapsed();
    eprintln!("200 sshd up in {up:?}");
    let connects = fleet.nodes().iter().enumerate().map(|(i, node)| {
        let target = fleet.target(i);
        async move {
            let t = SshTransport::connect(&target)
                .await
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
            let out = sh(&t, "echo $SSH_CONNECTION").await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // The server end of the connection is this node's own address and port.
            let own = format!("{} {}", node.addr(), node.port());
            assert!(text.trim_end().ends_with(&own), "{text}");
            t.close().await.unwrap();
        }
    });
    futures_util::stream::iter(connects)
        .buffer_unordered(20)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "200 sshd up in {up:?}; all connected and ran a command after {:?}",
        started.elapsed()
    );
}
