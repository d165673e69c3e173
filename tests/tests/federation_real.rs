//! Opt-in: the federation layer against a real Karmada host and real member
//! clusters, given by kubeconfigs. It runs only when
//! `EDGEFORGE_REAL_KARMADA_KUBECONFIG` (the host; its current context, or
//! `EDGEFORGE_REAL_KARMADA_CONTEXT`) and `EDGEFORGE_REAL_MEMBER_KUBECONFIGS`
//! (comma-separated member kubeconfigs, current contexts) are set; otherwise
//! it says that it skipped, and why. `EDGEFORGE_REAL_MODES` (comma-separated
//! `push`/`pull`, one per member; default all `push`) puts members in pull
//! mode: their karmada-agent image must then be pullable there
//! (`EDGEFORGE_REAL_AGENT_IMAGE`, default `docker.io/karmada/karmada-agent`,
//! tag `EDGEFORGE_REAL_AGENT_VERSION`, default v1.18.2).
//!
//! It joins every member, checks each registration is there and Ready as
//! the host sees it, joins again and checks that no step changed anything,
//! then unjoins every member and checks that the host has no Cluster of them
//! and the members no `karmada-cluster` namespace left. Member names on the
//! host are `edgeforge-real-<i>`; unjoin them by hand if the test is
//! interrupted.

mod federation_common;

use federation_common::*;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_status_rejoin_and_unjoin_against_a_real_karmada_host() {
    let (Some(host), Some(members)) = (
        env("EDGEFORGE_REAL_KARMADA_KUBECONFIG"),
        env("EDGEFORGE_REAL_MEMBER_KUBECONFIGS"),
    ) else {
        eprintln!(
            "SKIPPED: no real Karmada host given. Set EDGEFORGE_REAL_KARMADA_KUBECONFIG (and \
             EDGEFORGE_REAL_KARMADA_CONTEXT) and EDGEFORGE_REAL_MEMBER_KUBECONFIGS=a.yaml,b.yaml to \
             run this test against real clusters (see README, Federation)."
        );
        return;
    };
    let members: Vec<&str> = members.split(',').map(str::trim).collect();
    let modes: Vec<String> = env("EDGEFORGE_REAL_MODES")
        .map(|m| m.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let mut inv = format!(
        "apiVersion: edgeforge/v1\nname: edgeforge-real\nfederation:\n  type: karmada\n  kubeconfig: {host}\n  waitTimeout: 300\n"
    );
    if let Some(ctx) = env("EDGEFORGE_REAL_KARMADA_CONTEXT") {
        inv.push_str(&format!("  context: {ctx}\n"));
    }
    inv.push_str(&format!(
        "  agent: {{image: {}, version: {}}}\nsites:\n",
        env("EDGEFORGE_REAL_AGENT_IMAGE")
            .unwrap_or_else(|| "docker.io/karmada/karmada-agent".into()),
        env("EDGEFORGE_REAL_AGENT_VERSION").unwrap_or_else(|| "v1.18.2".into()),
    ));
    for (i, kubeconfig) in members.iter().enumerate() {
        let mode = modes.get(i).map_or("push", String::as_str);
        inv.push_str(&format!(
            "  - name: edgeforge-real-{i}\n    region: real\n    labels: {{edgeforge-test: real}}\n    \
             federation: {{mode: {mode}}}\n    cluster: {{kubeconfig: {kubeconfig}}}\n    \
             nodes: [{{name: real-{i}, role: server, address: 10.254.0.{}}}]\n",
            i + 1
        ));
    }
    let inventory = dir.path().join("real.yaml");
    std::fs::write(&inventory, inv).unwrap();
    let inv = inventory.display().to_string();
    let state = dir.path().join("state");
    let sites: Vec<String> = (0..members.len())
        .map(|i| format!("edgeforge-real-{i}"))
        .collect();
    let site_list = sites.join(",");

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let status = edgeforge(
        &state,
        &["federation", "status", "-i", &inv, "--format", "json"],
    )
    .await;
    assert_eq!(status.code, 0, "{}", status.text());
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for (i, row) in rows.as_array().unwrap().iter().enumerate() {
        assert_eq!(row["registered"], true, "{}", status.stdout);
        assert_eq!(
            row["labels"]["edgeforge.io/site"],
            format!("edgeforge-real-{i}")
        );
        if modes.get(i).is_some_and(|m| m == "pull") {
            assert_eq!(
                row["ready"], "True",
                "a pull site is joined when Ready: {}",
                status.stdout
            );
        }
    }

    let log = dir.path().join("rejoin.jsonl");
    let log_arg = log.display().to_string();
    let again = join(
        &state,
        &inventory,
        &["--log-format", "json", "--log-file", &log_arg],
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.text());
    let changed: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["status"] == "changed")
        .map(|e| format!("{} {}", e["task"], e["step"]))
        .collect();
    assert_eq!(changed, Vec::<String>::new(), "a re-join changes nothing");

    let unjoin = edgeforge(
        &state,
        &["federation", "unjoin", "-i", &inv, "--site", &site_list],
    )
    .await;
    assert_eq!(unjoin.code, 0, "{}", unjoin.text());
    let status = edgeforge(
        &state,
        &["federation", "status", "-i", &inv, "--format", "json"],
    )
    .await;
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["registered"], false, "{}", status.stdout);
    }
    for kubeconfig in &members {
        let conn = edgeforge::kube::connect_file(std::path::Path::new(kubeconfig), None)
            .await
            .unwrap();
        let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(conn.client);
        assert!(
            ns.get_opt("karmada-cluster").await.unwrap().is_none(),
            "{kubeconfig} still has karmada-cluster"
        );
    }
}
