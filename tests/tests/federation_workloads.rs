//! `edgeforge federate` with the app file that ships in inventory/ (the
//! federated nginx of the original design notes) against the emulated
//! federation host (kube-emulator stand-in with the Karmada and KubeFed
//! types as CRDs): the exact PropagationPolicy and OverridePolicy, or
//! FederatedNamespace, FederatedDeployment and FederatedService, that it
//! renders and applies; what the overrides make of the Deployment on the
//! overridden site; `--dry-run`; a second run writing nothing; and
//! `edgeforge check --app` reporting a broken app file with file:line:col.

mod federation_common;

use std::path::PathBuf;

use edgeforge_tests::federation_host::Federation;
use federation_common::*;
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inventory")
        .join(name)
}

/// The shipped example inventory, pointed at the emulated host.
fn inventory(fed: &Federation, name: &str, kubeconfig: &str) -> PathBuf {
    let text = std::fs::read_to_string(example(name)).unwrap();
    assert!(text.contains(kubeconfig), "{name} names {kubeconfig}");
    let text = text.replace(kubeconfig, &fed.host_kubeconfig().display().to_string());
    fed.write(name, &text).unwrap()
}

/// The plain nginx Deployment of the app file, in namespace demo.
fn nginx() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "demo", "labels": {"app": "nginx"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.17"}]}}}})
}

fn service_spec() -> Value {
    json!({"type": "LoadBalancer", "selector": {"app": "nginx"},
        "ports": [{"name": "http", "port": 80, "targetPort": 80}]})
}

