//! The Node a k3s server or agent registers, as the kubelet and k3s write it:
//! labels (`kubernetes.io/hostname`, `os`/`arch` with their `beta.` twins,
//! `node.kubernetes.io/instance-type=k3s`, the roles of a server, the
//! config's `node-label`s and `node-taint`s, both applied only when the Node
//! is first registered, as in k3s), annotations (`k3s.io/node-args`,
//! `k3s.io/node-config-hash`, `k3s.io/node-env`, `k3s.io/hostname`,
//! `k3s.io/internal-ip`/`external-ip`, and for an etcd member
//! `etcd.k3s.cattle.io/node-name`/`node-address`), addresses from `node-ip` /
//! `node-external-ip`, and `nodeInfo` whose `kubeletVersion` is the binary's
//! version. Registration goes through the Kubernetes API with the kubelet's
//! client certificate, which the supervisor issues only against the node
//! password (`/etc/rancher/node/password`).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::{Auth, ClientError, Server};
use super::log;

/// Annotation naming a server's etcd member.
pub const ETCD_NAME_ANNOTATION: &str = "etcd.k3s.cattle.io/node-name";
/// Annotation with a server's etcd address.
pub const ETCD_ADDRESS_ANNOTATION: &str = "etcd.k3s.cattle.io/node-address";
/// Role label of servers.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// Role label of embedded-etcd servers.
pub const ETCD_LABEL: &str = "node-role.kubernetes.io/etcd";

/// What a node process registers.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name (hostname unless `node-name`).
    pub name: String,
    /// A server (control-plane and master roles).
    pub server: bool,
    /// The etcd member name and address of a server with embedded etcd.
    pub etcd: Option<(String, String)>,
    /// The binary's k3s version (`v1.34.2+k3s1`).
    pub version: String,
    /// `node-label` values (`key=value`).
    pub labels: Vec<String>,
    /// `node-taint` values (`key=value:Effect`).
    pub taints: Vec<String>,
    /// `node-ip` values (first is the primary).
    pub internal_ips: Vec<String>,
    /// `node-external-ip` values.
    pub external_ips: Vec<String>,
    /// `k3s.io/node-args`, the command line after config merge (secrets masked).
    pub node_args: Vec<String>,
    /// The flannel backend (`vxlan`, `none`, ...).
    pub flannel_backend: String,
}

impl NodeSpec {
    /// `k3s.io/node-env`: the K3S_* environment with secrets masked.
    fn node_env(&self) -> Value {
        let mut env = serde_json::Map::new();
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("K3S_"))
            .collect();
        vars.sort();
        for (k, v) in vars {
            let secret =
                k.contains("TOKEN") || k.contains("SECRET") || k == "K3S_DATASTORE_ENDPOINT";
            env.insert(k, json!(if secret { "********".to_string() } else { v }));
        }
        Value::Object(env)
    }

    /// The labels set on every registration (k3s and kubelet own these).
    fn owned_labels(&self) -> serde_json::Map<String, Value> {
        let arch = arch();
        let mut labels = serde_json::Map::new();
        for (k, v) in [
            ("beta.kubernetes.io/arch", arch),
            ("beta.kubernetes.io/instance-type", "k3s"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch),
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "k3s"),
        ] {
            labels.insert(k.into(), json!(v));
        }
        if self.server {
            labels.insert(CONTROL_PLANE_LABEL.into(), json!("true"));
            labels.insert("node-role.kubernetes.io/master".into(), json!("true"));
        }
        if self.etcd.is_some() {
            labels.insert(ETCD_LABEL.into(), json!("true"));
        }
        labels
    }

    /// Annotations refreshed on every start.
    fn annotations(&self) -> serde_json::Map<String, Value> {
        let args = serde_json::to_string(&self.node_args).unwrap_or_default();
        let env = self.node_env().to_string();
        let digest = Sha256::digest(format!("{args}{env}").as_bytes());
        let mut a = serde_json::Map::new();
        a.insert("k3s.io/node-args".into(), json!(args));
        a.insert("k3s.io/node-env".into(), json!(env));
        a.insert(
            "k3s.io/node-config-hash".into(),
            json!(data_encoding::BASE32.encode(&digest)),
        );
        a.insert("k3s.io/hostname".into(), json!(self.name));
        a.insert(
            "k3s.io/internal-ip".into(),
            json!(self.internal_ips.join(",")),
        );
        if !self.external_ips.is_empty() {
            a.insert(
                "k3s.io/external-ip".into(),
                json!(self.external_ips.join(",")),
            );
        }
        a.insert(
            "flannel.alpha.coreos.com/backend-type".into(),
            json!(self.flannel_backend),
        );
        if let Some(ip) = self.external_ips.first().or(self.internal_ips.first()) {
            a.insert("flannel.alpha.coreos.com/public-ip".into(), json!(ip));
        }
        if let Some((member, address)) = &self.etcd {
            a.insert(ETCD_NAME_ANNOTATION.into(), json!(member));
            a.insert(ETCD_ADDRESS_ANNOTATION.into(), json!(address));
        }
        a
    }

    /// The Node a first registration creates.
    fn new_object(&self) -> Value {
        let mut labels = self.owned_labels();
        for label in &self.labels {
            let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
            labels.insert(k.to_string(), json!(v));
        }
        let taints: Vec<Value> = self.taints.iter().map(|t| taint(t)).collect();
        let mut spec = json!({});
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": self.annotations()},
            "spec": spec,
        })
    }

    /// The status the kubelet posts (Ready only once `ready`).
    fn status(&self, ready: bool) -> Value {
        let now = now();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let mut addresses: Vec<Value> = self
            .internal_ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .collect();
        addresses.extend(
            self.external_ips
                .iter()
                .map(|ip| json!({"type": "ExternalIP", "address": ip})),
        );
        addresses.push(json!({"type": "Hostname", "address": self.name}));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory = read_first_number("/proc/meminfo", "MemTotal:").unwrap_or(1_048_576);
        let resources = json!({"cpu": cpus.to_string(), "memory": format!("{memory}Ki"),
                               "pods": "110", "ephemeral-storage": "10Gi"});
        json!({
            "status": {
                "addresses": addresses,
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    if ready {
                        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
                    } else {
                        condition("Ready", "False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
                    },
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": arch(),
                    "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
                    "containerRuntimeVersion": "containerd://2.1.5-k3s1",
                    "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
                    "kubeProxyVersion": self.version,
                    "kubeletVersion": self.version,
                    "machineID": read_trimmed("/etc/machine-id"),
                    "operatingSystem": "linux",
                    "osImage": os_image(),
                    "systemUUID": read_trimmed("/etc/machine-id"),
                },
            }
        })
    }
}

