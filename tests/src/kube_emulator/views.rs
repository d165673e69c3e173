//! What the apiserver renders for clients beyond the objects themselves:
//! `meta.k8s.io/v1` Tables (the columns `kubectl get` prints, per built-in
//! type and from a CRD's `additionalPrinterColumns`), the OpenAPI v3
//! documents kubectl reads to learn that a resource accepts
//! `fieldValidation`, and strict field validation (unknown fields).

use serde_json::{Value, json};

use super::resources::{Registry, ResourceType};
use super::status::ApiError;

/// A Table of `list`'s items (a one-item list for a GET) with the type's columns.
pub(crate) fn table(rt: &ResourceType, list: &Value, include_object: Option<&str>) -> Value {
    let columns = columns(rt);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(item, now)).collect();
            let object = match include_object {
                Some("None") => Value::Null,
                Some("Object") => item.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list["metadata"]["resourceVersion"]},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

type Cell = Box<dyn Fn(&Value, jiff::Timestamp) -> Value>;

struct Column {
    name: String,
    kind: &'static str,
    format: &'static str,
    description: String,
    priority: u8,
    cell: Cell,
}

fn column(name: &str, kind: &'static str, priority: u8, cell: Cell) -> Column {
    Column {
        name: name.to_string(),
        kind,
        format: if name == "Name" { "name" } else { "" },
        description: format!("{name} column"),
        priority,
        cell,
    }
}

