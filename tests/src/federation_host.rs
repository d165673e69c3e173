//! Federation test peers: one kube-emulator instance as the federation host
//! and one per member cluster, sharing a CA, with kubeconfig files and an
//! inventory pointing at them.
//!
//! On a real Karmada host the `cluster.karmada.io/v1alpha1` Cluster is served
//! by karmada-aggregated-apiserver and the policies by karmada-apiserver;
//! KubeFed installs its types as CRDs. Here all of them are registered as
//! CRDs of the emulator (the stand-in for those API servers), with the
//! status subresources, list types and printer columns the real ones have,
//! so kube-rs and kubectl see the same API shape. The controllers behind
//! them (Karmada's cluster-status controller, the karmada-agent) are
//! stand-ins too: [`crate::cluster_status_standin`], [`crate::karmada_agent_standin`].

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::kube_emulator::{Ca, Emulator, EmulatorOptions};

/// A CRD of `kind` in `api_version` (`group/version`), preserving unknown
/// fields (the emulator validates names and immutable fields, not schemas).
pub fn crd(
    api_version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
    printer_columns: Value,
    short_names: &[&str],
) -> Value {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut v = json!({
        "name": version,
        "served": true,
        "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        "additionalPrinterColumns": printer_columns,
    });
    if status {
        v["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.to_lowercase(),
                "listKind": format!("{kind}List"),
                "shortNames": short_names,
            },
            "versions": [v],
        },
    })
}

