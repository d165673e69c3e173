//! A **stand-in** for the karmada-agent (no agent image can run here). It
//! does over the API what the real agent does when it starts on a member
//! (karmada's cmd/agent `run`): it watches the member for the
//! `karmada-system/karmada-agent` Deployment, reads the host credential from
//! the Secret the Deployment mounts (as `karmadactl unregister` finds it:
//! the `--karmada-kubeconfig` path → volume mount → Secret), takes its flags
//! (`--cluster-name`, `--cluster-api-endpoint`, provider, region, zones,
//! `--cluster-namespace`), and then, with the agent's own credentials only:
//!
//! - on the member, as service account `karmada-system/karmada-agent-sa`
//!   (a projected token, registered with the emulator as a static token):
//!   reads the `kube-system` UID and creates the member credentials
//!   (namespace `karmada-cluster`, service accounts `karmada-impersonator`
//!   and `karmada-<cluster>`, their RBAC and token Secrets);
//! - on the host, with the Secret's kubeconfig: lists the Clusters to
//!   validate name and id, gets namespace `karmada-cluster`, creates the
//!   Secrets `<cluster>` and `<cluster>-impersonator`, creates (or updates)
//!   its Cluster with syncMode Pull, patches the Secrets' ownerReferences,
//!   and, as the agent's cluster-status controller, sets the Cluster's
//!   Ready condition after the member's `/readyz` answered.
//!
//! The host's RBAC is enforced by the emulator: whatever the agent's RBAC
//! on the host does not allow fails here as it would on a real host, and is
//! recorded in [`KarmadaAgentStandin::errors`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::federation_host::client;
use crate::kube_emulator::{Emulator, StaticToken};

const AGENT_NS: &str = "karmada-system";
const AGENT: &str = "karmada-agent";

/// The agent service account's identity on a member, as a projected token
/// would give it: registers a token for it with `member` and returns a
/// kubeconfig using it.
pub fn agent_credential(member: &Emulator, name: &str) -> String {
    let token = format!("agent-standin-{}", uuid::Uuid::new_v4().simple());
    member.add_token(StaticToken::new(
        &token,
        "system:serviceaccount:karmada-system:karmada-agent-sa",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:karmada-system",
        ],
    ));
    member.kubeconfig_for(name, &token)
}

/// A running agent stand-in per member (stops when dropped).
pub struct KarmadaAgentStandin {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    registrations: Arc<Mutex<Vec<String>>>,
}