/// Registers (or re-registers) the Node through the API at `api`, NotReady until [`mark_ready`].
pub async fn register(api: &Server, spec: &NodeSpec) -> Result<(), ClientError> {
    let path = format!("/api/v1/nodes/{}", spec.name);
    match api.get(&path, &Auth::None).await {
        Ok(_) => {
            let patch = json!({"metadata": {"labels": spec.owned_labels(), "annotations": spec.annotations()}});
            patch_node(api, &path, &patch).await?;
            log::info(format!(
                "Node {} already registered; updated its annotations",
                spec.name
            ));
        }
        Err(e) if e.code() == Some(404) => {
            let object = spec.new_object().to_string().into_bytes();
            api.send(
                reqwest::Method::POST,
                "/api/v1/nodes",
                &Auth::None,
                &[],
                Some(("application/json", object)),
            )
            .await?;
            log::info(format!("Successfully registered node {}", spec.name));
        }
        Err(e) => return Err(e),
    }
    patch_node(api, &format!("{path}/status"), &spec.status(false)).await
}

/// Marks the Node Ready after `delay` (the kubelet's first ready status).
pub async fn mark_ready(api: &Server, spec: &NodeSpec, delay: Duration) -> Result<(), ClientError> {
    tokio::time::sleep(delay).await;
    let path = format!("/api/v1/nodes/{}/status", spec.name);
    patch_node(api, &path, &spec.status(true)).await?;
    log::info(format!("Node {} is Ready", spec.name));
    Ok(())
}

async fn patch_node(api: &Server, path: &str, patch: &Value) -> Result<(), ClientError> {
    let body = patch.to_string().into_bytes();
    api.send(
        reqwest::Method::PATCH,
        path,
        &Auth::None,
        &[],
        Some(("application/strategic-merge-patch+json", body)),
    )
    .await
    .map(|_| ())
}

/// This node's password: read from `file`, or created (0600) as k3s does on first start.
pub fn node_password(file: &Path) -> std::io::Result<String> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let text = text.trim();
        if !text.is_empty() {
            return Ok(text.to_string());
        }
    }
    let password = super::tokens::random_secret();
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    super::write_private(file, password.as_bytes())?;
    Ok(password)
}

/// Asks the supervisor for the kubelet's client certificate (CN=system:node:NAME, O=system:nodes).
pub async fn kubelet_certificate(
    supervisor: &Server,
    auth: &Auth,
    node: &str,
    password: &str,
) -> Result<(String, String), ClientError> {
    let body = supervisor
        .send(
            reqwest::Method::GET,
            "/v1-k3s/client-kubelet.crt",
            auth,
            &[
                ("k3s-Node-Name", node.to_string()),
                ("k3s-Node-Password", password.to_string()),
            ],
            None,
        )
        .await?;
    let pem = String::from_utf8_lossy(&body).into_owned();
    let split = pem.find("-----BEGIN PRIVATE KEY-----").unwrap_or(pem.len());
    Ok((pem[..split].to_string(), pem[split..].to_string()))
}

/// `key=value:Effect` (or `key:Effect`) as a Taint.
fn taint(spec: &str) -> Value {
    let (kv, effect) = spec.rsplit_once(':').unwrap_or((spec, "NoSchedule"));
    match kv.split_once('=') {
        Some((k, v)) => json!({"key": k, "value": v, "effect": effect}),
        None => json!({"key": kv, "effect": effect}),
    }
}

/// The Kubernetes name of this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// RFC 3339 now, second precision (metav1.Time).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn read_first_number(path: &str, prefix: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_kubelet_register_with_taints() {
        assert_eq!(
            taint("dedicated=edge:NoExecute"),
            json!({"key": "dedicated", "value": "edge", "effect": "NoExecute"})
        );
        assert_eq!(
            taint("gpu:NoSchedule"),
            json!({"key": "gpu", "effect": "NoSchedule"})
        );
    }
}
