//! The template context of a task: what `{{ ... }}` in playbooks and
//! templates can see.
//!
//! Pure: built from the typed inventory. The inventory part is `inventory`
//! (its name), `site`, `cluster` (name and every node of the site),
//! `defaults`, `versions` and, for node tasks, `node` (the node's effective,
//! layered settings). The executor adds `facts` (host targets), `vars` (the
//! playbook's), `secrets` (values read from references) and `outputs` (what
//! earlier tasks published, as `outputs["<task key>"].<name>`).
//!
//! For the k3s layer, `cluster` also says who the first server is
//! (`first_server`, its task `first_k3s_task` whose outputs hold the tokens
//! and CA hash, `server_url` the others join, `servers` how many there are,
//! `api_server` the kubeconfig's address), and `node.k3s` carries every k3s
//! setting of the node as its templates need it (`config.yaml` values,
//! registries, proxies, air-gap), already layered and defaulted.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::inventory::{Inventory, Machine, NodeView, Role, SecretRef, Site};

/// Where a node's registry TLS files go (`<dir>/<registry>/ca.crt`, `client.crt`, `client.key`).
pub const REGISTRY_TLS_DIR: &str = "/etc/rancher/k3s/tls";

/// The context of a task on `view`'s node.
pub fn node(inv: &Inventory, view: &NodeView<'_>) -> Value {
    let mut ctx = site(inv, view.site);
    let mut node = node_json(view);
    // The node's place in its cluster, for the k3s templates.
    let first = ctx["cluster"]["first_server"].as_str() == Some(view.node.name.as_str());
    let servers = ctx["cluster"]["servers"].as_u64().unwrap_or(0);
    let k3s = &mut node["k3s"];
    k3s["first"] = json!(first);
    k3s["cluster_init"] = json!(first && servers > 1);
    k3s["unit"] = json!(match view.node.role {
        Role::Server => "k3s",
        Role::Agent => "k3s-agent",
    });
    if let Some(map) = ctx.as_object_mut() {
        map.insert("node".into(), node);
    }
    ctx
}

/// The context of a site-level task (the cluster, its registration): no `node`.
pub fn site(inv: &Inventory, site: &Site) -> Value {
    let cluster_nodes: Vec<Value> = inv.site_nodes(site).map(|v| node_json(&v)).collect();
    let servers = site.nodes.iter().filter(|n| n.role == Role::Server).count();
    let first = inv.site_nodes(site).find(|v| v.node.role == Role::Server);
    json!({
        "inventory": { "name": inv.name.as_ref().map(|n| n.value.clone()) },
        "site": {
            "name": site.name.value,
            "region": site.region,
            "zone": site.zone,
            "labels": site.labels,
        },
        "cluster": {
            "name": Inventory::cluster_name(site),
            "nodes": cluster_nodes,
            "servers": servers,
            "first_server": first.as_ref().map(|v| v.node.name.value.clone()),
            "first_k3s_task": first.as_ref().map(|v| format!("{}/k3s", v.node.name.as_str())),
            "server_url": first.as_ref().map(|v| {
                format!("https://{}:6443", crate::inventory::resolve::url_host(v.k3s_join_address()))
            }),
            "api_server": Inventory::api_server(site),
        },
        "defaults": { "labels": inv.defaults.labels, "vm": inv.defaults.vm },
        "versions": {
            "k3s": inv.versions.k3s.as_ref().map(|s| s.value.clone()),
            "os_image": inv.versions.os_image.as_ref().map(|s| s.value.clone()),
        },
    })
}

/// One node as templates see it, with its layered settings.
fn node_json(v: &NodeView<'_>) -> Value {
    json!({
        "name": v.node.name.value,
        "role": v.node.role,
        "address": v.node.address.value,
        "labels": v.labels,
        "hypervisor_host": v.node.hypervisor_host,
        "ssh_user": v.ssh.user.as_ref().map_or("root", |u| u.as_str()),
        "k3s": k3s_json(v),
        "vm": v.vm,
        "machine": match &v.node.machine {
            Machine::Existing => "existing",
            Machine::Libvirt { .. } => "libvirt",
            Machine::Redfish { .. } => "redfish",
        },
        // A bare-metal node edgeforge installs: its `machine.install` (else null).
        "install": match &v.node.machine {
            Machine::Redfish { install: Some(i), .. } => json!({
                "disk": i.disk,
                "image": i.image,
                "ssh_timeout": i.ssh_timeout,
            }),
            _ => Value::Null,
        },
    })
}