fn text_at(object: &Value, path: &[&str]) -> String {
    let mut current = object;
    for p in path {
        current = &current[*p];
    }
    match current {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text_cell(path: &'static [&'static str], empty: &'static str) -> Cell {
    Box::new(move |o, _| {
        let text = text_at(o, path);
        json!(if text.is_empty() {
            empty.to_string()
        } else {
            text
        })
    })
}

fn count_cell(field: &'static str) -> Cell {
    Box::new(move |o, _| {
        let n = match &o[field] {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        json!(n)
    })
}

fn age_cell() -> Cell {
    Box::new(|o, now| json!(age(o["metadata"]["creationTimestamp"].as_str(), now)))
}

/// The apiserver's human-readable duration since a timestamp (`42s`, `5m3s`, `3h`, `2d4h`, ...).
pub(crate) fn age(timestamp: Option<&str>, now: jiff::Timestamp) -> String {
    let Some(then) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let seconds = now.as_second() - then.as_second();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let with = |major: i64, unit: &str, minor: i64, minor_unit: &str| {
        if minor == 0 {
            format!("{major}{unit}")
        } else {
            format!("{major}{unit}{minor}{minor_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(days, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        with(days / 365, "y", days % 365, "d")
    } else {
        format!("{}y", days / 365)
    }
}

fn columns(rt: &ResourceType) -> Vec<Column> {
    let mut cols = vec![column(
        "Name",
        "string",
        0,
        text_cell(&["metadata", "name"], ""),
    )];
    let age_col = || column("Age", "string", 0, age_cell());
    let created_at = || {
        column(
            "Created At",
            "date",
            0,
            text_cell(&["metadata", "creationTimestamp"], ""),
        )
    };
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            cols.push(column(
                "Status",
                "string",
                0,
                text_cell(&["status", "phase"], ""),
            ));
            cols.push(age_col());
        }
        ("", "configmaps") => {
            cols.push(column("Data", "integer", 0, count_cell("data")));
            cols.push(age_col());
        }
        ("", "secrets") => {
            cols.push(column("Type", "string", 0, text_cell(&["type"], "")));
            cols.push(column("Data", "integer", 0, count_cell("data")));
            cols.push(age_col());
        }
        ("", "serviceaccounts") => {
            cols.push(column("Secrets", "integer", 0, count_cell("secrets")));
            cols.push(age_col());
        }
        ("", "services") => {
            cols.push(column(
                "Type",
                "string",
                0,
                text_cell(&["spec", "type"], ""),
            ));
            cols.push(column(
                "Cluster-IP",
                "string",
                0,
                text_cell(&["spec", "clusterIP"], "<none>"),
            ));
            cols.push(column(
                "External-IP",
                "string",
                0,
                Box::new(|_, _| json!("<none>")),
            ));
            cols.push(column(
                "Port(s)",
                "string",
                0,
                Box::new(|o, _| {
                    let ports: Vec<String> = o["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect();
                    json!(if ports.is_empty() {
                        "<none>".to_string()
                    } else {
                        ports.join(",")
                    })
                }),
            ));
            cols.push(age_col());
        }
        ("", "pods") => {
            cols.push(column(
                "Ready",
                "string",
                0,
                Box::new(|o, _| {
                    let total = o["spec"]["containers"]
                        .as_array()
                        .map(Vec::len)
                        .unwrap_or(0);
                    let ready = o["status"]["containerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| c["ready"] == json!(true))
                        .count();
                    json!(format!("{ready}/{total}"))
                }),
            ));
            cols.push(column(
                "Status",
                "string",
                0,
                text_cell(&["status", "phase"], ""),
            ));
            cols.push(column("Restarts", "string", 0, Box::new(|_, _| json!("0"))));
            cols.push(age_col());
            cols.push(column(
                "IP",
                "string",
                1,
                text_cell(&["status", "podIP"], "<none>"),
            ));
            cols.push(column(
                "Node",
                "string",
                1,
                text_cell(&["spec", "nodeName"], "<none>"),
            ));
        }
        ("", "nodes") => {
            cols.push(column(
                "Status",
                "string",
                0,
                Box::new(|o, _| {
                    let ready = o["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["type"] == "Ready")
                        .map(|c| c["status"] == "True");
                    let status = match ready {
                        Some(true) => "Ready",
                        Some(false) => "NotReady",
                        None => "Unknown",
                    };
                    json!(if o["spec"]["unschedulable"] == true {
                        format!("{status},SchedulingDisabled")
                    } else {
                        status.to_string()
                    })
                }),
            ));
            cols.push(column(
                "Roles",
                "string",
                0,
                Box::new(|o, _| {
                    let mut roles: Vec<String> = o["metadata"]["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, _)| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(str::to_string)
                        })
                        .collect();
                    roles.sort();
                    json!(if roles.is_empty() {
                        "<none>".to_string()
                    } else {
                        roles.join(",")
                    })
                }),
            ));
            cols.push(age_col());
            cols.push(column(
                "Version",
                "string",
                0,
                text_cell(&["status", "nodeInfo", "kubeletVersion"], ""),
            ));
            for (name, kind) in [("Internal-IP", "InternalIP"), ("External-IP", "ExternalIP")] {
                cols.push(column(
                    name,
                    "string",
                    1,
                    Box::new(move |o, _| {
                        let addresses: Vec<&str> = o["status"]["addresses"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|a| a["type"] == kind)
                            .filter_map(|a| a["address"].as_str())
                            .collect();
                        json!(if addresses.is_empty() {
                            "<none>".to_string()
                        } else {
                            addresses.join(",")
                        })
                    }),
                ));
            }
            const INFO: [(&str, &[&str]); 3] = [
                ("OS-Image", &["status", "nodeInfo", "osImage"]),
                ("Kernel-Version", &["status", "nodeInfo", "kernelVersion"]),
                (
                    "Container-Runtime",
                    &["status", "nodeInfo", "containerRuntimeVersion"],
                ),
            ];
            for (name, path) in INFO {
                cols.push(column(name, "string", 1, text_cell(path, "<unknown>")));
            }
        }
        ("apps", "deployments") => {
            cols.push(column(
                "Ready",
                "string",
                0,
                Box::new(|o, _| {
                    let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
                    let want = o["spec"]["replicas"].as_i64().unwrap_or(0);
                    json!(format!("{ready}/{want}"))
                }),
            ));
            cols.push(column(
                "Up-to-date",
                "integer",
                0,
                Box::new(|o, _| json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))),
            ));
            cols.push(column(
                "Available",
                "integer",
                0,
                Box::new(|o, _| json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))),
            ));
            cols.push(age_col());
        }
        ("rbac.authorization.k8s.io", "clusterroles" | "roles") | ("apiextensions.k8s.io", _) => {
            cols.push(created_at())
        }
        ("rbac.authorization.k8s.io", "clusterrolebindings" | "rolebindings") => {
            cols.push(column(
                "Role",
                "string",
                0,
                Box::new(|o, _| {
                    json!(format!(
                        "{}/{}",
                        text_at(o, &["roleRef", "kind"]),
                        text_at(o, &["roleRef", "name"])
                    ))
                }),
            ));
            cols.push(age_col());
        }
        _ if rt.crd.is_some() && !rt.printer_columns.is_empty() => {
            for spec in &rt.printer_columns {
                let name = spec["name"].as_str().unwrap_or_default().to_string();
                let path = spec["jsonPath"].as_str().unwrap_or_default().to_string();
                let date = spec["type"] == "date";
                let priority = spec["priority"].as_u64().unwrap_or(0).min(255) as u8;
                cols.push(column(
                    &name,
                    "string",
                    priority,
                    Box::new(move |o, now| {
                        let value = json_path(o, &path);
                        if date {
                            return json!(age(value.as_str(), now));
                        }
                        match value {
                            Value::Null => json!(""),
                            Value::String(_) => value,
                            other => json!(other.to_string()),
                        }
                    }),
                ));
            }
        }
        _ => cols.push(age_col()),
    }
    cols
}