impl KarmadaAgentStandin {
    /// Starts one agent per member: the member's admin kubeconfig watches for
    /// the Deployment (as the scheduler and kubelet would), everything the
    /// agent does uses the agent's own credentials ([`agent_credential`]).
    pub fn start(members: &[Emulator]) -> KarmadaAgentStandin {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let registrations = Arc::new(Mutex::new(Vec::new()));
        let tasks = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let admin = m.kubeconfig(&format!("member-{i}"));
                let agent = agent_credential(m, &format!("agent-{i}"));
                let errors = errors.clone();
                let registrations = registrations.clone();
                tokio::spawn(async move { watch(admin, agent, errors, registrations).await })
            })
            .collect();
        KarmadaAgentStandin {
            tasks,
            errors,
            registrations,
        }
    }

    /// What failed so far (each distinct message once), e.g. a call the host refused.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The clusters registered so far (one entry per registration run).
    pub fn registrations(&self) -> Vec<String> {
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for KarmadaAgentStandin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watch(
    admin_kubeconfig: String,
    agent_kubeconfig: String,
    errors: Arc<Mutex<Vec<String>>>,
    registrations: Arc<Mutex<Vec<String>>>,
) {
    let (admin, member) = match (
        client(&admin_kubeconfig).await,
        client(&agent_kubeconfig).await,
    ) {
        (Ok(a), Ok(m)) => (a, m),
        (Err(e), _) | (_, Err(e)) => return record(&errors, format!("member client: {e:#}")),
    };
    let deployments: Api<Deployment> = Api::namespaced(admin, AGENT_NS);
    // The Deployment generation last registered from, as a restarted pod would.
    let mut done: Option<String> = None;
    loop {
        match deployments.get_opt(AGENT).await {
            Ok(Some(d)) => {
                let rv = d.metadata.resource_version.clone().unwrap_or_default();
                if done.as_deref() != Some(rv.as_str()) {
                    match register(&member, &d).await {
                        Ok(cluster) => {
                            registrations
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(cluster);
                            done = Some(rv);
                        }
                        Err(e) => record(&errors, format!("{e:#}")),
                    }
                }
            }
            Ok(None) => done = None,
            Err(e) => record(&errors, format!("reading the agent Deployment: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn record(errors: &Mutex<Vec<String>>, e: String) {
    let mut list = errors.lock().unwrap_or_else(|p| p.into_inner());
    if !list.contains(&e) {
        list.push(e);
    }
}

/// The agent's flags from its command line.
fn flag(command: &[String], name: &str) -> String {
    command
        .iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
        .unwrap_or_default()
        .to_string()
}

/// One registration run, as the agent does at start. Returns the cluster name.
async fn register(member: &kube::Client, d: &Deployment) -> anyhow::Result<String> {
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| anyhow::anyhow!("the agent Deployment has no pod spec"))?;
    let container = pod
        .containers
        .first()
        .ok_or_else(|| anyhow::anyhow!("the agent Deployment has no container"))?;
    let command = container.command.clone().unwrap_or_default();
    let cluster = flag(&command, "cluster-name");
    let endpoint = flag(&command, "cluster-api-endpoint");
    let cluster_ns = flag(&command, "cluster-namespace");
    let kubeconfig_path = flag(&command, "karmada-kubeconfig");
    let (mount, file) = kubeconfig_path
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("--karmada-kubeconfig is not a path: {kubeconfig_path}"))?;
    let volume = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == mount)
        .map(|m| m.name.clone())
        .ok_or_else(|| anyhow::anyhow!("no volume is mounted at {mount}"))?;
    let secret_name = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)
        .and_then(|v| v.secret.as_ref()?.secret_name.clone())
        .ok_or_else(|| anyhow::anyhow!("volume {volume} is not a Secret"))?;
    let secret = Api::<Secret>::namespaced(member.clone(), AGENT_NS)
        .get(&secret_name)
        .await?;
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|d| d.get(file))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| anyhow::anyhow!("Secret {secret_name} has no {file}"))?;
    let host = client(&kubeconfig).await?;

    // The member: its id, and the credentials the agent reports.
    let id = Api::<Namespace>::all(member.clone())
        .get("kube-system")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let clusters: Api<DynamicObject> = Api::all_with(
        host.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.karmada.io", "v1alpha1", "Cluster"),
            "clusters",
        ),
    );
    for c in clusters.list(&Default::default()).await?.items {
        let same_name = c.metadata.name.as_deref() == Some(cluster.as_str());
        let same_id = c.data["spec"]["id"] == json!(id);
        if same_name != same_id {
            anyhow::bail!("the cluster ID {id} or the cluster name {cluster} has been registered");
        }
    }
    let (token, ca) = member_credentials(member, &cluster, &cluster_ns).await?;
    let impersonator = member_token(member, &cluster_ns, "karmada-impersonator")
        .await?
        .0;

    // The host: namespace (get only: the agent may not create it), Secrets, Cluster.
    Api::<Namespace>::all(host.clone()).get(&cluster_ns).await?;
    let secrets: Api<Secret> = Api::namespaced(host.clone(), &cluster_ns);
    let labels = json!({"karmada.io/system": "true"});
    let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
    let impersonator_name = format!("{cluster}-impersonator");
    for (name, data) in [
        (
            impersonator_name.as_str(),
            json!({"token": b64(&impersonator)}),
        ),
        (
            cluster.as_str(),
            json!({"caBundle": b64(&ca), "token": b64(&token)}),
        ),
    ] {
        let object: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": cluster_ns, "labels": labels},
            "data": data,
        }))?;
        match secrets.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                secrets.get(name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut spec = json!({
        "syncMode": "Pull",
        "apiEndpoint": endpoint,
        "id": id,
        "secretRef": {"namespace": cluster_ns, "name": cluster},
        "impersonatorSecretRef": {"namespace": cluster_ns, "name": impersonator_name},
    });
    for (key, value) in [
        ("provider", flag(&command, "cluster-provider")),
        ("region", flag(&command, "cluster-region")),
    ] {
        if !value.is_empty() {
            spec[key] = json!(value);
        }
    }
    let zones = flag(&command, "cluster-zones");
    if !zones.is_empty() {
        spec["zones"] = json!(zones.split(',').collect::<Vec<_>>());
    }
    let live = match clusters.get_opt(&cluster).await? {
        Some(mut existing) => {
            if existing.data["spec"] != spec {
                existing.data["spec"] = spec;
                clusters
                    .replace(&cluster, &PostParams::default(), &existing)
                    .await?
            } else {
                existing
            }
        }
        None => {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
                "metadata": {"name": cluster}, "spec": spec,
            }))?;
            clusters.create(&PostParams::default(), &object).await?
        }
    };
    let owner = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
        "name": cluster, "uid": live.metadata.uid,
        "controller": true, "blockOwnerDeletion": true,
    }]}});
    for name in [impersonator_name.as_str(), cluster.as_str()] {
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&owner))
            .await?;
    }

    // The agent's cluster-status controller: Ready once the member answers.
    let healthy = member_ready(member).await;
    let version = member_version(member).await;
    let mut status = clusters.get(&cluster).await?;
    status.data["status"] = ready_status(healthy, version);
    clusters
        .replace_status(&cluster, &PostParams::default(), &status)
        .await?;
    Ok(cluster)
}

