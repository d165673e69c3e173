//! The controllers a cluster join relies on, reduced to what a client can
//! observe: the service-account token controller (fills legacy token
//! Secrets), the namespace controller (a new namespace gets its `default`
//! ServiceAccount and `kube-root-ca.crt`; a terminating one is emptied, then
//! removed) and the CRD controller (`NamesAccepted` and `Established`).
//! One task per emulator works through the queue writes fill.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::store::{Store, Work, WriteOptions};

const MANAGER: &str = "kube-controller-manager";

/// Works through the queue until the emulator stops (the task is aborted then).
pub(crate) async fn run(store: Store, mut work: mpsc::UnboundedReceiver<Work>) {
    while let Some(item) = work.recv().await {
        handle(&store, item);
    }
}

fn handle(store: &Store, item: Work) {
    match item {
        Work::FillToken { namespace, name } => fill_token(store, &namespace, &name),
        Work::ServiceAccountAdded { namespace } => {
            for secret in store.list("v1", "secrets", Some(&namespace)) {
                if secret["type"] == "kubernetes.io/service-account-token"
                    && secret["data"]["token"].is_null()
                {
                    let name = secret["metadata"]["name"].as_str().unwrap_or_default();
                    fill_token(store, &namespace, name);
                }
            }
        }
        Work::NamespaceCreated { name } => {
            let options = WriteOptions::manager(MANAGER);
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name}});
            let ca = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": name,
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": store.inner.ca_pem}});
            for object in [sa, ca] {
                let kind = object["kind"].as_str().unwrap_or_default().to_string();
                if let Ok(rt) = store.resource_type("v1", &kind) {
                    // AlreadyExists (an object the client made first) is fine; a terminating namespace refuses, also fine.
                    let _ = store.create_typed(&rt, Some(&name), object, &options);
                }
            }
        }
        Work::FinalizeNamespace { name } => finalize_namespace(store, &name),
        Work::EstablishCrd { name } => establish_crd(store, &name),
    }
}

/// Gives a legacy token Secret its token, CA and namespace once its ServiceAccount exists.
fn fill_token(store: &Store, ns: &str, name: &str) {
    let Some(mut secret) = store.get("v1", "secrets", Some(ns), name) else {
        return;
    };
    if secret["type"] != "kubernetes.io/service-account-token" || !secret["data"]["token"].is_null()
    {
        return;
    }
    let Some(sa_name) = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
        .as_str()
        .map(str::to_string)
    else {
        return;
    };
    let Some(sa) = store.get("v1", "serviceaccounts", Some(ns), &sa_name) else {
        return;
    };
    let sa_uid = sa["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = service_account_token(ns, name, &sa_name, &sa_uid);
    let b64 = |s: &str| json!(data_encoding::BASE64.encode(s.as_bytes()));
    secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(sa_uid);
    secret["data"]["token"] = b64(&token);
    secret["data"]["ca.crt"] = b64(&store.inner.ca_pem);
    secret["data"]["namespace"] = b64(ns);
    if let Ok(rt) = store.resource_type("v1", "secrets") {
        // A concurrent change to the Secret makes this a Conflict; the change queues the work again.
        let _ = store.replace_typed(&rt, Some(ns), name, secret, &WriteOptions::manager(MANAGER));
    }
}

/// A token shaped like the legacy JWTs (header, the claims real ones carry, a random signature).
/// The emulator recognises it by value; nothing verifies the signature.
fn service_account_token(ns: &str, secret: &str, sa: &str, sa_uid: &str) -> String {
    let enc = |v: &Value| data_encoding::BASE64URL_NOPAD.encode(v.to_string().as_bytes());
    let header = json!({"alg": "RS256", "kid": "kube-emulator"});
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    });
    let mut signature = Vec::new();
    for _ in 0..4 {
        signature.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!(
        "{}.{}.{}",
        enc(&header),
        enc(&claims),
        data_encoding::BASE64URL_NOPAD.encode(&signature)
    )
}

/// Deletes everything in a terminating namespace; once nothing is left, the namespace goes.
fn finalize_namespace(store: &Store, name: &str) {
    let Some(namespace) = store.get("v1", "namespaces", None, name) else {
        return;
    };
    if namespace["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let types: Vec<_> = store
        .lock()
        .registry
        .types()
        .iter()
        .filter(|t| t.namespaced && !t.is_virtual())
        .cloned()
        .collect();
    let mut remaining = false;
    let mut seen = std::collections::HashSet::new();
    for rt in types {
        if !seen.insert(rt.key()) {
            continue;
        }
        let (_, objects) = store.snapshot(&rt.key());
        for (ns, object) in objects.iter().filter(|(ns, _)| ns == name) {
            let obj_name = object["metadata"]["name"].as_str().unwrap_or_default();
            match store.delete_typed(&rt, Some(ns), obj_name, &Value::Null, false) {
                Ok(deleted) if deleted.gone => {}
                _ => remaining = true,
            }
        }
    }
    if !remaining {
        store.remove_namespace_finalizer(name);
    }
}

/// Sets the conditions and accepted names the CRD controller reports.
fn establish_crd(store: &Store, name: &str) {
    let Some(mut crd) = store.get(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        None,
        name,
    ) else {
        return;
    };
    let mut names = crd["spec"]["names"].clone();
    if names["singular"].is_null() {
        names["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if names["listKind"].is_null() {
        names["listKind"] = json!(format!(
            "{}List",
            names["kind"].as_str().unwrap_or_default()
        ));
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now,
                "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    });
    if let Ok(rt) = store.resource_type("apiextensions.k8s.io/v1", "customresourcedefinitions") {
        let options = WriteOptions {
            status: true,
            ..WriteOptions::manager("kube-apiserver")
        };
        // A concurrent spec change queues this work again.
        let _ = store.replace_typed(&rt, None, name, crd, &options);
    }
}
