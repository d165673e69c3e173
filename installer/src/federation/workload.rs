//! Federated workloads (`edgeforge federate`): one app file — a plain
//! Deployment (and optionally a Service and its Namespace), a placement
//! (sites by name or by a selector over the sites' cluster labels) and
//! per-site overrides (replicas, image, JSON-patch operations) — rendered
//! from the templates under `templates/federation/` into Karmada
//! PropagationPolicy (Duplicated) and OverridePolicy (plaintext and
//! imageOverrider), or KubeFed FederatedNamespace, FederatedDeployment and
//! FederatedService, and applied to the host with server-side apply.
//!
//! Selectors are resolved against the inventory when `federate` runs, so
//! the rendered objects name their clusters (and `--dry-run` shows which);
//! run it again after adding sites.

use std::collections::BTreeMap;
use std::path::Path;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FederationError, Kube};
use crate::inventory::{FederationKind, Inventory, Site, Sp};
use crate::render::Renderer;

/// The only `kind` of an app file.
pub const APP_KIND: &str = "FederatedApp";

/// An app file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct App {
    /// `edgeforge/v1`.
    pub api_version: Sp<String>,
    /// `FederatedApp`.
    pub kind: Sp<String>,
    /// The name of the policies and federated objects (default: the Deployment's).
    #[serde(default)]
    pub name: Option<Sp<String>>,
    /// The namespace (default: the Deployment's, else `default`).
    #[serde(default)]
    pub namespace: Option<Sp<String>>,
    /// Also create the namespace on the host and place it (default: true unless `default`).
    #[serde(default)]
    pub create_namespace: Option<bool>,
    /// Where the app runs.
    pub placement: Targets,
    /// Per-site changes, applied in order.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// A plain `apps/v1` Deployment.
    pub deployment: Value,
    /// A plain `v1` Service, optional.
    #[serde(default)]
    pub service: Option<Value>,
}

/// Sites by name, or by a selector over their cluster labels.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Targets {
    /// Site names.
    #[serde(default)]
    pub sites: Vec<Sp<String>>,
    /// Sites whose cluster labels match (`edgeforge.io/region`, site labels, ...).
    #[serde(default)]
    pub selector: Option<Selector>,
}

/// A label selector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Every label must be there with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Changes for some sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Override {
    /// Site names.
    #[serde(default)]
    pub sites: Vec<Sp<String>>,
    /// Sites whose cluster labels match.
    #[serde(default)]
    pub selector: Option<Selector>,
    /// `spec.replicas`.
    #[serde(default)]
    pub replicas: Option<i64>,
    /// The image of the first container.
    #[serde(default)]
    pub image: Option<Sp<String>>,
    /// JSON-patch operations on the Deployment.
    #[serde(default)]
    pub patches: Vec<PatchOp>,
}

/// One JSON-patch operation: `add`, `remove` or `replace`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOp {
    /// `add`, `remove` or `replace`.
    pub op: Sp<String>,
    /// A JSON pointer, e.g. `/metadata/annotations/foo`.
    pub path: Sp<String>,
    /// The value (`add`, `replace`).
    #[serde(default)]
    pub value: Option<Value>,
}

/// Reads an app file.
pub fn load(path: &Path) -> Result<App, FederationError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FederationError::Invalid(format!("reading the app file {}: {e}", path.display()))
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses an app file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<App, FederationError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        FederationError::Invalid(format!(
            "{file}:{line}:{col}: {}",
            first_line(&e.to_string())
        ))
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// An app checked against the inventory: what it resolves to.
#[derive(Debug, Clone)]
struct Resolved {
    name: String,
    namespace: String,
    create_namespace: bool,
    clusters: Vec<String>,
    /// Per override: its clusters.
    override_clusters: Vec<Vec<String>>,
}

/// Every problem of `app` against `inv`, as `FILE:LINE:COL: message` lines.
pub fn problems(file: &str, app: &App, inv: &Inventory) -> Vec<String> {
    resolve(file, app, inv).err().unwrap_or_default()
}

