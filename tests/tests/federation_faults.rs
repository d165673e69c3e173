//! Joins against a failing federation host or member (kube-emulator
//! stand-ins with armed faults): 5xx answers and dropped connections are
//! retried with backoff and the join completes; a host that keeps failing,
//! an expired token, an unreachable host end in a clear error that names
//! the API and its kubeconfig, and a re-run resumes to a complete
//! registration (never a Cluster without its credentials). No token or CA
//! bundle appears in anything edgeforge prints or keeps outside its 0600
//! outputs. kube-rs's own retry layer is off in edgeforge, so each armed
//! failure reaches edgeforge's retries (6 attempts per call); the faults
//! below are more than kube-rs's documented default of 3 retries would
//! absorb.

mod federation_common;

use edgeforge_tests::federation_host::Federation;
use edgeforge_tests::kube_emulator::RequestFilter;
use federation_common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundreds_and_dropped_connections_are_retried_until_the_apis_recover() {
    let fed = Federation::start(1).await.unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let host = fed.host.faults();
    host.fail_next(
        5,
        503,
        RequestFilter::new("PATCH", "/apis/cluster.karmada.io/"),
    );
    host.fail_next(
        4,
        500,
        RequestFilter::new("GET", "/apis/cluster.karmada.io/"),
    );
    host.drop_next(
        4,
        RequestFilter::new("PATCH", "/api/v1/namespaces/karmada-cluster/secrets"),
    );
    let member = fed.members[0].faults();
    member.fail_next(
        5,
        503,
        RequestFilter::new("GET", "/api/v1/namespaces/kube-system"),
    );
    member.drop_next(
        5,
        RequestFilter::new("PATCH", "/apis/rbac.authorization.k8s.io/"),
    );

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let failed = |emu: &edgeforge_tests::kube_emulator::Emulator, status: u16| {
        emu.requests().iter().filter(|r| r.status == status).count()
    };
    assert_eq!(
        failed(&fed.host, 503),
        5,
        "every armed 503 was met and retried"
    );
    assert_eq!(failed(&fed.host, 500), 4);
    assert_eq!(failed(&fed.host, 0), 4, "every armed drop was met");
    assert_eq!(failed(&fed.members[0], 503), 5);
    assert_eq!(failed(&fed.members[0], 0), 5);
    let cluster = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-0",
    );
    assert_eq!(
        cluster["spec"]["id"],
        get(&fed.members[0], "v1", "Namespace", None, "kube-system")["metadata"]["uid"]
    );
    for name in ["site-0", "site-0-impersonator"] {
        let secret = get(&fed.host, "v1", "Secret", Some("karmada-cluster"), name);
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["uid"],
            cluster["metadata"]["uid"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_keeps_failing_ends_in_a_clear_error_and_a_rerun_completes_the_registration() {
    let fed = Federation::start(1).await.unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    fed.host.faults().fail_next(
        1000,
        503,
        RequestFilter::new("PATCH", "/apis/cluster.karmada.io/"),
    );

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    let out = run.text();
    assert!(
        out.contains("applying Cluster site-0 on the federation host")
            && out.contains("failed 6 times")
            && out.contains(&fed.host.url())
            && out.contains(&fed.host_kubeconfig().display().to_string()),
        "the error says what failed, where, how often and through which kubeconfig: {out}"
    );
    assert!(
        fed.host
            .store()
            .get("cluster.karmada.io/v1alpha1", "Cluster", None, "site-0")
            .is_none(),
        "no Cluster was registered"
    );
    let inv = inventory.display().to_string();
    let status = edgeforge(
        &state,
        &["federation", "status", "-i", &inv, "--format", "json"],
    )
    .await;
    let rows: serde_json::Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|_| panic!("{}", status.text()));
    assert_eq!(rows[0]["registered"], false);

    fed.host.faults().clear();
    let again = join(&state, &inventory, &[]).await;
    assert_eq!(again.code, 0, "{}", again.text());
    let cluster = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-0",
    );
    for name in ["site-0", "site-0-impersonator"] {
        let secret = get(&fed.host, "v1", "Secret", Some("karmada-cluster"), name);
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["uid"], cluster["metadata"]["uid"],
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_names_the_kubeconfig_and_context_and_is_not_retried() {
    let fed = Federation::start(1).await.unwrap();
    let context_inventory = fed.inventory("karmada", &["push"]).replace(
        "  waitTimeout: 20\n",
        "  waitTimeout: 20\n  context: karmada-host\n",
    );
    let inventory = fed.write("inv.yaml", &context_inventory).unwrap();
    let state = fed.dir.path().join("state");
    let member_before = snapshot(&fed.members[0]);
    fed.host.faults().expire_token(&fed.host.admin_token());
    fed.host.clear_requests();

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    let out = run.text();
    assert!(
        out.contains("401 Unauthorized")
            && out.contains(&format!(
                "{} (context karmada-host)",
                fed.host_kubeconfig().display()
            ))
            && out.contains("renew it"),
        "{out}"
    );
    assert!(
        !out.contains(&fed.host.admin_token()),
        "the token is not printed"
    );
    let refused = fed
        .host
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert_eq!(refused, 1, "a refused credential is not retried");
    assert_eq!(
        snapshot(&fed.members[0]),
        member_before,
        "nothing was written on the member"
    );

    // The member's credential expiring says which site's kubeconfig.
    let fed = Federation::start(1).await.unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push"]))
        .unwrap();
    fed.members[0]
        .faults()
        .expire_token(&fed.members[0].admin_token());
    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.text().contains("cluster of site site-0")
            && run
                .text()
                .contains(&fed.member_kubeconfig(0).display().to_string()),
        "{}",
        run.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_clearly_after_retries() {
    let fed = Federation::start(1).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dead = fed
        .host
        .kubeconfig("dead")
        .replace(&fed.host.url(), &format!("https://127.0.0.1:{port}"));
    let dead_path = fed.write("dead.kubeconfig", &dead).unwrap();
    let inv = fed.inventory("karmada", &["push"]).replace(
        &fed.host_kubeconfig().display().to_string(),
        &dead_path.display().to_string(),
    );
    let inventory = fed.write("inv.yaml", &inv).unwrap();
    let state = fed.dir.path().join("state");
    let member_before = snapshot(&fed.members[0]);

    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    let out = run.text();
    assert!(
        out.contains(&format!("https://127.0.0.1:{port}"))
            && out.contains("failed 6 times")
            && out.contains("unreachable"),
        "{out}"
    );
    assert_eq!(
        snapshot(&fed.members[0]),
        member_before,
        "the member was not touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_ca_bundles_never_appear_in_output_logs_or_journals() {
    let fed = Federation::start(2).await.unwrap();
    let _agents = edgeforge_tests::karmada_agent_standin::KarmadaAgentStandin::start(&fed.members);
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push", "pull"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let log = fed.dir.path().join("run.jsonl");
    let log_arg = log.display().to_string();
    let run = join(
        &state,
        &inventory,
        &["-v", "--log-format", "json", "--log-file", &log_arg],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.text());
    // A second, failing run puts an error into the log too.
    fed.host.faults().fail_next(
        1000,
        500,
        RequestFilter::new("GET", "/api/v1/namespaces/karmada-cluster/secrets"),
    );
    let failing = join(&state, &inventory, &["-v", "--diff"]).await;
    assert_eq!(failing.code, 1, "{}", failing.text());

    let mut secrets = Vec::new();
    for (emu, ns, name) in [
        (&fed.members[0], "karmada-cluster", "karmada-site-0"),
        (&fed.members[0], "karmada-cluster", "karmada-impersonator"),
        (&fed.host, "karmada-cluster", "karmada-agent-site-1"),
    ] {
        secrets.push(secret_data(
            &get(emu, "v1", "Secret", Some(ns), name),
            "token",
        ));
    }
    let ca_body = |pem: &str| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    secrets.push(ca_body(&fed.members[0].ca().cert_pem()));
    let mut seen = vec![
        run.stdout.clone(),
        run.stderr.clone(),
        failing.stdout.clone(),
        failing.stderr.clone(),
        std::fs::read_to_string(&log).unwrap(),
    ];
    let root = state.join("edgeforge").join("fed-test");
    for entry in walk(&root.join("journal")) {
        seen.push(std::fs::read_to_string(entry).unwrap_or_default());
    }
    assert!(
        seen[4].contains("site/site-1/agent-access"),
        "the log has the run"
    );
    for text in &seen {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret leaked into:\n{text}");
        }
    }
    // Outputs keep them, readable by the owner only.
    use std::os::unix::fs::PermissionsExt;
    let outputs: Vec<_> = walk(&root.join("outputs"));
    assert!(!outputs.is_empty());
    for o in outputs {
        assert_eq!(
            std::fs::metadata(&o).unwrap().permissions().mode() & 0o077,
            0,
            "{}",
            o.display()
        );
    }
    let credentials =
        std::fs::read_to_string(root.join("outputs").join("site_site-0_credentials.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&credentials).unwrap();
    assert_eq!(parsed["outputs"]["token"]["secret"], json!(true));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_without_tls_verification_is_refused_unless_the_inventory_allows_it() {
    let fed = Federation::start(1).await.unwrap();
    let member = fed.members[0].kubeconfig("member-0");
    let insecure: String = member
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("certificate-authority-data:") {
                "    insecure-skip-tls-verify: true".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    edgeforge_tests::federation_host::write_private(&fed.member_kubeconfig(0), &insecure).unwrap();
    let inventory = fed
        .write("inv.yaml", &fed.inventory("karmada", &["push"]))
        .unwrap();
    let state = fed.dir.path().join("state");
    let run = join(&state, &inventory, &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    assert!(
        run.text().contains("turns TLS verification off")
            && run
                .text()
                .contains(&fed.member_kubeconfig(0).display().to_string()),
        "{}",
        run.text()
    );
    assert!(
        fed.host
            .store()
            .get("cluster.karmada.io/v1alpha1", "Cluster", None, "site-0")
            .is_none()
    );

    let allowed = fed.inventory("karmada", &["push"]).replace(
        "    cluster: {kubeconfig:",
        "    cluster: {insecureSkipTLSVerify: true, kubeconfig:",
    );
    let inventory = fed.write("allowed.yaml", &allowed).unwrap();
    let inv = inventory.display().to_string();
    let check = edgeforge(&state, &["check", "-i", &inv]).await;
    assert!(
        check
            .stderr
            .contains("TLS verification of site `site-0`'s cluster is off"),
        "{}",
        check.text()
    );
    let run = join(&state, &inventory, &["-v"]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    assert!(
        run.text().contains("TLS verification of"),
        "the run warns: {}",
        run.text()
    );
    let cluster = get(
        &fed.host,
        "cluster.karmada.io/v1alpha1",
        "Cluster",
        None,
        "site-0",
    );
    assert_eq!(
        cluster["spec"]["insecureSkipTLSVerification"], true,
        "as karmadactl records it"
    );
}
