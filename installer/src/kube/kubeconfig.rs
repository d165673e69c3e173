//! Kubeconfig files, edited as YAML structures (never by string
//! replacement): the one k3s writes on a server (`/etc/rancher/k3s/k3s.yaml`,
//! cluster, user and context all called `default`, server
//! `https://127.0.0.1:6443`) rewritten for the operator — entries renamed to
//! the site's name, `server:` the address the operator reaches — and merged
//! into another kubeconfig, replacing the entries of that name and keeping
//! every other one.

use serde_json::{Map, Value};

/// The three lists of a kubeconfig whose entries are keyed by `name`.
const LISTS: [&str; 3] = ["clusters", "users", "contexts"];

/// Errors of reading or editing a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The text is not YAML.
    #[error("{origin} is not YAML: {message}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// The YAML is not a kubeconfig edgeforge can use.
    #[error("{origin} is not a usable kubeconfig: {message}")]
    Shape {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The result could not be written as YAML.
    #[error("writing the kubeconfig as YAML: {0}")]
    Write(String),
}

/// The kubeconfig `yaml` (from `origin`) reduced to its current context's
/// cluster and user, all three renamed `name`, its cluster's `server` set
/// to `server`, and `name` the current context.
pub fn rewrite(
    yaml: &str,
    origin: &str,
    name: &str,
    server: &str,
) -> Result<String, KubeconfigError> {
    let doc = parse(yaml, origin)?;
    let shape = |message: String| KubeconfigError::Shape {
        origin: origin.to_string(),
        message,
    };
    let contexts = list(&doc, "contexts");
    let current = doc.get("current-context").and_then(Value::as_str);
    let context = match current {
        Some(c) if !c.is_empty() => find(contexts, c),
        _ if contexts.len() == 1 => contexts.first(),
        _ => None,
    }
    .ok_or_else(|| shape("it has no current context".into()))?;
    let ctx = context
        .get("context")
        .ok_or_else(|| shape("its current context has no `context`".into()))?;
    let cluster_name = ctx.get("cluster").and_then(Value::as_str).unwrap_or("");
    let user_name = ctx.get("user").and_then(Value::as_str).unwrap_or("");
    let mut cluster = find(list(&doc, "clusters"), cluster_name)
        .and_then(|c| c.get("cluster"))
        .cloned()
        .ok_or_else(|| shape(format!("it has no cluster `{cluster_name}`")))?;
    let user = find(list(&doc, "users"), user_name)
        .and_then(|u| u.get("user"))
        .cloned()
        .ok_or_else(|| shape(format!("it has no user `{user_name}`")))?;
    match cluster.as_object_mut() {
        Some(c) => {
            c.insert("server".into(), Value::String(server.to_string()));
        }
        None => return Err(shape(format!("cluster `{cluster_name}` is not a mapping"))),
    }
    let mut context_body = ctx.clone();
    if let Some(c) = context_body.as_object_mut() {
        c.insert("cluster".into(), Value::String(name.to_string()));
        c.insert("user".into(), Value::String(name.to_string()));
    }
    let entry = |key: &str, body: Value| {
        let mut m = Map::new();
        m.insert("name".into(), Value::String(name.to_string()));
        m.insert(key.into(), body);
        Value::Object(m)
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String("v1".into()));
    out.insert("kind".into(), Value::String("Config".into()));
    out.insert(
        "clusters".into(),
        Value::Array(vec![entry("cluster", cluster)]),
    );
    out.insert("users".into(), Value::Array(vec![entry("user", user)]));
    out.insert(
        "contexts".into(),
        Value::Array(vec![entry("context", context_body)]),
    );
    out.insert("current-context".into(), Value::String(name.to_string()));
    if let Some(p) = doc.get("preferences") {
        out.insert("preferences".into(), p.clone());
    }
    write(&Value::Object(out))
}

/// `add` merged into `existing` (none: an empty kubeconfig): each of its
/// clusters, users and contexts replaces the entry of the same name or is
/// appended; every other entry and setting of `existing` stays. The current
/// context stays too, unless `existing` had none.
pub fn merge(existing: Option<(&str, &str)>, add: (&str, &str)) -> Result<String, KubeconfigError> {
    let mut base = match existing {
        Some((text, origin)) if !text.trim().is_empty() => parse(text, origin)?,
        _ => serde_json::json!({"apiVersion": "v1", "kind": "Config"}),
    };
    let incoming = parse(add.0, add.1)?;
    let origin = existing.map_or("the kubeconfig", |(_, o)| o);
    let map = base.as_object_mut().ok_or_else(|| KubeconfigError::Shape {
        origin: origin.to_string(),
        message: "it is not a mapping".into(),
    })?;
    for key in LISTS {
        let slot = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if slot.is_null() {
            *slot = Value::Array(Vec::new());
        }
        let entries = slot.as_array_mut().ok_or_else(|| KubeconfigError::Shape {
            origin: origin.to_string(),
            message: format!("`{key}` is not a list"),
        })?;
        for new in list(&incoming, key) {
            let name = new.get("name").and_then(Value::as_str);
            match entries
                .iter_mut()
                .find(|e| name.is_some() && e.get("name").and_then(Value::as_str) == name)
            {
                Some(old) => *old = new.clone(),
                None => entries.push(new.clone()),
            }
        }
    }
    let has_current = map
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if !has_current && let Some(c) = incoming.get("current-context") {
        map.insert("current-context".into(), c.clone());
    }
    write(&base)
}