fn resolve(file: &str, app: &App, inv: &Inventory) -> Result<Resolved, Vec<String>> {
    let mut errors = Vec::new();
    let at = |sp_line: u32, sp_col: u32, msg: String| format!("{file}:{sp_line}:{sp_col}: {msg}");
    if app.api_version.value != "edgeforge/v1" {
        errors.push(at(
            app.api_version.line,
            app.api_version.col,
            format!(
                "`apiVersion` is `{}`; write `edgeforge/v1`",
                app.api_version.value
            ),
        ));
    }
    if app.kind.value != APP_KIND {
        errors.push(at(
            app.kind.line,
            app.kind.col,
            format!("`kind` is `{}`; write `{APP_KIND}`", app.kind.value),
        ));
    }
    if inv.federation.kind == FederationKind::None {
        errors.push(format!(
            "{file}: the inventory has no federation (`federation.type: none`); set `karmada` or `kubefed`"
        ));
    }
    let d = &app.deployment;
    if d["apiVersion"] != "apps/v1" || d["kind"] != "Deployment" {
        errors.push(format!(
            "{file}: `deployment` must be an `apps/v1` `Deployment` (it has apiVersion {} and kind {})",
            d["apiVersion"], d["kind"]
        ));
    }
    let deployment_name = d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if deployment_name.is_empty() {
        errors.push(format!("{file}: the deployment has no `metadata.name`"));
    }
    if d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        errors.push(format!("{file}: the deployment has no containers"));
    }
    if let Some(s) = &app.service
        && (s["apiVersion"] != "v1"
            || s["kind"] != "Service"
            || s["metadata"]["name"].as_str().is_none())
    {
        errors.push(format!(
            "{file}: `service` must be a `v1` `Service` with a `metadata.name`"
        ));
    }
    let namespace = app
        .namespace
        .as_ref()
        .map(|n| n.value.clone())
        .or_else(|| d["metadata"]["namespace"].as_str().map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let clusters = sites_of(file, &app.placement, inv, &mut errors);
    if clusters.is_empty() && errors.is_empty() {
        errors.push(format!("{file}: `placement` selects no site"));
    }
    let mut override_clusters = Vec::new();
    for o in &app.overrides {
        let targets = Targets {
            sites: o.sites.clone(),
            selector: o.selector.clone(),
        };
        let these = sites_of(file, &targets, inv, &mut errors);
        for c in &these {
            if !clusters.contains(c) {
                errors.push(format!(
                    "{file}: an override applies to cluster `{c}`, which `placement` does not select"
                ));
            }
        }
        if let Some(image) = &o.image
            && !valid_image(image)
        {
            errors.push(at(
                image.line,
                image.col,
                format!("`{}` is not an image reference", image.value),
            ));
        }
        for p in &o.patches {
            let op = p.op.as_str();
            if !matches!(op, "add" | "remove" | "replace") {
                errors.push(at(
                    p.op.line,
                    p.op.col,
                    format!("`op: {op}` is not add, remove or replace"),
                ));
            }
            if !p.path.starts_with('/') {
                errors.push(at(
                    p.path.line,
                    p.path.col,
                    format!(
                        "`path: {}` is not a JSON pointer (it starts with /)",
                        p.path.value
                    ),
                ));
            }
            let known = matches!(op, "add" | "remove" | "replace");
            if known && op == "remove" && p.value.is_some() {
                errors.push(at(
                    p.op.line,
                    p.op.col,
                    "`op: remove` takes no `value`".into(),
                ));
            }
            if known && op != "remove" && p.value.is_none() {
                errors.push(at(
                    p.op.line,
                    p.op.col,
                    format!("`op: {op}` needs a `value`"),
                ));
            }
        }
        if o.replicas.is_none() && o.image.is_none() && o.patches.is_empty() {
            errors.push(format!(
                "{file}: an override changes nothing (no replicas, image or patches)"
            ));
        }
        override_clusters.push(these);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Resolved {
        name: app
            .name
            .as_ref()
            .map_or(deployment_name, |n| n.value.clone()),
        create_namespace: app.create_namespace.unwrap_or(namespace != "default"),
        namespace,
        clusters,
        override_clusters,
    })
}

