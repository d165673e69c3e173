//! The template context of a task: what `{{ ... }}` in playbooks and
//! templates can see.
//!
//! Pure: built from the typed inventory. The inventory part is `inventory`
//! (its name), `site`, `cluster` (name and every node of the site),
//! `defaults`, `versions` and, for node tasks, `node` (the node's effective,
//! layered settings). The executor adds `facts` (host targets), `vars` (the
//! playbook's), `secrets` (values read from references) and `outputs` (what
//! earlier tasks published, as `outputs["<task key>"].<name>`).

use serde_json::{Value, json};

use crate::inventory::{Inventory, Machine, NodeView, Site};

/// The context of a task on `view`'s node.
pub fn node(inv: &Inventory, view: &NodeView<'_>) -> Value {
    let mut ctx = site(inv, view.site);
    if let Some(map) = ctx.as_object_mut() {
        map.insert("node".into(), node_json(view));
    }
    ctx
}

/// The context of a site-level task (the cluster, its registration): no `node`.
pub fn site(inv: &Inventory, site: &Site) -> Value {
    let cluster_nodes: Vec<Value> = inv
        .nodes()
        .filter(|v| std::ptr::eq(v.site, site))
        .map(|v| node_json(&v))
        .collect();
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
        "k3s": {
            "cluster_cidr": v.k3s.cluster_cidr.as_ref().map(|s| s.value.clone()),
            "service_cidr": v.k3s.service_cidr.as_ref().map(|s| s.value.clone()),
            "tls_san": v.k3s.tls_san.as_ref().map(|l| l.iter().map(|s| s.value.clone()).collect::<Vec<_>>()),
        },
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