/// The subset of JSONPath printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
fn json_path(object: &Value, path: &str) -> Value {
    let mut current = object.clone();
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            current = current[&r[..end]].clone();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Value::Null;
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Ok(index) = inner.parse::<usize>() {
                current = current[index].clone();
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let Some((key, value)) = filter.split_once("==") else {
                    return Value::Null;
                };
                let wanted = value.trim().trim_matches('"').trim_matches('\'');
                current = current
                    .as_array()
                    .and_then(|items| {
                        items
                            .iter()
                            .find(|i| i[key.trim()].as_str() == Some(wanted))
                            .cloned()
                    })
                    .unwrap_or(Value::Null);
            } else {
                return Value::Null;
            }
        } else {
            return Value::Null;
        }
    }
    current
}

/// `/openapi/v3`: one entry per group version.
pub(crate) fn openapi_v3_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut seen = Vec::new();
    for t in registry.types() {
        let gv = if t.group.is_empty() {
            "api/v1".to_string()
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        if !seen.contains(&gv) {
            paths.insert(gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", registry_hash(registry, &gv))}));
            seen.push(gv);
        }
    }
    json!({"paths": paths})
}

fn registry_hash(registry: &Registry, gv: &str) -> String {
    use sha2::Digest;
    let names: Vec<String> = registry
        .types()
        .iter()
        .map(|t| {
            format!(
                "{}/{}/{}/{}",
                t.group,
                t.version,
                t.plural,
                t.crd.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let digest = sha2::Sha256::digest(format!("{gv}:{}", names.join(",")).as_bytes());
    hex::encode(&digest[..16]).to_uppercase()
}

/// `/openapi/v3/<api/v1|apis/g/v>`: paths with their operations, each PATCH
/// declaring `fieldValidation` and tagged with its GroupVersionKind, plus a
/// permissive schema per kind.
pub(crate) fn openapi_v3_group(registry: &Registry, gv_path: &str) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1"] => (String::new(), "v1".to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let types: Vec<&ResourceType> = registry
        .types()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let params = |names: &[&str]| -> Vec<Value> {
        names.iter().map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true})).collect()
    };
    for t in types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let schema_name = format!(
            "{}.{}.{}",
            if t.group.is_empty() {
                "io.k8s.api.core"
            } else {
                &t.group
            },
            t.version,
            t.kind
        );
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let mut schema = t
            .schema
            .clone()
            .filter(|s| s.is_object())
            .unwrap_or_else(|| json!({"type": "object"}));
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
        let body = json!({"content": {"application/json": {"schema": reference}}});
        let op = |verb: &str, action: &str, query: &[&str]| {
            let mut operation = json!({
                "operationId": format!("{verb}{}", t.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params(query),
                "responses": {"200": body},
            });
            if matches!(action, "post" | "put" | "patch") {
                operation["requestBody"] = body.clone();
            }
            operation
        };
        let write_params: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "pretty"];
        let patch_params: &[&str] = &[
            "dryRun",
            "fieldManager",
            "fieldValidation",
            "force",
            "pretty",
        ];
        let prefix = if t.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/{}", t.group, t.version)
        };
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": op("list", "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion", "timeoutSeconds"]),
                "post": op("create", "post", write_params),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op("read", "get", &["pretty"]),
                "put": op("replace", "put", write_params),
                "patch": op("patch", "patch", patch_params),
                "delete": op("delete", "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
        if t.status {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({
                    "get": op("read", "get", &["pretty"]),
                    "put": op("replace", "put", write_params),
                    "patch": op("patch", "patch", patch_params),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-emulator stand-in)", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Top-level fields each built-in kind has (besides apiVersion, kind, metadata).
fn builtin_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "ConfigMap" => &["data", "binaryData", "immutable"],
        "Secret" => &["data", "stringData", "type", "immutable"],
        "ServiceAccount" => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        "Role" => &["rules"],
        "ClusterRole" => &["rules", "aggregationRule"],
        "RoleBinding" | "ClusterRoleBinding" => &["roleRef", "subjects"],
        "Event" => &[
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ],
        "Namespace"
        | "Node"
        | "Pod"
        | "Service"
        | "Deployment"
        | "CustomResourceDefinition"
        | "SelfSubjectAccessReview" => &["spec", "status"],
        _ => return None,
    })
}

