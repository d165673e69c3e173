//! The resource types the emulator serves: the built-in table (what a real
//! apiserver reports in discovery for those types: names, kinds, scopes, verbs,
//! short names, subresources) plus types registered at run time from
//! `CustomResourceDefinition` objects, and the discovery documents built from them.

use serde_json::{Value, json};

use super::fields::{ListShape, ListShapes};

/// The verbs of an ordinary stored resource.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Where objects of a resource are kept: its group and plural (all versions share it).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct StorageKey {
    pub group: String,
    pub resource: String,
}

/// One served resource in one group version.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Name of the CRD that registered it, for custom resources.
    pub crd: Option<String>,
    /// The CRD's `openAPIV3Schema` for this version.
    pub schema: Option<Value>,
    /// The CRD's `additionalPrinterColumns` for this version.
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Where its objects live.
    pub fn key(&self) -> StorageKey {
        StorageKey {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// True for types served by handlers rather than stored (access reviews).
    pub fn is_virtual(&self) -> bool {
        self.group == "authorization.k8s.io"
    }

    /// Types whose every change bumps generation (no spec/status split).
    pub fn generation_covers_status(&self) -> bool {
        !self.status
    }

    /// The rule a name must follow, as the apiserver validates it.
    pub fn name_rule(&self) -> NameRule {
        match (self.group.as_str(), self.plural.as_str()) {
            ("", "namespaces") => NameRule::Label,
            ("", "services") => NameRule::Label1035,
            ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
            _ => NameRule::Subdomain,
        }
    }
}

/// The rule an object name follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Label1035,
    /// Any path segment (RBAC objects, whose names hold `:`).
    PathSegment,
}

impl NameRule {
    /// None when `name` is valid, else the apiserver's explanation.
    pub fn check(self, name: &str) -> Option<String> {
        let label_ok = |s: &str, first_alpha: bool| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && (!first_alpha || s.as_bytes()[0].is_ascii_lowercase())
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        };
        match self {
            NameRule::Subdomain => {
                let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|l| label_ok(l, false));
                (!ok).then(|| "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
            }
            NameRule::Label => (!label_ok(name, false)).then(|| "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()),
            NameRule::Label1035 => (!label_ok(name, true)).then(|| "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()),
            NameRule::PathSegment => {
                if name.is_empty() || name == "." || name == ".." {
                    Some(format!("may not be '{name}'"))
                } else if name.contains('/') || name.contains('%') {
                    Some("may not contain '/' or '%'".to_string())
                } else {
                    None
                }
            }
        }
    }
}

/// Built-in types: (group, version, plural, singular, kind, namespaced, short names, status subresource, categories).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    &'static [&'static str],
);

const BUILTIN: &[Row] = &[
    (
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
        &[],
    ),
    (
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        &[],
    ),
    (
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
        &[],
    ),
    ("", "v1", "nodes", "node", "Node", false, &["no"], true, &[]),
    (
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        true,
        &["all"],
    ),
    (
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        false,
        &[],
    ),
    (
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        &[],
    ),
    (
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        true,
        &["all"],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        true,
        &["all"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        false,
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        &["api-extensions"],
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &[],
        false,
        &[],
    ),
];

/// The order of built-in groups in `/apis`, as a real apiserver lists them.
const GROUP_ORDER: &[&str] = &[
    "apps",
    "authorization.k8s.io",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
];

/// Every served resource type.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: Vec<ResourceType>,
}

impl Registry {
    /// The built-in types.
    pub fn builtin() -> Registry {
        let types = BUILTIN
            .iter()
            .map(
                |&(
                    group,
                    version,
                    plural,
                    singular,
                    kind,
                    namespaced,
                    short,
                    status,
                    categories,
                )| {
                    let verbs: Vec<String> = if group == "authorization.k8s.io" {
                        vec!["create".into()]
                    } else {
                        ALL_VERBS.iter().map(|v| v.to_string()).collect()
                    };
                    ResourceType {
                        group: group.into(),
                        version: version.into(),
                        kind: kind.into(),
                        plural: plural.into(),
                        singular: singular.into(),
                        namespaced,
                        short_names: short.iter().map(|s| s.to_string()).collect(),
                        categories: categories.iter().map(|s| s.to_string()).collect(),
                        status,
                        verbs,
                        crd: None,
                        schema: None,
                        printer_columns: Vec::new(),
                    }
                },
            )
            .collect();
        Registry { types }
    }