/// A node's k3s settings as its templates use them.
fn k3s_json(v: &NodeView<'_>) -> Value {
    let k = &v.k3s;
    let text = |s: &Option<crate::inventory::Sp<String>>| s.as_ref().map(|s| s.value.clone());
    let list = |l: &Option<Vec<crate::inventory::Sp<String>>>| {
        l.as_ref()
            .map(|l| l.iter().map(|s| s.value.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "cluster_cidr": text(&k.cluster_cidr),
        "service_cidr": text(&k.service_cidr),
        "cluster_dns": text(&k.cluster_dns),
        "tls_san": list(&k.tls_san),
        "node_ip": v.k3s_node_ip(),
        "node_external_ip": text(&k.node_external_ip),
        "flannel_iface": v.k3s_flannel_iface(),
        "flannel_backend": text(&k.flannel_backend),
        "disable": list(&k.disable),
        "embedded_registry": k.embedded_registry,
        "write_kubeconfig_mode": text(&k.write_kubeconfig_mode).unwrap_or_else(|| "0600".into()),
        "node_labels": labels,
        "node_taints": list(&k.node_taints),
        "extra_config": k.extra_config.clone().unwrap_or_default(),
        "airgap_images": k.airgap_images.unwrap_or(true),
        "registries": registries_json(v),
        "registry_tls": registry_tls_json(v),
        "proxy": {
            "http": k.proxy.as_ref().and_then(|p| p.http_proxy.clone()),
            "https": k.proxy.as_ref().and_then(|p| p.https_proxy.clone()),
            "no": k.proxy.as_ref().and_then(|p| p.no_proxy.clone()),
        },
        "has_registries": k.registry_mirrors.is_some() || k.registry_configs.is_some(),
    })
}

/// registries.yaml without its secrets: `mirrors` (endpoints, rewrites) and,
/// per registry, which credentials and TLS files it has (the template takes
/// the secret values from `secrets["registry/<host>/<password|token|key>"]`).
fn registries_json(v: &NodeView<'_>) -> Value {
    let k = &v.k3s;
    let mut mirrors: BTreeMap<String, Value> = BTreeMap::new();
    for (host, endpoints) in k.registry_mirrors.iter().flatten() {
        mirrors.insert(
            host.clone(),
            json!({"endpoint": endpoints.iter().map(|e| e.value.clone()).collect::<Vec<_>>()}),
        );
    }
    for (host, rewrite) in k.registry_rewrites.iter().flatten() {
        let entry = mirrors.entry(host.clone()).or_insert_with(|| json!({}));
        entry["rewrite"] = json!(rewrite);
    }
    let tls_dir = REGISTRY_TLS_DIR;
    let configs: BTreeMap<String, Value> = k
        .registry_configs
        .iter()
        .flatten()
        .map(|(host, c)| {
            (
                host.clone(),
                json!({
                    "username": c.username,
                    "password": c.password.is_some(),
                    "token": c.token.is_some(),
                    "ca_file": c.ca_file.as_ref().map(|_| format!("{tls_dir}/{host}/ca.crt")),
                    "cert_file": c.cert_file.as_ref().map(|_| format!("{tls_dir}/{host}/client.crt")),
                    "key_file": c.key.as_ref().map(|_| format!("{tls_dir}/{host}/client.key")),
                    "insecure_skip_verify": c.insecure_skip_verify,
                }),
            )
        })
        .collect();
    json!({"mirrors": mirrors, "configs": configs})
}

/// The registry TLS files to place on the node (controller paths; the key is a secret).
fn registry_tls_json(v: &NodeView<'_>) -> Value {
    Value::Array(
        v.k3s
            .registry_configs
            .iter()
            .flatten()
            .filter(|(_, c)| c.ca_file.is_some() || c.cert_file.is_some() || c.key.is_some())
            .map(|(host, c)| {
                json!({
                    "host": host,
                    "ca_file": c.ca_file.as_ref().map(|p| p.display().to_string()),
                    "cert_file": c.cert_file.as_ref().map(|p| p.display().to_string()),
                })
            })
            .collect(),
    )
}

/// The secret references of a node's k3s settings, by the key its
/// templates read them as in `secrets`: `k3s_token`, `k3s_agent_token`,
/// `registry/<host>/password|token|key`.
pub fn k3s_secret_refs(v: &NodeView<'_>) -> Vec<(String, SecretRef)> {
    let k = &v.k3s;
    let mut refs = Vec::new();
    if let Some(t) = &k.token {
        refs.push(("k3s_token".to_string(), t.clone()));
    }
    if let Some(t) = &k.agent_token {
        refs.push(("k3s_agent_token".to_string(), t.clone()));
    }
    for (host, c) in k.registry_configs.iter().flatten() {
        for (what, r) in [
            ("password", &c.password),
            ("token", &c.token),
            ("key", &c.key),
        ] {
            if let Some(r) = r {
                refs.push((format!("registry/{host}/{what}"), r.clone()));
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "apiVersion: edgeforge/v1\nname: t\nsites:\n  - name: s1\n    region: r\n    nodes:\n      \
                       - { name: a, role: server, address: 10.0.0.1 }\n      \
                       - { name: b, role: agent, address: 10.0.0.2, labels: { gpu: 'yes' } }\n  \
                       - name: s2\n    nodes:\n      - { name: c, role: server, address: 10.0.1.1 }\n";

    #[test]
    fn a_node_sees_its_own_settings_and_its_cluster_only() {
        let inv = crate::inventory::load_str("t.yaml", INV).unwrap().inventory;
        let b = inv.nodes().find(|v| v.node.name.as_str() == "b").unwrap();
        let ctx = node(&inv, &b);
        assert_eq!(ctx["node"]["name"], "b");
        assert_eq!(ctx["node"]["labels"]["gpu"], "yes");
        assert_eq!(ctx["site"]["region"], "r");
        let names: Vec<&str> = ctx["cluster"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let s2 = site(&inv, &inv.sites[1]);
        assert!(s2.get("node").is_none());
        assert_eq!(s2["cluster"]["name"], "s2");
    }
}
