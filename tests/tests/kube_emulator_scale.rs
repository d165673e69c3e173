//! One test process runs a federation's worth of kube-emulator stand-ins: a
//! host plus 1000 members sharing one CA, each answering an authenticated
//! request, without a thread per instance.

mod kube_emulator_common;

use edgeforge_tests::kube_emulator::{Ca, EmulatorOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube_emulator_common::*;

const MEMBERS: usize = 1000;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_and_a_thousand_members_run_in_one_process_without_a_thread_each() {
    let ca = Ca::generate("federation-ca").unwrap();
    let options = EmulatorOptions {
        ca: Some(ca),
        ..Default::default()
    };
    let host = start_with(options.clone()).await;
    let threads_before = threads();
    let rss_before = rss_kib();
    let mut members = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        members.push(start_with(options.clone()).await);
    }
    let rss_started = rss_kib();
    let threads_started = threads();
    for member in &members {
        let client = admin(member).await;
        let ns = Api::<Namespace>::all(client)
            .get("kube-system")
            .await
            .expect("each member answers");
        assert_eq!(ns.metadata.name.as_deref(), Some("kube-system"));
    }
    Api::<Namespace>::all(admin(&host).await)
        .get("default")
        .await
        .unwrap();
    let mut ports: Vec<u16> = members.iter().map(|m| m.addr().port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), MEMBERS, "each member has its own port");
    let threads_after = threads();
    eprintln!(
        "kube-emulator scale: {MEMBERS} members; threads {threads_before} -> {threads_started} started -> {threads_after} after a request each; \
         RSS {rss_before} KiB -> {rss_started} KiB started ({} KiB per member) -> {} KiB after",
        (rss_started.saturating_sub(rss_before)) / MEMBERS as u64,
        rss_kib()
    );
    // Tasks, not threads: tokio's fixed workers (plus its small blocking pool, used by DNS-free
    // connects and file I/O) serve every instance.
    assert!(
        threads_after < threads_before + 32,
        "threads grew from {threads_before} to {threads_after}"
    );
    // Small per instance: objects, history and TLS state, well under a MiB each (about 225 KiB measured).
    let per_member = rss_started.saturating_sub(rss_before) / MEMBERS as u64;
    assert!(per_member < 1024, "{per_member} KiB per member");
    for member in members {
        member.shutdown().await;
    }
}