/// The status Karmada's cluster-status controller writes: the member's
/// Kubernetes version and Ready=True/False in its words.
pub fn ready_status(healthy: bool, version: Option<String>) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (status, reason, message) = if healthy {
        (
            "True",
            "ClusterReady",
            "cluster is healthy and ready to accept workloads",
        )
    } else {
        ("False", "ClusterNotReachable", "cluster is not reachable")
    };
    let mut v = json!({"conditions": [{
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now,
    }]});
    if let Some(version) = version {
        v["kubernetesVersion"] = json!(version);
    }
    v
}

/// The member's `gitVersion`, when it answers `/version`.
pub async fn member_version(client: &kube::Client) -> Option<String> {
    client.apiserver_version().await.ok().map(|v| v.git_version)
}

/// Whether the API behind `client` answers `/readyz` with 200.
pub async fn member_ready(client: &kube::Client) -> bool {
    let Ok(request) = hyper::Request::builder()
        .uri("/readyz")
        .body(kube::client::Body::empty())
    else {
        return false;
    };
    matches!(client.send(request).await, Ok(r) if r.status().as_u16() == 200)
}

/// The member credentials of `karmada-<cluster>` (token, CA), as the agent's
/// ObtainCredentialsFromMemberCluster makes them.
async fn member_credentials(
    member: &kube::Client,
    cluster: &str,
    ns: &str,
) -> anyhow::Result<(String, String)> {
    let labels = json!({"karmada.io/system": "true"});
    let apply = |v: Value| async move {
        let (api_version, kind, name, namespace) = (
            v["apiVersion"].as_str().unwrap_or_default().to_string(),
            v["kind"].as_str().unwrap_or_default().to_string(),
            v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["metadata"]["namespace"].as_str().map(str::to_string),
        );
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &kind),
            &plural,
        );
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(member.clone(), ns, &resource),
            None => Api::all_with(member.clone(), &resource),
        };
        if api.get_opt(&name).await?.is_none() {
            let object: DynamicObject = serde_json::from_value(v)?;
            api.create(&PostParams::default(), &object).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await?;
    for sa in [
        "karmada-impersonator".to_string(),
        format!("karmada-{cluster}"),
    ] {
        apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns, "labels": labels}}))
        .await?;
    }
    let role = format!("karmada-controller-manager:karmada-{cluster}");
    apply(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role, "labels": labels},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                  {"nonResourceURLs": ["*"], "verbs": ["get"]}]}),
    )
    .await?;
    apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role, "labels": labels},
        "subjects": [{"kind": "ServiceAccount", "name": format!("karmada-{cluster}"), "namespace": ns}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}))
    .await?;
    member_token(member, ns, &format!("karmada-{cluster}")).await
}

/// The token and CA of service account `ns/sa`'s legacy token Secret (named
/// like it), created if missing and waited on until filled.
async fn member_token(
    member: &kube::Client,
    ns: &str,
    sa: &str,
) -> anyhow::Result<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(member.clone(), ns);
    if secrets.get_opt(sa).await?.is_none() {
        let object: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": sa, "namespace": ns,
                "annotations": {"kubernetes.io/service-account.name": sa}},
        }))?;
        match secrets.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for _ in 0..200 {
        let s = secrets.get(sa).await?;
        let get = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        if let Some(token) = get("token") {
            return Ok((token, get("ca.crt").unwrap_or_default()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the token controller did not fill Secret {ns}/{sa}")
}