/// The server URL of the current context's cluster (for messages and checks).
pub fn server(yaml: &str, origin: &str) -> Result<Option<String>, KubeconfigError> {
    let doc = parse(yaml, origin)?;
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    let cluster = find(list(&doc, "contexts"), current)
        .and_then(|c| c.pointer("/context/cluster"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(find(list(&doc, "clusters"), cluster)
        .and_then(|c| c.pointer("/cluster/server"))
        .and_then(Value::as_str)
        .map(str::to_string))
}

fn parse(yaml: &str, origin: &str) -> Result<Value, KubeconfigError> {
    let doc: Value = serde_saphyr::from_str(yaml).map_err(|e| KubeconfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string().lines().next().unwrap_or_default().to_string(),
    })?;
    if !doc.is_object() {
        return Err(KubeconfigError::Shape {
            origin: origin.to_string(),
            message: "it is not a mapping".into(),
        });
    }
    Ok(doc)
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn find<'a>(entries: &'a [Value], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn write(doc: &Value) -> Result<String, KubeconfigError> {
    serde_saphyr::to_string(doc).map_err(|e| KubeconfigError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn k3s_yaml_is_renamed_and_pointed_at_the_operators_address() {
        let out = rewrite(K3S_YAML, "k3s.yaml", "lab", "https://127.0.0.1:2216").unwrap();
        let doc = yaml(&out);
        assert_eq!(doc["current-context"], "lab");
        assert_eq!(doc["clusters"][0]["name"], "lab");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:2216"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0EtREFUQQ=="
        );
        assert_eq!(doc["users"][0]["name"], "lab");
        assert_eq!(doc["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(doc["contexts"][0]["name"], "lab");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "lab");
        assert_eq!(doc["contexts"][0]["context"]["user"], "lab");
        assert_eq!(
            server(&out, "x").unwrap().as_deref(),
            Some("https://127.0.0.1:2216")
        );
        // A name that looks like the old one elsewhere in the file is not touched.
        let tricky = K3S_YAML.replace("Q0VSVA==", "default");
        let doc = yaml(&rewrite(&tricky, "k3s.yaml", "lab", "https://h:1").unwrap());
        assert_eq!(
            doc["users"][0]["user"]["client-certificate-data"],
            "default"
        );
    }

    #[test]
    fn a_kubeconfig_without_a_current_context_or_its_cluster_is_refused() {
        let err = rewrite(
            "apiVersion: v1\nkind: Config\n",
            "k3s.yaml",
            "lab",
            "https://h:1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("k3s.yaml is not a usable kubeconfig: it has no current context"),
            "{err}"
        );
        let err = rewrite(
            &K3S_YAML.replace("name: default\ncontexts", "name: other\ncontexts"),
            "k3s.yaml",
            "lab",
            "https://h:1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no cluster `default`"), "{err}");
        let err = rewrite("a: [", "k3s.yaml", "lab", "https://h:1")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("k3s.yaml is not YAML"), "{err}");
    }

    #[test]
    fn merging_replaces_the_sites_entries_and_keeps_every_other() {
        let site = rewrite(K3S_YAML, "k3s.yaml", "lab", "https://127.0.0.1:2216").unwrap();
        let mine = "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod
  cluster: {server: 'https://prod:6443'}
- name: lab
  cluster: {server: 'https://old-lab:6443'}
users:
- name: prod
  user: {token: abc}
contexts:
- name: prod
  context: {cluster: prod, user: prod, namespace: apps}
preferences: {colors: true}
";
        let doc = yaml(&merge(Some((mine, "config")), (&site, "lab.yaml")).unwrap());
        assert_eq!(doc["current-context"], "prod");
        let names = |key: &str| -> Vec<String> {
            doc[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("clusters"), ["prod", "lab"]);
        assert_eq!(names("users"), ["prod", "lab"]);
        assert_eq!(names("contexts"), ["prod", "lab"]);
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "https://127.0.0.1:2216"
        );
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "apps");
        assert_eq!(doc["users"][0]["user"]["token"], "abc");
        assert_eq!(doc["preferences"]["colors"], true);
        // Into nothing: the site's kubeconfig, current context included.
        let fresh = yaml(&merge(None, (&site, "lab.yaml")).unwrap());
        assert_eq!(fresh["current-context"], "lab");
        assert_eq!(fresh["clusters"][0]["name"], "lab");
        // Merging again changes nothing.
        let once = merge(Some((mine, "config")), (&site, "lab.yaml")).unwrap();
        let twice = merge(Some((&once, "config")), (&site, "lab.yaml")).unwrap();
        assert_eq!(once, twice);
    }
}