const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// `fieldValidation=Strict`: a 400 naming every field the type does not declare.
/// Built-in types are checked at the top level and in metadata; custom resources against their schema.
pub(crate) fn check_unknown_fields(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let mut unknown = Vec::new();
    let Some(map) = object.as_object() else {
        return Ok(());
    };
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        if key == "metadata" {
            for meta_key in value.as_object().into_iter().flatten().map(|(k, _)| k) {
                if !METADATA_FIELDS.contains(&meta_key.as_str()) {
                    unknown.push(format!("metadata.{meta_key}"));
                }
            }
            continue;
        }
        match (&rt.crd, &rt.schema) {
            (Some(_), Some(schema)) => {
                let props = &schema["properties"];
                if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
                    continue;
                }
                match props.get(key) {
                    Some(sub) => walk_schema(sub, value, key, &mut unknown),
                    None => unknown.push(key.clone()),
                }
            }
            (Some(_), None) => {}
            (None, _) => {
                if builtin_fields(&rt.kind).is_some_and(|known| !known.contains(&key.as_str())) {
                    unknown.push(key.clone());
                }
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|u| format!("unknown field \"{u}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        listed.join(", ")
    )))
}

fn walk_schema(schema: &Value, value: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == json!(true)
        || schema.get("additionalProperties").is_some()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match props.get(key) {
                    Some(sub) => walk_schema(sub, child, &child_path, unknown),
                    None => unknown.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_schema(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_the_apiserver() {
        let now: jiff::Timestamp = "2025-01-10T00:00:00Z".parse().unwrap();
        let at = |s: &str| age(Some(s), now);
        assert_eq!(at("2025-01-09T23:59:15Z"), "45s");
        assert_eq!(at("2025-01-09T23:55:00Z"), "5m");
        assert_eq!(at("2025-01-09T23:54:30Z"), "5m30s");
        assert_eq!(at("2025-01-09T20:00:00Z"), "4h");
        assert_eq!(at("2025-01-07T00:00:00Z"), "3d");
    }

    #[test]
    fn json_path_filters() {
        let obj = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(json_path(&obj, ".status.conditions[0].type"), json!("A"));
    }
}
