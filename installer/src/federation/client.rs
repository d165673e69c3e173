//! The one way this module talks to an API server: every call retried
//! within a [`RetryPolicy`] and its failure phrased with the API's role, URL
//! and kubeconfig; every write a server-side apply by field manager
//! `edgeforge`, made only after a read shows the object differs (so a run
//! with nothing to change sends no mutating request at all); waits that poll
//! with backoff and say what they saw last.
//!
//! "Differs" is containment: every field edgeforge wants must be in the live
//! object with the same value (servers add defaults, controllers add their
//! own fields); lists must have the same length, element by element. Labels
//! and annotations edgeforge applied earlier but no longer wants (read from
//! the object's `managedFields`) count as a difference too, so a removed
//! inventory label is removed from the object.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiCall, FederationError};
use crate::kube::KubeConn;
use crate::kube::retry::{Failed, RetryPolicy, retry};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "edgeforge";

/// What the bounds of a resource type handled here are.
pub trait Object:
    Resource + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// A progress callback: what a long wait is waiting for.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// One API server as a registration step uses it.
pub struct Kube<'a> {
    conn: &'a KubeConn,
    role: String,
    check: bool,
    policy: RetryPolicy,
    changes: Mutex<Vec<String>>,
    progress: Option<Progress<'a>>,
}

impl<'a> Kube<'a> {
    /// `conn`, called `role` in messages ("federation host", "cluster of site s1");
    /// in `check` mode nothing is written, changes are only recorded.
    pub fn new(conn: &'a KubeConn, role: impl Into<String>, check: bool) -> Kube<'a> {
        Kube {
            conn,
            role: role.into(),
            check,
            policy: RetryPolicy::default(),
            changes: Mutex::new(Vec::new()),
            progress: None,
        }
    }

    /// Reports long waits through `progress`.
    pub fn with_progress(mut self, progress: Progress<'a>) -> Kube<'a> {
        self.progress = Some(progress);
        self
    }

    /// Retries with `policy` instead of the default one.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Kube<'a> {
        self.policy = policy;
        self
    }

    /// The connection.
    pub fn conn(&self) -> &'a KubeConn {
        self.conn
    }

    /// A client for typed APIs.
    pub fn client(&self) -> kube::Client {
        self.conn.client.clone()
    }

    /// Whether nothing is written (check mode).
    pub fn is_check(&self) -> bool {
        self.check
    }

