//! Nodes through the Kubernetes API: waiting for a Node to be Ready (with
//! labels, conditions and a kubelet version), cordon, drain through the
//! Eviction API, uncordon, delete.
//!
//! Waits follow a watch of the object (kube-rs's watcher), never a fixed
//! sleep: each event is checked at once, and an API that goes away (a k3s
//! restart) is watched again after a short back-off until the deadline. A
//! wait that runs out of time says what it waited for and what it saw last.
//! Cordon marks the Node with [`CORDONED_BY`] so that uncordon only undoes
//! edgeforge's own cordon, also in a later run after an interruption.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::KubeError;

/// The annotation cordon sets and uncordon looks for.
pub const CORDONED_BY: &str = "edgeforge.io/cordoned";

/// What a Node must show to count as ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeWant {
    /// Labels it must carry, with these values.
    pub labels: BTreeMap<String, String>,
    /// Conditions (besides `Ready`) that must have this status, e.g. `EtcdIsVoter: "True"`.
    pub conditions: BTreeMap<String, String>,
    /// `status.nodeInfo.kubeletVersion` it must report, e.g. `v1.34.2+k3s1`.
    pub kubelet_version: Option<String>,
}

/// Whether `node` is what `want` asks for; else what is missing, as shown in a timeout.
pub fn node_matches(node: &Node, want: &NodeWant) -> Result<(), String> {
    let mut missing = Vec::new();
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
    };
    match condition("Ready") {
        Some((s, _)) if s == "True" => {}
        Some((s, r)) => missing.push(format!("Ready is {s}{}", paren(&r))),
        None => missing.push("no Ready condition yet".to_string()),
    }
    for (t, want_status) in &want.conditions {
        match condition(t) {
            Some((s, _)) if s == *want_status => {}
            Some((s, r)) => missing.push(format!("{t} is {s}{}", paren(&r))),
            None => missing.push(format!("no {t} condition")),
        }
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    for (k, v) in &want.labels {
        match labels.get(k) {
            Some(have) if have == v => {}
            Some(have) => missing.push(format!("label {k}={have}, not {v}")),
            None => missing.push(format!("no label {k}")),
        }
    }
    if let Some(version) = &want.kubelet_version {
        let have = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default();
        if have != *version {
            missing.push(format!(
                "kubelet {}",
                if have.is_empty() { "unknown" } else { &have }
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

fn paren(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// Waits until Node `name` is Ready and shows `want`; `progress` hears what is seen.
pub async fn wait_node(
    client: &kube::Client,
    name: &str,
    want: &NodeWant,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Node, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let what = describe_want(name, want);
    let fields = format!("metadata.name={name}");
    let found = watch_until(&api, &fields, timeout, &what, progress, |nodes| match nodes
        .values()
        .next()
    {
        None => Err(format!("Node {name} does not exist")),
        Some(node) => node_matches(node, want).map(|()| node.clone()),
    })
    .await?;
    Ok(found)
}

fn describe_want(name: &str, want: &NodeWant) -> String {
    let mut parts = vec![format!("Node {name} Ready")];
    parts.extend(want.labels.iter().map(|(k, v)| format!("label {k}={v}")));
    parts.extend(want.conditions.iter().map(|(k, v)| format!("{k}={v}")));
    if let Some(v) = &want.kubelet_version {
        parts.push(format!("kubelet {v}"));
    }
    parts.join(", ")
}

/// Watches the objects `fields` selects until `done` accepts the current
/// set (namespace/name → object), for at most `timeout`. `done` returns
/// what it saw when it does not accept, which a timeout reports.
async fn watch_until<K, T>(
    api: &Api<K>,
    fields: &str,
    timeout: Duration,
    what: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
    done: impl Fn(&BTreeMap<String, K>) -> Result<T, String>,
) -> Result<T, KubeError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let mut last = "nothing yet (the API did not answer)".to_string();
    let key = |o: &K| {
        let m = o.meta();
        format!(
            "{}/{}",
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default()
        )
    };
    loop {
        let config = watcher::Config::default().fields(fields);
        let mut stream = Box::pin(watcher::watcher(api.clone(), config));
        let mut objects: BTreeMap<String, K> = BTreeMap::new();
        let mut listing: BTreeMap<String, K> = BTreeMap::new();
        let mut listed = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KubeError::Wait {
                    what: what.to_string(),
                    after: timeout,
                    last,
                });
            }
            let event = match tokio::time::timeout(left, stream.next()).await {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    last = format!("the API failed: {e}");
                    progress(&last);
                    break;
                }
                Ok(Some(Ok(event))) => event,
            };
            match event {
                Event::Init => listing.clear(),
                Event::InitApply(o) => {
                    listing.insert(key(&o), o);
                }
                Event::InitDone => {
                    objects = std::mem::take(&mut listing);
                    listed = true;
                }
                Event::Apply(o) => {
                    objects.insert(key(&o), o);
                }
                Event::Delete(o) => {
                    objects.remove(&key(&o));
                }
            }
            if !listed {
                continue;
            }
            match done(&objects) {
                Ok(t) => return Ok(t),
                Err(seen) => {
                    if seen != last {
                        progress(&seen);
                        last = seen;
                    }
                }
            }
        }
        // The watch ended or failed (the API restarting): watch again shortly.
        let pause = Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// Marks Node `name` unschedulable (and as cordoned by edgeforge); false when it already was.
pub async fn cordon(client: &kube::Client, name: &str) -> Result<bool, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api.get(name).await?;
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let marked = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CORDONED_BY));
    if unschedulable && marked {
        return Ok(false);
    }
    // A node an operator cordoned stays theirs: only mark one edgeforge cordons now.
    let mut patch = json!({"spec": {"unschedulable": true}});
    if !unschedulable {
        patch["metadata"] = json!({"annotations": {CORDONED_BY: "true"}});
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(!unschedulable)
}

/// Makes Node `name` schedulable again if edgeforge cordoned it; false when there was nothing to undo.
pub async fn uncordon(client: &kube::Client, name: &str) -> Result<bool, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = match api.get_opt(name).await? {
        Some(n) => n,
        None => return Ok(false),
    };
    let marked = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CORDONED_BY));
    if !marked {
        return Ok(false);
    }
    let patch = json!({
        "metadata": {"annotations": {CORDONED_BY: null}},
        "spec": {"unschedulable": null},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(true)
}

/// Evicts every pod on Node `name` that a drain moves (not DaemonSet pods,
/// not static mirror pods) through the Eviction API, retrying refusals
/// (429: a disruption budget) until `timeout`, and waits until they are
/// gone. Returns how many pods were evicted.
pub async fn drain(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<usize, KubeError> {
    let deadline = Instant::now() + timeout;
    let pods: Api<Pod> = Api::all(client.clone());
    let fields = format!("spec.nodeName={name}");
    let listed = pods.list(&ListParams::default().fields(&fields)).await?;
    let movable: Vec<(String, String)> = listed
        .items
        .iter()
        .filter(|p| drains(p))
        .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
        .collect();
    for (ns, pod) in &movable {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        loop {
            match api.evict(pod, &EvictParams::default()).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                Err(kube::Error::Api(s)) if s.code == 429 && Instant::now() < deadline => {
                    progress(&format!(
                        "eviction of {ns}/{pod} refused for now: {}",
                        s.message
                    ));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    return Err(KubeError::Wait {
                        what: format!("the eviction of pod {ns}/{pod} from Node {name}"),
                        after: timeout,
                        last: format!("refused: {}", s.message),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if movable.is_empty() {
        return Ok(0);
    }
    let wanted: Vec<String> = movable.iter().map(|(n, p)| format!("{n}/{p}")).collect();
    let left = deadline.saturating_duration_since(Instant::now());
    let what = format!("the evicted pods to leave Node {name}");
    watch_until(&pods, &fields, left, &what, progress, |now| {
        let still: Vec<&String> = wanted.iter().filter(|k| now.contains_key(*k)).collect();
        if still.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "still there: {}",
                still
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    })
    .await?;
    Ok(movable.len())
}

/// Whether a drain moves `pod`: not a DaemonSet's, not a static (mirror) pod, not finished.
fn drains(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !daemon && !mirror && !finished
}

/// Deletes Node `name`; false when there was none.
pub async fn delete_node(client: &kube::Client, name: &str) -> Result<bool, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The kubelet version of every Node with `label` (e.g. the servers), by name.
pub async fn kubelet_versions(
    client: &kube::Client,
    label: &str,
) -> Result<BTreeMap<String, String>, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api.list(&ListParams::default().labels(label)).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.clone()?,
                n.status
                    .as_ref()?
                    .node_info
                    .as_ref()?
                    .kubelet_version
                    .clone(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_node_matches_only_when_ready_with_every_label_condition_and_version() {
        let want = NodeWant {
            labels: [(
                "node-role.kubernetes.io/etcd".to_string(),
                "true".to_string(),
            )]
            .into(),
            conditions: [("EtcdIsVoter".to_string(), "True".to_string())].into(),
            kubelet_version: Some("v1.34.2+k3s1".into()),
        };
        let ready = node(json!({
            "metadata": {"name": "s2", "labels": {"node-role.kubernetes.io/etcd": "true"}},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "EtcdIsVoter", "status": "True", "reason": "MemberIsVoter"},
                ],
                "nodeInfo": {"kubeletVersion": "v1.34.2+k3s1", "architecture": "", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""},
            },
        }));
        assert_eq!(node_matches(&ready, &want), Ok(()));
        let learner = node(json!({
            "metadata": {"name": "s2"},
            "status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                {"type": "EtcdIsVoter", "status": "False", "reason": "MemberIsLearner"},
            ]},
        }));
        let seen = node_matches(&learner, &want).unwrap_err();
        assert_eq!(
            seen,
            "Ready is False (KubeletNotReady), EtcdIsVoter is False (MemberIsLearner), \
             no label node-role.kubernetes.io/etcd, kubelet unknown"
        );
        assert_eq!(
            describe_want("s2", &want),
            "Node s2 Ready, label node-role.kubernetes.io/etcd=true, EtcdIsVoter=True, kubelet v1.34.2+k3s1"
        );
    }

    #[test]
    fn drain_moves_ordinary_pods_only() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        assert!(drains(&pod(json!({"metadata": {"name": "a"}}))));
        assert!(!drains(&pod(
            json!({"metadata": {"name": "d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "u"}]}})
        )));
        assert!(!drains(&pod(json!({"metadata": {"name": "m",
            "annotations": {"kubernetes.io/config.mirror": "x"}}}))));
        assert!(!drains(&pod(
            json!({"metadata": {"name": "f"}, "status": {"phase": "Succeeded"}})
        )));
    }
}