/// The rendered objects `--dry-run` prints, parsed.
fn documents(stdout: &str) -> Vec<Value> {
    stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notes_nginx_becomes_karmada_propagation_and_override_policies() {
    let fed = Federation::start(0).await.unwrap();
    let inv = inventory(&fed, "federation.yaml", "~/.kube/karmada-host.kubeconfig");
    let inv = inv.display().to_string();
    let app = example("nginx-app.yaml").display().to_string();
    let state = fed.dir.path().join("state");

    let dry = edgeforge(&state, &["federate", "-i", &inv, "-f", &app, "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.text());
    assert_eq!(
        writes(&fed.host),
        Vec::<String>::new(),
        "--dry-run writes nothing"
    );
    let rendered = documents(&dry.stdout);

    let run = edgeforge(&state, &["federate", "-i", &inv, "-f", &app]).await;
    assert_eq!(run.code, 0, "{}", run.text());
    let override_policy = json!({"apiVersion": "policy.karmada.io/v1alpha1", "kind": "OverridePolicy",
    "metadata": {"name": "nginx", "namespace": "demo"},
    "spec": {
        "resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}],
        "overrideRules": [{
            "targetCluster": {"clusterNames": ["chengdu-dev"]},
            "overriders": {
                "plaintext": [
                    {"path": "/spec/replicas", "operator": "replace", "value": 3},
                    {"path": "/metadata/annotations", "operator": "add", "value": {"foo": "bar"}},
                    {"path": "/metadata/annotations/foo", "operator": "remove"},
                ],
                "imageOverrider": [{
                    "predicate": {"path": "/spec/template/spec/containers/0/image"},
                    "component": "Tag", "operator": "replace", "value": "1.14.0-alpine",
                }],
            },
        }],
    }});
    let propagation_policy = json!({"apiVersion": "policy.karmada.io/v1alpha1", "kind": "PropagationPolicy",
    "metadata": {"name": "nginx", "namespace": "demo"},
    "spec": {
        "resourceSelectors": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"},
            {"apiVersion": "v1", "kind": "Service", "name": "nginx"},
        ],
        "placement": {
            "clusterAffinity": {"clusterNames": ["shanghai-01", "chengdu-dev"]},
            "replicaScheduling": {"replicaSchedulingType": "Duplicated"},
        },
    }});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nginx", "namespace": "demo", "labels": {"app": "nginx"}},
        "spec": service_spec()});
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}});
    assert_eq!(
        rendered,
        [
            namespace,
            override_policy.clone(),
            propagation_policy.clone(),
            nginx(),
            service.clone()
        ],
        "policies before the resources they select"
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "policy.karmada.io/v1alpha1",
            "OverridePolicy",
            Some("demo"),
            "nginx"
        )),
        override_policy
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "policy.karmada.io/v1alpha1",
            "PropagationPolicy",
            Some("demo"),
            "nginx"
        )),
        propagation_policy
    );
    let mut deployment = user_fields(get(
        &fed.host,
        "apps/v1",
        "Deployment",
        Some("demo"),
        "nginx",
    ));
    deployment["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    assert_eq!(deployment, nginx(), "the resource template as written");
    let mut live_service = user_fields(get(&fed.host, "v1", "Service", Some("demo"), "nginx"));
    // What the API server defaults is not the app's.
    live_service["spec"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| ["type", "selector", "ports"].contains(&k.as_str()));
    for port in live_service["spec"]["ports"].as_array_mut().unwrap() {
        port.as_object_mut().unwrap().remove("protocol");
    }
    assert_eq!(live_service, service);

    fed.host.clear_requests();
    let again = edgeforge(&state, &["federate", "-i", &inv, "-f", &app]).await;
    assert_eq!(again.code, 0, "{}", again.text());
    assert_eq!(
        writes(&fed.host),
        Vec::<String>::new(),
        "a second federate writes nothing"
    );
    assert!(again.stdout.contains("0 written"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notes_nginx_becomes_kubefed_federated_objects_whose_overrides_give_the_walk_through_result()
 {
    let fed = Federation::start(0).await.unwrap();
    let inv = inventory(&fed, "kubefed.yaml", "~/.kube/kubefed-host.kubeconfig");
    let inv = inv.display().to_string();
    let app = example("nginx-app.yaml").display().to_string();
    let state = fed.dir.path().join("state");
    let run = edgeforge(&state, &["federate", "-i", &inv, "-f", &app]).await;
    assert_eq!(run.code, 0, "{}", run.text());

    let placement = json!({"clusters": [{"name": "shanghai-01"}, {"name": "chengdu-dev"}]});
    assert_eq!(
        user_fields(get(
            &fed.host,
            "types.kubefed.io/v1beta1",
            "FederatedNamespace",
            Some("demo"),
            "demo"
        )),
        json!({"apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedNamespace",
            "metadata": {"name": "demo", "namespace": "demo"}, "spec": {"placement": placement}}),
    );
    let template = json!({"metadata": {"labels": {"app": "nginx"}}, "spec": nginx()["spec"]});
    let overrides = json!([{"clusterName": "chengdu-dev", "clusterOverrides": [
        {"path": "/spec/replicas", "value": 3},
        {"path": "/spec/template/spec/containers/0/image", "value": "nginx:1.14.0-alpine"},
        {"path": "/metadata/annotations", "op": "add", "value": {"foo": "bar"}},
        {"path": "/metadata/annotations/foo", "op": "remove"},
    ]}]);
    let fd = user_fields(get(
        &fed.host,
        "types.kubefed.io/v1beta1",
        "FederatedDeployment",
        Some("demo"),
        "nginx",
    ));
    assert_eq!(
        fd,
        json!({"apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedDeployment",
            "metadata": {"name": "nginx", "namespace": "demo"},
            "spec": {"template": template, "placement": placement, "overrides": overrides}}),
    );
    assert_eq!(
        user_fields(get(
            &fed.host,
            "types.kubefed.io/v1beta1",
            "FederatedService",
            Some("demo"),
            "nginx"
        )),
        json!({"apiVersion": "types.kubefed.io/v1beta1", "kind": "FederatedService",
            "metadata": {"name": "nginx", "namespace": "demo"},
            "spec": {"template": {"metadata": {"labels": {"app": "nginx"}}, "spec": service_spec()}, "placement": placement}}),
    );
    assert!(
        fed.host
            .store()
            .get("apps/v1", "Deployment", Some("demo"), "nginx")
            .is_none(),
        "KubeFed takes templates inside the federated objects, not plain Deployments"
    );

    // What KubeFed's sync controller makes of the overrides on chengdu-dev
    // (a missing `op` means replace): 3 replicas of nginx:1.14.0-alpine, the
    // annotation added and removed again.
    let ops: Vec<Value> = overrides[0]["clusterOverrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let mut op =
                json!({"op": o.get("op").cloned().unwrap_or(json!("replace")), "path": o["path"]});
            if let Some(v) = o.get("value") {
                op["value"] = v.clone();
            }
            op
        })
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
    let mut on_chengdu = template.clone();
    json_patch::patch(&mut on_chengdu, &patch).unwrap();
    assert_eq!(on_chengdu["spec"]["replicas"], 3);
    assert_eq!(
        on_chengdu["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.14.0-alpine"
    );
    assert_eq!(on_chengdu["metadata"]["annotations"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_the_shipped_app_and_locates_every_problem_of_a_broken_one() {
    let fed = Federation::start(0).await.unwrap();
    let state = fed.dir.path().join("state");
    for inv in ["federation.yaml", "kubefed.yaml"] {
        let inv = example(inv).display().to_string();
        let app = example("nginx-app.yaml").display().to_string();
        let ok = edgeforge(&state, &["check", "-i", &inv, "--app", &app]).await;
        assert_eq!(ok.code, 0, "{}", ok.text());
        assert!(ok.stdout.contains("nginx-app.yaml: ok"), "{}", ok.text());
    }
    let broken = std::fs::read_to_string(example("nginx-app.yaml"))
        .unwrap()
        .replace(
            "sites: [shanghai-01, chengdu-dev]",
            "sites: [shanghai-01, lhasa-01]",
        )
        .replace(
            "{op: remove, path: /metadata/annotations/foo}",
            "{op: delete, path: metadata/annotations/foo}",
        );
    let line_of = |needle: &str| 1 + broken.lines().position(|l| l.contains(needle)).unwrap();
    let (site_line, op_line) = (line_of("lhasa-01"), line_of("op: delete"));
    let broken = fed.write("broken-app.yaml", &broken).unwrap();
    let inv = example("federation.yaml").display().to_string();
    let b = broken.display().to_string();
    let run = edgeforge(&state, &["check", "-i", &inv, "--app", &b]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(": error:"))
        .collect();
    let at = |needle: &str| {
        errors
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {errors:?}"))
            .to_string()
    };
    assert!(
        at("lhasa-01").starts_with(&format!("{b}:{site_line}:")),
        "{errors:?}"
    );
    assert!(
        at("`op: delete`").starts_with(&format!("{b}:{op_line}:")),
        "{errors:?}"
    );
    assert!(
        at("not a JSON pointer").starts_with(&format!("{b}:{op_line}:")),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 4, "each problem once: {errors:?}");
    assert!(
        at("chengdu-dev").contains("which `placement` does not select"),
        "{errors:?}"
    );
    let federate = edgeforge(&state, &["federate", "-i", &inv, "-f", &b, "--dry-run"]).await;
    assert_eq!(
        federate.code,
        2,
        "federate refuses it too: {}",
        federate.text()
    );
}
