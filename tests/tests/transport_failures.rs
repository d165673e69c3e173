//! Unreachable hosts and hosts that die mid-run fail promptly and clearly.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use edgeforge::transport::{ExecRequest, SshTransport, Transport, TransportError};
use edgeforge_tests::transport_checks::sh;
use edgeforge_tests::{Blackhole, SshdFleet};

#[tokio::test]
async fn closed_port_fails_at_once() {
    let fleet = SshdFleet::start(1).unwrap();
    let port = {
        let l = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let mut target = fleet.target(0);
    target.port = port;
    let started = Instant::now();
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("closed port");
    assert!(started.elapsed() < Duration::from_secs(2));
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Connect { .. }), "{msg}");
    assert!(msg.contains("refused"), "{msg}");
}

#[tokio::test]
async fn silent_host_fails_within_the_connect_timeout() {
    let fleet = SshdFleet::start(1).unwrap();
    let hole = Blackhole::start(Ipv4Addr::new(127, 0, 0, 9)).unwrap();
    let mut target = fleet.target(0);
    target.host = hole.addr().ip().to_string();
    target.port = hole.addr().port();
    target.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = SshTransport::connect(&target)
        .await
        .err()
        .expect("blackhole");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(err.to_string().contains("connect timeout of 2s"), "{err}");
}

#[tokio::test]
async fn sshd_killed_mid_session_is_a_clear_error_and_others_go_on() {
    let mut fleet = SshdFleet::start(2).unwrap();
    let a = SshTransport::connect(&fleet.target(0)).await.unwrap();
    let b = SshTransport::connect(&fleet.target(1)).await.unwrap();
    assert_eq!(sh(&a, "echo up").await.stdout, b"up\n");

    // Kill node 0 while a command runs on it.
    let running = a.exec(ExecRequest {
        script: "sleep 20",
        stdin: None,
        privileged: false,
        timeout: None,
    });
    let started = Instant::now();
    let (result, ()) = tokio::join!(running, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fleet.kill(0);
    });
    let err = result.expect_err("the host died");
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("root@127.0.0.2:{}", fleet.node(0).port())),
        "{msg}"
    );
    assert!(msg.contains("the SSH connection was lost"), "{msg}");

    // Later commands on the dead host fail too, at once; the other host is fine.
    let err = a
        .exec(ExecRequest {
            script: "true",
            stdin: None,
            privileged: false,
            timeout: None,
        })
        .await
        .expect_err("still dead");
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    assert_eq!(sh(&b, "echo alive").await.stdout, b"alive\n");
}

#[tokio::test]
async fn hung_host_is_dropped_by_keepalive() {
    let fleet = SshdFleet::start(1).unwrap();
    let mut target = fleet.target(0);
    target.keepalive = Duration::from_secs(1);
    let t = SshTransport::connect(&target).await.unwrap();
    assert_eq!(sh(&t, "echo up").await.stdout, b"up\n");
    fleet.freeze(0);
    let started = Instant::now();
    // No command timeout: only keepalive can notice that the host hung.
    let err = t
        .exec(ExecRequest {
            script: "true",
            stdin: None,
            privileged: false,
            timeout: None,
        })
        .await
        .expect_err("a hung host must fail");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        err.to_string().contains("the SSH connection was lost"),
        "{err}"
    );
}