/// The cluster names of the sites `targets` selects, in inventory order.
fn sites_of(
    file: &str,
    targets: &Targets,
    inv: &Inventory,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut chosen: Vec<&Site> = Vec::new();
    for name in &targets.sites {
        match inv.sites.iter().find(|s| s.name.value == name.value) {
            Some(site) => chosen.push(site),
            None => errors.push(format!(
                "{file}:{}:{}: site `{}` is not in the inventory",
                name.line, name.col, name.value
            )),
        }
    }
    if let Some(sel) = &targets.selector {
        let matched: Vec<&Site> = inv
            .sites
            .iter()
            .filter(|s| {
                let labels = inv.cluster_labels(s);
                sel.match_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        if matched.is_empty() {
            errors.push(format!(
                "{file}: the selector {:?} matches no site's labels",
                sel.match_labels
            ));
        }
        chosen.extend(matched);
    }
    if targets.sites.is_empty() && targets.selector.is_none() {
        errors.push(format!(
            "{file}: a placement or override names no `sites` and no `selector`"
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for site in inv
        .sites
        .iter()
        .filter(|s| chosen.iter().any(|c| std::ptr::eq(*c, *s)))
    {
        let c = Inventory::cluster_name(site).to_string();
        if !names.contains(&c) {
            names.push(c);
        }
    }
    names
}

/// The federation objects of `app`, rendered from the templates, in the
/// order they are applied.
pub fn render(
    file: &str,
    app: &App,
    inv: &Inventory,
    renderer: &Renderer,
) -> Result<Vec<Value>, FederationError> {
    let r = resolve(file, app, inv).map_err(|e| FederationError::Invalid(e.join("\n")))?;
    let mut deployment = app.deployment.clone();
    deployment["metadata"]["namespace"] = json!(r.namespace);
    let mut service = app.service.clone();
    if let Some(s) = &mut service {
        s["metadata"]["namespace"] = json!(r.namespace);
    }
    let app_ctx = json!({"name": r.name, "namespace": r.namespace});
    let mut docs: Vec<String> = Vec::new();
    match inv.federation.kind {
        FederationKind::Karmada => {
            let mut resources = vec![selector_of(&deployment)];
            if let Some(s) = &service {
                resources.push(selector_of(s));
            }
            let overrides: Vec<Value> = app
                .overrides
                .iter()
                .zip(&r.override_clusters)
                .map(|(o, clusters)| karmada_overriders(o, &deployment, clusters))
                .collect();
            if !overrides.is_empty() {
                docs.push(renderer.render(
                    "federation/karmada/override-policy.yaml.tera",
                    &json!({"app": app_ctx, "resources": [selector_of(&deployment)], "overrides": overrides}),
                )?);
            }
            docs.push(renderer.render(
                "federation/karmada/propagation-policy.yaml.tera",
                &json!({"app": app_ctx, "resources": resources, "clusters": r.clusters}),
            )?);
        }
        FederationKind::Kubefed => {
            let placement: Vec<Value> = r.clusters.iter().map(|c| json!({"name": c})).collect();
            if r.create_namespace {
                docs.push(renderer.render(
                    "federation/kubefed/federated-namespace.yaml.tera",
                    &json!({"app": app_ctx, "placement": placement}),
                )?);
            }
            let mut per_cluster: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for (o, clusters) in app.overrides.iter().zip(&r.override_clusters) {
                for c in clusters {
                    per_cluster.entry(c).or_default().extend(kubefed_ops(o));
                }
            }
            let overrides: Vec<Value> = r
                .clusters
                .iter()
                .filter_map(|c| {
                    per_cluster
                        .get(c.as_str())
                        .map(|ops| json!({"clusterName": c, "clusterOverrides": ops}))
                })
                .collect();
            docs.push(renderer.render(
                "federation/kubefed/federated-deployment.yaml.tera",
                &json!({"app": app_ctx, "template": template_of(&deployment), "placement": placement, "overrides": overrides}),
            )?);
            if let Some(s) = &service {
                let name = s["metadata"]["name"].as_str().unwrap_or_default();
                docs.push(renderer.render(
                    "federation/kubefed/federated-service.yaml.tera",
                    &json!({"app": {"name": name, "namespace": r.namespace}, "template": template_of(s), "placement": placement}),
                )?);
            }
        }
        FederationKind::None => {}
    }
    let mut objects = Vec::new();
    if r.create_namespace {
        objects.push(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": r.namespace}}),
        );
    }
    for doc in docs {
        let v: Value = serde_saphyr::from_str(&doc).map_err(|e| {
            FederationError::Invalid(format!("a federation template rendered invalid YAML: {e}"))
        })?;
        objects.push(v);
    }
    if inv.federation.kind == FederationKind::Karmada {
        // On a Karmada host the plain objects are the templates the policies propagate.
        objects.push(deployment);
        if let Some(s) = service {
            objects.push(s);
        }
    }
    Ok(objects)
}

/// The resource selector of a plain object.
fn selector_of(object: &Value) -> Value {
    json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "name": object["metadata"]["name"],
    })
}

/// A KubeFed template: the object without apiVersion, kind, name and namespace.
fn template_of(object: &Value) -> Value {
    let mut t = json!({"spec": object["spec"]});
    let mut meta = serde_json::Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = object["metadata"].get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    if !meta.is_empty() {
        t["metadata"] = Value::Object(meta);
    }
    t
}

/// One Karmada override rule: plaintext (replicas, patches) and imageOverrider.
fn karmada_overriders(o: &Override, deployment: &Value, clusters: &[String]) -> Value {
    let mut plaintext = Vec::new();
    if let Some(r) = o.replicas {
        plaintext.push(json!({"path": "/spec/replicas", "operator": "replace", "value": r}));
    }
    for p in &o.patches {
        let mut entry = json!({"path": p.path.value, "operator": p.op.value});
        if let Some(v) = &p.value {
            entry["value"] = v.clone();
        }
        plaintext.push(entry);
    }
    let mut image = Vec::new();
    if let Some(wanted) = &o.image {
        let current = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default();
        let (from, to) = (ImageRef::parse(current), ImageRef::parse(wanted));
        for (component, a, b) in [
            ("Registry", &from.registry, &to.registry),
            ("Repository", &from.repository, &to.repository),
            ("Tag", &from.tag, &to.tag),
        ] {
            let operator = match (a.is_empty(), b.is_empty()) {
                _ if a == b => continue,
                (true, false) => "add",
                (false, true) => "remove",
                _ => "replace",
            };
            let mut entry = json!({
                "predicate": {"path": "/spec/template/spec/containers/0/image"},
                "component": component,
                "operator": operator,
            });
            if !b.is_empty() {
                entry["value"] = json!(b);
            }
            image.push(entry);
        }
    }
    json!({"clusters": clusters, "plaintext": plaintext, "image": image})
}

/// KubeFed clusterOverrides of one override.
fn kubefed_ops(o: &Override) -> Vec<Value> {
    let mut ops = Vec::new();
    if let Some(r) = o.replicas {
        ops.push(json!({"path": "/spec/replicas", "value": r}));
    }
    if let Some(image) = &o.image {
        ops.push(json!({"path": "/spec/template/spec/containers/0/image", "value": image.value}));
    }
    for p in &o.patches {
        let mut entry = json!({"path": p.path.value, "op": p.op.value});
        if let Some(v) = &p.value {
            entry["value"] = v.clone();
        }
        ops.push(entry);
    }
    ops
}

/// An image reference split the way Karmada's imageOverrider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    registry: String,
    repository: String,
    tag: String,
}

impl ImageRef {
    fn parse(image: &str) -> ImageRef {
        let (name, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, ""),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest)
            }
            _ => ("", name),
        };
        ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.into(),
        }
    }
}