    /// The type served at `/apis/<group>/<version>/<plural>`.
    pub fn by_path(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type for an apiVersion and a kind, plural or singular name.
    pub fn lookup(&self, api_version: &str, kind_or_resource: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types.iter().find(|t| {
            t.group == group
                && t.version == version
                && (t.kind == kind_or_resource
                    || t.plural == kind_or_resource
                    || t.singular == kind_or_resource)
        })
    }

    /// All types, in registration order.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// Registers the served versions of a CRD (replacing an earlier registration of it).
    pub fn register_crd(&mut self, crd: &Value) {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.unregister_crd(&name);
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default();
        let kind = names["kind"].as_str().unwrap_or_default();
        let singular = names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            self.types.push(ResourceType {
                group: group.into(),
                version: version["name"].as_str().unwrap_or_default().into(),
                kind: kind.into(),
                plural: plural.into(),
                singular: singular.clone(),
                namespaced,
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                status: version["subresources"]["status"].is_object(),
                verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
                crd: Some(name.clone()),
                schema: Some(version["schema"]["openAPIV3Schema"].clone()),
                printer_columns: version["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }

    /// Removes the types a CRD registered.
    pub fn unregister_crd(&mut self, name: &str) {
        self.types.retain(|t| t.crd.as_deref() != Some(name));
    }

    /// The groups other than core, in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        let rank = |g: &str| {
            GROUP_ORDER
                .iter()
                .position(|o| *o == g)
                .unwrap_or(GROUP_ORDER.len())
        };
        groups.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        for (_, versions) in &mut groups {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    /// `/api`: APIVersions.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    /// `/apis`: APIGroupList.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(group, versions)| api_group(group, versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`: APIGroup, or None for an unknown group.
    pub fn group(&self, group: &str) -> Option<Value> {
        let groups = self.groups();
        let (name, versions) = groups.iter().find(|(g, _)| g == group)?;
        let mut doc = api_group(name, versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `/api/v1` or `/apis/<group>/<version>`: APIResourceList, or None for an unknown group version.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        let mut types: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect();
        if types.is_empty() {
            return None;
        }
        types.sort_by(|a, b| a.plural.cmp(&b.plural));
        for t in types {
            let mut entry = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": t.verbs,
            });
            if !t.short_names.is_empty() {
                entry["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                entry["categories"] = json!(t.categories);
            }
            resources.push(entry);
            if t.status {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
            if t.group.is_empty() && t.plural == "pods" {
                resources.push(json!({
                    "name": "pods/eviction",
                    "singularName": "",
                    "namespaced": true,
                    "group": "policy",
                    "version": "v1",
                    "kind": "Eviction",
                    "verbs": ["create"],
                }));
            }
        }
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

fn api_group(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first; others last.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (prefix, level) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u32>()
        {
            return (level, major, minor);
        }
    }
    (0, 0, 0)
}

/// `("apps", "v1")` from `apps/v1`, `("", "v1")` from `v1`.
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// List merge shapes of the built-in types (their OpenAPI list annotations, by field name).
pub(crate) struct BuiltinShapes;

impl ListShapes for BuiltinShapes {
    fn shape(&self, path: &[&str]) -> ListShape {
        if let Some(shape) = metadata_shape(path) {
            return shape;
        }
        let keys = |k: &[&str]| ListShape::Map(k.iter().map(|s| s.to_string()).collect());
        let last = path.last().copied().unwrap_or_default();
        let parent = path
            .len()
            .checked_sub(2)
            .map(|i| path[i])
            .unwrap_or_default();
        match last {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "env"
            | "volumes"
            | "imagePullSecrets" => keys(&["name"]),
            "volumeMounts" => keys(&["mountPath"]),
            "conditions" => keys(&["type"]),
            "hostAliases" => keys(&["ip"]),
            "ports"
                if matches!(
                    parent,
                    "containers" | "initContainers" | "ephemeralContainers"
                ) =>
            {
                keys(&["containerPort"])
            }
            "ports" if parent == "spec" => keys(&["port"]),
            _ => ListShape::Atomic,
        }
    }
}

fn metadata_shape(path: &[&str]) -> Option<ListShape> {
    match path {
        ["metadata", "finalizers"] => Some(ListShape::Set),
        ["metadata", "ownerReferences"] => Some(ListShape::Map(vec!["uid".into()])),
        _ => None,
    }
}

/// List merge shapes of a custom resource, from `x-kubernetes-list-type` in its schema (atomic when absent).
pub(crate) struct SchemaShapes<'a>(pub Option<&'a Value>);

impl ListShapes for SchemaShapes<'_> {
    fn shape(&self, path: &[&str]) -> ListShape {
        if let Some(shape) = metadata_shape(path) {
            return shape;
        }
        let Some(mut node) = self.0 else {
            return ListShape::Atomic;
        };
        for field in path {
            // Step through list items to their properties.
            while node.get("type").and_then(Value::as_str) == Some("array") {
                node = &node["items"];
            }
            node = match node.get("properties").and_then(|p| p.get(*field)) {
                Some(next) => next,
                None => return ListShape::Atomic,
            };
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => ListShape::Map(
                node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some("set") => ListShape::Set,
            _ => ListShape::Atomic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(NameRule::Subdomain.check("a.b-c").is_none());
        assert!(NameRule::Subdomain.check("Bad_Name").is_some());
        assert!(NameRule::Label.check("a.b").is_some());
        assert!(NameRule::Label1035.check("1abc").is_some());
        assert!(NameRule::PathSegment.check("system:discovery").is_none());
        let mut v = vec!["v1beta1", "v1", "v2alpha1", "v2"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, ["v2", "v1", "v1beta1", "v2alpha1"]);
    }
}
