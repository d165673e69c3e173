//! The `kube-emulator` binary: a stand-in named as one, started out of
//! process the way an embedder or a shell script would, with tokens from a
//! file, CRDs, persisted state, a kubeconfig written 0600 and a reused CA.

mod kube_emulator_common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube_emulator_common::*;

const BIN: &str = env!("CARGO_BIN_EXE_kube-emulator");

/// A running binary and the URL it printed.
struct Running {
    child: Child,
    url: String,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the binary prints its URL");
        Running {
            child,
            url: line.trim().to_string(),
        }
    }

    /// SIGTERM, then wait: the binary stops cleanly.
    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = self.child.wait().expect("the binary exits");
        assert!(status.success(), "SIGTERM ends it with success: {status:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn help_names_it_a_stand_in() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("STAND-IN for a Kubernetes API server"),
        "{help}"
    );
    for flag in [
        "--listen",
        "--san",
        "--token",
        "--token-file",
        "--state",
        "--crd",
        "--kubeconfig-out",
        "--ca-cert",
        "--ca-key",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_tokens_crds_state_and_a_private_kubeconfig_and_reuses_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        path("tokens"),
        "# test tokens\nt-reader:reader:readers\nt-admin:root:system:masters\n",
    )
    .unwrap();
    std::fs::write(
        path("crd.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.com}\nspec:\n  group: example.com\n  scope: Cluster\n  names: {plural: gadgets, kind: Gadget}\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]\n",
    )
    .unwrap();
    let (kubeconfig, state, tokens, crd) = (
        path("kubeconfig"),
        path("state.json"),
        path("tokens"),
        path("crd.yaml"),
    );
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &tokens,
        "--crd",
        &crd,
        "--state",
        &state,
        "--kubeconfig-out",
        &kubeconfig,
    ];
    let running = Running::start(&args);
    assert!(
        running.url.starts_with("https://127.0.0.1:"),
        "{}",
        running.url
    );
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&running.url));
    let admin = client_from(&text).await;
    let gadgets = Api::<DynamicObject>::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", "v1", "Gadget"),
            "gadgets",
        ),
    );
    gadgets
        .list(&ListParams::default())
        .await
        .expect("the CRD from --crd is served");
    let cm: ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "kept"}, "data": {"k": "v"}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let uid = Api::<Namespace>::all(admin.clone())
        .get("default")
        .await
        .unwrap()
        .metadata
        .uid;
    // A token from the file authenticates as its user and groups.
    let root = client_from(&text.replace(&token_in(&text), "t-root-does-not-exist")).await;
    assert_eq!(
        status_of(Api::<Namespace>::all(root).get("default").await).code,
        401
    );
    let from_file = client_from(&text.replace(&token_in(&text), "t-admin")).await;
    Api::<Namespace>::all(from_file)
        .get("default")
        .await
        .expect("a token from --token-file in system:masters");
    let reader = client_from(&text.replace(&token_in(&text), "t-reader")).await;
    let denied = status_of(Api::<Namespace>::all(reader).get("default").await);
    assert!(
        denied.message.contains("User \"reader\""),
        "{}",
        denied.message
    );
    let ca_pem = String::from_utf8(
        data_encoding::BASE64
            .decode(ca_data_in(&text).as_bytes())
            .unwrap(),
    )
    .unwrap();
    running.stop();

    // Restart on the same state file with a CA given by file: objects and UIDs survive, the CA is the one given.
    let first = edgeforge_tests::kube_emulator::Ca::generate("given").unwrap();
    std::fs::write(path("ca.crt"), first.cert_pem()).unwrap();
    std::fs::write(path("ca.key"), first.key_pem()).unwrap();
    let (ca_crt, ca_key) = (path("ca.crt"), path("ca.key"));
    let args = [
        "--state",
        &state,
        "--kubeconfig-out",
        &kubeconfig,
        "--ca-cert",
        &ca_crt,
        "--ca-key",
        &ca_key,
    ];
    let running = Running::start(&args);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let reused = String::from_utf8(
        data_encoding::BASE64
            .decode(ca_data_in(&text).as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reused, first.cert_pem());
    assert_ne!(reused, ca_pem);
    let admin = client_from(&text).await;
    assert_eq!(
        Api::<Namespace>::all(admin.clone())
            .get("default")
            .await
            .unwrap()
            .metadata
            .uid,
        uid
    );
    assert_eq!(
        Api::<ConfigMap>::namespaced(admin, "default")
            .get("kept")
            .await
            .unwrap()
            .data
            .unwrap()["k"],
        "v"
    );
    running.stop();
}

fn token_in(kubeconfig: &str) -> String {
    field_in(kubeconfig, "token:").trim_matches('"').to_string()
}

fn ca_data_in(kubeconfig: &str) -> String {
    field_in(kubeconfig, "certificate-authority-data:")
}

fn field_in(kubeconfig: &str, key: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{key} in the kubeconfig"))
}