/// Karmada's resources: Cluster (with the columns `kubectl get clusters`
/// shows on a real host), Work, PropagationPolicy, OverridePolicy.
pub fn karmada_crds() -> Vec<Value> {
    vec![
        crd(
            "cluster.karmada.io/v1alpha1",
            "Cluster",
            "clusters",
            false,
            true,
            json!([
                {"name": "VERSION", "type": "string", "jsonPath": ".status.kubernetesVersion"},
                {"name": "MODE", "type": "string", "jsonPath": ".spec.syncMode"},
                {"name": "READY", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ]),
            &[],
        ),
        crd(
            "work.karmada.io/v1alpha1",
            "Work",
            "works",
            true,
            true,
            json!([]),
            &[],
        ),
        crd(
            "policy.karmada.io/v1alpha1",
            "PropagationPolicy",
            "propagationpolicies",
            true,
            false,
            json!([]),
            &["pp"],
        ),
        crd(
            "policy.karmada.io/v1alpha1",
            "OverridePolicy",
            "overridepolicies",
            true,
            false,
            json!([]),
            &["op"],
        ),
    ]
}

/// KubeFed's resources: KubeFedCluster (with the columns of `kubectl get
/// kubefedclusters`), FederatedNamespace, FederatedDeployment, FederatedService.
pub fn kubefed_crds() -> Vec<Value> {
    let mut crds = vec![crd(
        "core.kubefed.io/v1beta1",
        "KubeFedCluster",
        "kubefedclusters",
        true,
        true,
        json!([
            {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "READY", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        ]),
        &[],
    )];
    for kind in ["Namespace", "Deployment", "Service"] {
        crds.push(crd(
            "types.kubefed.io/v1beta1",
            &format!("Federated{kind}"),
            &format!("federated{}s", kind.to_lowercase()),
            true,
            true,
            json!([]),
            &[],
        ));
    }
    crds
}

/// A host and its members, their kubeconfig files in a temporary directory.
pub struct Federation {
    /// The federation host.
    pub host: Emulator,
    /// The member clusters, one per site.
    pub members: Vec<Emulator>,
    /// Kubeconfigs, inventories, state.
    pub dir: tempfile::TempDir,
}

/// Waits until the emulator's namespace controller has given every namespace
/// its `default` ServiceAccount and `kube-root-ca.crt` (it works through its
/// queue in the background), so snapshots taken before a join are complete.
async fn settled(emulator: &Emulator) -> anyhow::Result<()> {
    let store = emulator.store();
    for _ in 0..1000 {
        let pending = store.list("v1", "namespaces", None).iter().any(|ns| {
            let name = ns["metadata"]["name"].as_str().unwrap_or_default();
            store
                .get("v1", "configmaps", Some(name), "kube-root-ca.crt")
                .is_none()
                || store
                    .get("v1", "serviceaccounts", Some(name), "default")
                    .is_none()
        });
        if !pending {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    anyhow::bail!(
        "the emulator at {} did not fill its namespaces within 10 s",
        emulator.url()
    )
}

impl Federation {
    /// A host with the Karmada and KubeFed resources (and the
    /// `kube-federation-system` namespace KubeFed's install creates) and
    /// `members` members, all on loopback with one CA.
    pub async fn start(members: usize) -> anyhow::Result<Federation> {
        let ca = Ca::generate("federation-test-ca")?;
        let mut crds = karmada_crds();
        crds.extend(kubefed_crds());
        let bind = "127.0.0.1:0".parse()?;
        let host = Emulator::start(
            EmulatorOptions {
                ca: Some(ca.clone()),
                crds,
                ..EmulatorOptions::default()
            },
            bind,
        )
        .await?;
        host.store().create(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "kube-federation-system"}
        }))?;
        let mut list = Vec::with_capacity(members);
        for _ in 0..members {
            list.push(
                Emulator::start(
                    EmulatorOptions {
                        ca: Some(ca.clone()),
                        ..EmulatorOptions::default()
                    },
                    bind,
                )
                .await?,
            );
        }
        for emulator in std::iter::once(&host).chain(&list) {
            settled(emulator).await?;
        }
        let fed = Federation {
            host,
            members: list,
            dir: tempfile::tempdir()?,
        };
        write_private(&fed.host_kubeconfig(), &fed.host.kubeconfig("karmada-host"))?;
        for (i, m) in fed.members.iter().enumerate() {
            write_private(
                &fed.member_kubeconfig(i),
                &m.kubeconfig(&format!("member-{i}")),
            )?;
        }
        Ok(fed)
    }

    /// The host's admin kubeconfig file.
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("host.kubeconfig")
    }

    /// Member `i`'s admin kubeconfig file.
    pub fn member_kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("member-{i}.kubeconfig"))
    }

    /// An inventory of one site per member (`site-<i>`, region `region-<i % 2>`,
    /// zone `zone-<i>`, label `tier: edge`, one server node the federation
    /// layer never connects to), federation `kind` (`karmada`, `kubefed`),
    /// site `i` in `modes[i]` (`push`/`pull`; Karmada only).
    pub fn inventory(&self, kind: &str, modes: &[&str]) -> String {
        let mut y = format!(
            "apiVersion: edgeforge/v1\nname: fed-test\n\
             federation:\n  type: {kind}\n  kubeconfig: {}\n  waitTimeout: 20\n\
             sites:\n",
            self.host_kubeconfig().display()
        );
        for i in 0..self.members.len() {
            y.push_str(&format!(
                "  - name: site-{i}\n    region: region-{}\n    zone: zone-{i}\n    labels: {{tier: edge}}\n",
                i % 2
            ));
            if let Some(mode) = modes.get(i) {
                y.push_str(&format!("    federation: {{mode: {mode}}}\n"));
            }
            y.push_str(&format!(
                "    cluster: {{kubeconfig: {}}}\n    nodes:\n      - {{name: site-{i}-server, role: server, address: 10.200.{}.{}}}\n",
                self.member_kubeconfig(i).display(),
                i / 256,
                i % 256
            ));
        }
        y
    }

    /// Writes `text` as `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Writes a file readable by its owner only (kubeconfigs hold tokens).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A kube-rs client for kubeconfig text (built-in retries off: the tests look at each answer).
pub async fn client(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// A client for `url`, verified against `ca_pem`, authenticating with `token`.
pub async fn token_client(url: &str, ca_pem: &str, token: &str) -> anyhow::Result<kube::Client> {
    let b64 = data_encoding::BASE64.encode(ca_pem.as_bytes());
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {b64}\n\
         users:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        serde_json::Value::String(url.into()),
        serde_json::Value::String(token.into()),
    );
    client(&yaml).await
}
