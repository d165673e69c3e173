//! A **stand-in** for the controllers that report a registered cluster's
//! health on the host: Karmada's cluster-status controller (in
//! karmada-controller-manager, for Push clusters) and KubeFed's cluster
//! health check. Like them it reaches each member with the credentials the
//! registration stored on the host — the Secret named by `secretRef` (its
//! `token`; the CA from the Secret's `caBundle` for Karmada, from the
//! KubeFedCluster's `spec.caBundle` for KubeFed) — asks `/readyz`
//! (Karmada) or `/healthz` (KubeFed), and writes the Ready condition
//! through `/status`. A registration whose credentials do not work is
//! reported not Ready, as on a real host.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use crate::federation_host::{client, token_client};
use crate::karmada_agent_standin::{member_ready, member_version, ready_status};

/// The running stand-in (stops when dropped).
pub struct ClusterStatusStandin {
    task: tokio::task::JoinHandle<()>,
}

impl ClusterStatusStandin {
    /// Starts polling the host behind `host_admin_kubeconfig` every 50 ms.
    pub fn start(host_admin_kubeconfig: String) -> ClusterStatusStandin {
        let task = tokio::spawn(async move {
            let Ok(host) = client(&host_admin_kubeconfig).await else {
                return;
            };
            loop {
                let _ = karmada_round(&host).await;
                let _ = kubefed_round(&host).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ClusterStatusStandin { task }
    }
}

impl Drop for ClusterStatusStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn secret_text(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// Push Clusters: Ready from `/readyz` with the Cluster's Secret.
async fn karmada_round(host: &kube::Client) -> anyhow::Result<()> {
    let clusters: Api<DynamicObject> = Api::all_with(
        host.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.karmada.io", "v1alpha1", "Cluster"),
            "clusters",
        ),
    );
    for mut c in clusters.list(&Default::default()).await?.items {
        if c.data["spec"]["syncMode"] != "Push" || c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let reference = &c.data["spec"]["secretRef"];
        let (Some(ns), Some(name)) = (reference["namespace"].as_str(), reference["name"].as_str())
        else {
            continue;
        };
        let (healthy, version) = match Api::<Secret>::namespaced(host.clone(), ns)
            .get_opt(name)
            .await?
        {
            Some(s) => {
                let endpoint = c.data["spec"]["apiEndpoint"].as_str().unwrap_or_default();
                match token_client(
                    endpoint,
                    &secret_text(&s, "caBundle"),
                    &secret_text(&s, "token"),
                )
                .await
                {
                    Ok(member) => (member_ready(&member).await, member_version(&member).await),
                    Err(_) => (false, None),
                }
            }
            None => (false, None),
        };
        let wanted = if healthy { "True" } else { "False" };
        let current = c.data["status"]["conditions"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["type"] == "Ready"))
            .and_then(|x| x["status"].as_str())
            .unwrap_or_default()
            .to_string();
        if current != wanted {
            let Some(cname) = c.metadata.name.clone() else {
                continue;
            };
            c.data["status"] = ready_status(healthy, version);
            let _ = clusters
                .replace_status(&cname, &PostParams::default(), &c)
                .await;
        }
    }
    Ok(())
}

/// KubeFedClusters: Ready from `/healthz` with the cluster's Secret and CA.
async fn kubefed_round(host: &kube::Client) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("core.kubefed.io", "v1beta1", "KubeFedCluster"),
        "kubefedclusters",
    );
    let all: Api<DynamicObject> = Api::all_with(host.clone(), &resource);
    for mut c in all.list(&Default::default()).await?.items {
        let (Some(ns), Some(cname)) = (c.metadata.namespace.clone(), c.metadata.name.clone())
        else {
            continue;
        };
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ca = c.data["spec"]["caBundle"]
            .as_str()
            .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let secret = c.data["spec"]["secretRef"]["name"]
            .as_str()
            .unwrap_or_default();
        let healthy = match Api::<Secret>::namespaced(host.clone(), &ns)
            .get_opt(secret)
            .await?
        {
            Some(s) => {
                let endpoint = c.data["spec"]["apiEndpoint"].as_str().unwrap_or_default();
                match token_client(endpoint, &ca, &secret_text(&s, "token")).await {
                    Ok(member) => healthz(&member).await,
                    Err(_) => false,
                }
            }
            None => false,
        };
        let wanted = if healthy { "True" } else { "False" };
        let current = c.data["status"]["conditions"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["type"] == "Ready"))
            .and_then(|x| x["status"].as_str())
            .unwrap_or_default()
            .to_string();
        if current != wanted {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let (reason, message) = if healthy {
                ("ClusterReady", "/healthz responded with ok")
            } else {
                ("ClusterNotReachable", "cluster is not reachable")
            };
            c.data["status"] = json!({"conditions": [{
                "type": "Ready", "status": wanted, "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now,
            }]});
            let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &resource);
            let _ = api.replace_status(&cname, &PostParams::default(), &c).await;
        }
    }
    Ok(())
}

async fn healthz(client: &kube::Client) -> bool {
    let Ok(request) = hyper::Request::builder()
        .uri("/healthz")
        .body(kube::client::Body::empty())
    else {
        return false;
    };
    matches!(client.send(request).await, Ok(r) if r.status().as_u16() == 200)
}