fn valid_image(image: &str) -> bool {
    !image.is_empty()
        && !image.contains(char::is_whitespace)
        && !image.ends_with(':')
        && !image.starts_with('/')
}

/// The API resource of an object this module renders.
fn resource_of(object: &Value) -> Option<(ApiResource, bool)> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "Deployment" => ("deployments", true),
        "Service" => ("services", true),
        "PropagationPolicy" => ("propagationpolicies", true),
        "OverridePolicy" => ("overridepolicies", true),
        "FederatedNamespace" => ("federatednamespaces", true),
        "FederatedDeployment" => ("federateddeployments", true),
        "FederatedService" => ("federatedservices", true),
        _ => return None,
    };
    Some((
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    ))
}

/// Applies the rendered objects in order (server-side apply, skipping those
/// already as rendered).
pub async fn apply(host: &Kube<'_>, objects: &[Value]) -> Result<(), FederationError> {
    for object in objects {
        let (resource, namespaced) = resource_of(object).ok_or_else(|| {
            FederationError::Invalid(format!(
                "edgeforge does not apply {}",
                super::client::describe(object)
            ))
        })?;
        let api: kube::Api<DynamicObject> = if namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            kube::Api::namespaced_with(host.client(), ns, &resource)
        } else {
            kube::Api::all_with(host.client(), &resource)
        };
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| {
            FederationError::Invalid(format!("{}: {e}", super::client::describe(object)))
        })?;
        host.ensure(&api, &dynamic).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_as_karmada_sees_them() {
        assert_eq!(
            ImageRef::parse("nginx:1.17"),
            ImageRef {
                registry: "".into(),
                repository: "nginx".into(),
                tag: "1.17".into()
            }
        );
        assert_eq!(
            ImageRef::parse("registry.local:5000/lib/nginx:1.14.0-alpine"),
            ImageRef {
                registry: "registry.local:5000".into(),
                repository: "lib/nginx".into(),
                tag: "1.14.0-alpine".into()
            }
        );
        assert_eq!(ImageRef::parse("localhost/x").tag, "");
    }
}