    /// What was written (or, in check mode, would be), in order.
    pub fn changes(&self) -> Vec<String> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether anything was (or would be) written.
    pub fn changed(&self) -> bool {
        !self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn record(&self, change: String) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change);
    }

    /// Tells the operator what a long step is doing.
    pub fn progress(&self, message: &str) {
        if let Some(p) = self.progress {
            p(message);
        }
    }

    /// Runs one API call with retries; `what` names it in the error.
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, FederationError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        retry(&self.policy, call)
            .await
            .map_err(|failed| self.failure(what, failed))
    }

    /// The error of a call that did not succeed.
    pub fn failure(&self, what: &str, failed: Failed) -> FederationError {
        let call = Box::new(ApiCall {
            role: self.role.clone(),
            url: self.conn.url.clone(),
            kubeconfig: self.conn.source.clone(),
            what: what.to_string(),
        });
        match failed.error {
            kube::Error::Api(status) if status.code == 401 => {
                FederationError::Unauthorized { call }
            }
            kube::Error::Api(status) if status.code == 403 => FederationError::Forbidden {
                call,
                message: status.message,
            },
            error if failed.transient => FederationError::Unavailable {
                call,
                attempts: failed.attempts,
                elapsed: failed.elapsed,
                source: Box::new(error),
            },
            kube::Error::Api(status) => FederationError::Refused {
                call,
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            error => FederationError::Request {
                call,
                source: Box::new(error),
            },
        }
    }

    /// The object called `name`, or `None`.
    pub async fn get<K: Object>(
        &self,
        api: &Api<K>,
        name: &str,
    ) -> Result<Option<K>, FederationError> {
        self.call(&format!("reading {}", kind_name::<K>(api, name)), || {
            api.get_opt(name)
        })
        .await
    }

    /// Every object `params` selects, page by page.
    pub async fn list<K: Object>(
        &self,
        api: &Api<K>,
        params: &ListParams,
    ) -> Result<Vec<K>, FederationError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page_params = params.clone().limit(500);
            if let Some(t) = &token {
                page_params = page_params.continue_token(t);
            }
            let what = format!("listing {}", plural::<K>(api));
            let page = self.call(&what, || api.list(&page_params)).await?;
            items.extend(page.items);
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(items),
            }
        }
    }

    /// Makes the object hold what `desired` says: reads it, and applies
    /// `desired` (server-side apply, field manager `edgeforge`) only when it
    /// is missing or differs. The live object after the call (in check
    /// mode: before it; `None` when it would be created).
    pub async fn ensure<K: Object>(
        &self,
        api: &Api<K>,
        desired: &K,
    ) -> Result<Option<K>, FederationError> {
        let name = desired.meta().name.clone().unwrap_or_default();
        let want = serde_json::to_value(desired).unwrap_or_default();
        let live = self.get(api, &name).await?;
        if let Some(l) = &live
            && holds(&serde_json::to_value(l).unwrap_or_default(), &want)
        {
            return Ok(live);
        }
        let what = describe(&want);
        self.record(format!(
            "{} {what}",
            if live.is_some() { "update" } else { "create" }
        ));
        if self.check {
            return Ok(live);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(desired);
        let applied = self
            .call(&format!("applying {what}"), || {
                api.patch(&name, &params, &patch)
            })
            .await?;
        Ok(Some(applied))
    }

    /// Creates `object` (a POST: for objects named by the server through
    /// `generateName`); in check mode records it and returns `None`.
    pub async fn create<K: Object>(
        &self,
        api: &Api<K>,
        object: &K,
    ) -> Result<Option<K>, FederationError> {
        let what = describe(&serde_json::to_value(object).unwrap_or_default());
        self.record(format!("create {what}"));
        if self.check {
            return Ok(None);
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.call(&format!("creating {what}"), || api.create(&params, object))
            .await
            .map(Some)
    }

    /// Deletes the object called `name`; `Ok(false)` when there was none.
    pub async fn delete<K: Object>(
        &self,
        api: &Api<K>,
        name: &str,
    ) -> Result<bool, FederationError> {
        let what = kind_name::<K>(api, name);
        if self.get(api, name).await?.is_none() {
            return Ok(false);
        }
        self.record(format!("delete {what}"));
        if self.check {
            return Ok(true);
        }
        let params = DeleteParams::background();
        let deleted = self
            .call(&format!("deleting {what}"), || async {
                match api.delete(name, &params).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(deleted)
    }

    /// Deletes the object and waits until it is gone (finalizers done).
    pub async fn delete_and_wait<K: Object>(
        &self,
        api: &Api<K>,
        name: &str,
        timeout: Duration,
    ) -> Result<bool, FederationError> {
        let existed = self.delete(api, name).await?;
        if !existed || self.check {
            return Ok(existed);
        }
        let what = format!("{} to be deleted", kind_name::<K>(api, name));
        self.wait_for(api, name, &what, timeout, |live: Option<&K>| match live {
            None => Ok(()),
            Some(o) => Err(match o.meta().deletion_timestamp {
                Some(_) => format!(
                    "still there, deleting (finalizers: {})",
                    o.meta()
                        .finalizers
                        .as_deref()
                        .unwrap_or_default()
                        .join(", ")
                ),
                None => "still there, not being deleted".into(),
            }),
        })
        .await?;
        Ok(true)
    }

    /// Polls the object called `name` until `done` says it is ready (`Ok`)
    /// or `timeout` passes; `done`'s `Err` says what it saw, for progress
    /// and for the timeout message.
    pub async fn wait_for<K: Object, T>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(Option<&K>) -> Result<T, String>,
    ) -> Result<T, FederationError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(25);
        let mut last = String::new();
        loop {
            let live = self.get(api, name).await?;
            match done(live.as_ref()) {
                Ok(v) => return Ok(v),
                Err(seen) => {
                    if seen != last {
                        self.progress(&format!("waiting for {what}: {seen}"));
                        last = seen;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FederationError::Timeout {
                    what: what.to_string(),
                    after: timeout,
                    seen: last,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// Whether `live` holds everything `want` says (see the module comment).
pub fn holds(live: &Value, want: &Value) -> bool {
    contains(live, want)
        && ["labels", "annotations"].iter().all(|field| {
            let wanted: BTreeSet<&str> = want["metadata"][field]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            owned_keys(live, field)
                .iter()
                .all(|k| wanted.contains(k.as_str()))
        })
}

/// Containment of `want` in `live`: maps by key, lists element by element.
fn contains(live: &Value, want: &Value) -> bool {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => w.iter().all(|(k, wv)| match l.get(k) {
            Some(lv) => contains(lv, wv),
            None => is_empty(wv),
        }),
        (Value::Array(w), Value::Array(l)) => {
            w.len() == l.len() && w.iter().zip(l).all(|(wv, lv)| contains(lv, wv))
        }
        (w, Value::Null) => is_empty(w),
        (w, l) => w == l,
    }
}

/// Null, `{}` and `[]`: what an absent field means.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The keys of `metadata.<field>` that edgeforge's applies own.
fn owned_keys(live: &Value, field: &str) -> BTreeSet<String> {
    live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["manager"] == FIELD_MANAGER && m["operation"] == "Apply")
        .filter_map(|m| m["fieldsV1"]["f:metadata"][format!("f:{field}")].as_object())
        .flat_map(|keys| {
            keys.keys()
                .filter_map(|k| k.strip_prefix("f:"))
                .map(str::to_string)
        })
        .collect()
}

/// `Secret karmada-cluster/karmada-s1`, from an object's JSON.
pub fn describe(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("object");
    let name = v["metadata"]["name"]
        .as_str()
        .or_else(|| v["metadata"]["generateName"].as_str())
        .unwrap_or("?");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// `clusters.cluster.karmada.io` style name of an Api's resource, with the object.
fn kind_name<K: Object>(api: &Api<K>, name: &str) -> String {
    format!("{} {name}", plural::<K>(api))
}

/// The resource of an Api, from its URL (`/api/v1/namespaces/x/secrets` → `secrets`).
fn plural<K: Object>(api: &Api<K>) -> String {
    let url = api.resource_url();
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let resource = parts.next().unwrap_or("objects");
    let group = if url.starts_with("/apis/") {
        url.trim_start_matches("/apis/")
            .split('/')
            .next()
            .unwrap_or("")
    } else {
        ""
    };
    let ns = match url.split("/namespaces/").nth(1) {
        Some(rest) if rest.contains('/') => rest.split('/').next(),
        _ => None,
    };
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    match ns {
        Some(ns) => format!("{qualified} in {ns}"),
        None => qualified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_ignores_server_defaults_but_not_differences() {
        let live = json!({"kind": "Deployment", "metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "IfNotPresent"}]}}}});
        let want = json!({"kind": "Deployment", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(holds(&live, &want));
        let mut other = want.clone();
        other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
        assert!(!holds(&live, &other));
        let mut more = want.clone();
        more["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d"}));
        assert!(!holds(&live, &more));
        assert!(holds(
            &json!({"metadata": {}}),
            &json!({"metadata": {"labels": {}}})
        ));
    }

    #[test]
    fn a_label_edgeforge_applied_and_no_longer_wants_is_a_difference() {
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2", "z": "3"},
        "managedFields": [
            {"manager": "edgeforge", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}, "f:y": {}}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:z": {}}}}}
        ]}});
        assert!(holds(
            &live,
            &json!({"metadata": {"labels": {"x": "1", "y": "2"}}})
        ));
        assert!(!holds(&live, &json!({"metadata": {"labels": {"x": "1"}}})));
    }

    #[test]
    fn objects_are_described_by_kind_namespace_and_name() {
        assert_eq!(
            describe(&json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}})),
            "Secret n/s"
        );
        assert_eq!(
            describe(
                &json!({"kind": "Secret", "metadata": {"generateName": "c-", "namespace": "n"}})
            ),
            "Secret n/c-"
        );
        assert_eq!(
            describe(&json!({"kind": "Namespace", "metadata": {"name": "x"}})),
            "Namespace x"
        );
    }
}
