//! Layering of settings: inventory `defaults` < site `defaults` < node.
//! Pure functions over the model; every consumer (plan, exec, lab) sees a
//! node through [`NodeView`] so the precedence rule lives in one place.

use std::collections::BTreeMap;

use super::model::*;

/// One node with its site and its effective (layered) settings.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    /// The site the node belongs to.
    pub site: &'a Site,
    /// The node as written.
    pub node: &'a Node,
    /// Effective SSH settings.
    pub ssh: SshSettings,
    /// Effective VM settings (machine-level overrides included).
    pub vm: VmSettings,
    /// Effective k3s settings.
    pub k3s: K3sSettings,
    /// Effective labels, including `edgeforge.io/site`, `/region` and `/zone`.
    pub labels: BTreeMap<String, String>,
}

impl Inventory {
    /// Every node in file order, with its effective settings.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView<'_>> + '_ {
        self.sites
            .iter()
            .flat_map(move |site| self.site_nodes(site))
    }

    /// Every node of `site`, resolved (without resolving the other sites').
    pub fn site_nodes<'a>(&'a self, site: &'a Site) -> impl Iterator<Item = NodeView<'a>> + 'a {
        let site_defaults = overlay_defaults(&self.defaults, &site.defaults);
        site.nodes
            .iter()
            .map(move |node| node_view(&site_defaults, site, node))
    }

    /// The jump host called `name`.
    pub fn jump_host(&self, name: &str) -> Option<&JumpHost> {
        self.jump_hosts.iter().find(|j| j.name.value == name)
    }

    /// Every jump host to go through for `jump` (a node's effective
    /// `ssh.jump`), outermost first: a jump host that itself names jump hosts
    /// is preceded by them. Unknown names and repeats are skipped (a loaded
    /// inventory has neither unknown names nor cycles).
    pub fn jump_chain(&self, jump: &[Sp<String>]) -> Vec<&JumpHost> {
        let mut chain: Vec<&JumpHost> = Vec::new();
        let mut visiting: Vec<&str> = Vec::new();
        for name in jump {
            self.push_jump(name, &mut chain, &mut visiting);
        }
        chain
    }

    fn push_jump<'a>(
        &'a self,
        name: &str,
        chain: &mut Vec<&'a JumpHost>,
        visiting: &mut Vec<&'a str>,
    ) {
        let Some(jh) = self.jump_host(name) else {
            return;
        };
        if visiting.contains(&jh.name.as_str()) || chain.iter().any(|c| c.name == jh.name) {
            return;
        }
        visiting.push(jh.name.as_str());
        for inner in jh.ssh.jump.iter().flatten() {
            self.push_jump(inner, chain, visiting);
        }
        visiting.pop();
        chain.push(jh);
    }

    /// Effective SSH settings of a jump host: the inventory `defaults.ssh`
    /// overlaid by its own `ssh`, except `jump`, which is only what the jump
    /// host itself names (so a default `jump` never points a bastion at itself).
    pub fn jump_host_ssh(&self, jh: &JumpHost) -> SshSettings {
        let mut ssh = self.defaults.ssh.overlay(&jh.ssh);
        ssh.jump = jh.ssh.jump.clone();
        ssh
    }

    /// How the site's cluster joins Karmada: its own `federation.mode`, else
    /// the inventory's, else push.
    pub fn federation_mode(&self, site: &Site) -> FederationMode {
        site.federation
            .mode
            .or(self.federation.mode)
            .unwrap_or_default()
    }

    /// The labels of the site's cluster on the federation host:
    /// `defaults.labels` < site `defaults.labels` < site `labels`, plus
    /// `edgeforge.io/site`, `/region` and `/zone` (node labels are not the
    /// cluster's).
    pub fn cluster_labels(&self, site: &Site) -> BTreeMap<String, String> {
        let mut labels = self.defaults.labels.clone();
        labels.extend(site.defaults.labels.clone());
        labels.extend(site.labels.clone());
        labels.insert("edgeforge.io/site".into(), site.name.value.clone());
        if let Some(region) = &site.region {
            labels.insert("edgeforge.io/region".into(), region.clone());
        }
        if let Some(zone) = &site.zone {
            labels.insert("edgeforge.io/zone".into(), zone.clone());
        }
        labels
    }

    /// The effective k3s settings of the site's first server (its registry
    /// mirrors are the site's), or the site defaults when it has none.
    pub fn site_k3s(&self, site: &Site) -> K3sSettings {
        let defaults = overlay_defaults(&self.defaults, &site.defaults);
        match site.nodes.iter().find(|n| n.role == Role::Server) {
            Some(node) => defaults.k3s.overlay(&node.k3s),
            None => defaults.k3s,
        }
    }

    /// The name of the site's cluster (the site name unless set).
    pub fn cluster_name(site: &Site) -> &str {
        site.cluster
            .name
            .as_ref()
            .map_or(site.name.as_str(), |n| n.as_str())
    }
}

impl Inventory {
    /// The site's first server (the first `role: server` node in file order):
    /// it initialises the cluster, the others join through it.
    pub fn first_server(site: &Site) -> Option<&Node> {
        site.nodes.iter().find(|n| n.role == Role::Server)
    }

    /// The API server URL the site's kubeconfig points at: `cluster.apiServer`,
    /// else the first server's `apiForwardPort` on its address (a user-mode
    /// VM), else port 6443 of its address.
    pub fn api_server(site: &Site) -> Option<String> {
        if let Some(url) = &site.cluster.api_server {
            return Some(url.value.clone());
        }
        let first = Self::first_server(site)?;
        let port = match &first.machine {
            Machine::Libvirt {
                api_forward_port: Some(p),
                ..
            } => *p,
            _ => 6443,
        };
        Some(format!(
            "https://{}:{port}",
            url_host(first.address.as_str())
        ))
    }
}

/// A host as it goes into a URL (IPv6 addresses in brackets).
pub fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl NodeView<'_> {
    /// The address k3s uses for the node (`node-ip`): `k3s.nodeIp`, else a
    /// VM's `machine.clusterAddress`; `None` lets k3s pick.
    pub fn k3s_node_ip(&self) -> Option<&str> {
        self.k3s
            .node_ip
            .as_ref()
            .map(|s| s.as_str())
            .or(match &self.node.machine {
                Machine::Libvirt {
                    cluster_address: Some(a),
                    ..
                } => Some(a.as_str()),
                _ => None,
            })
    }

    /// The interface flannel uses: `k3s.flannelIface`, else the cluster NIC
    /// ([`CLUSTER_NIC`]) of a VM with a `machine.clusterAddress`.
    pub fn k3s_flannel_iface(&self) -> Option<&str> {
        self.k3s
            .flannel_iface
            .as_ref()
            .map(|s| s.as_str())
            .or(match &self.node.machine {
                Machine::Libvirt {
                    cluster_address: Some(_),
                    ..
                } => Some(CLUSTER_NIC),
                _ => None,
            })
    }

    /// Where the other nodes reach this node's k3s (port 6443): its
    /// `node-ip` when it has one, else its address.
    pub fn k3s_join_address(&self) -> &str {
        self.k3s_node_ip().unwrap_or(self.node.address.as_str())
    }

    /// The TCP port edgeforge connects to: a VM's `sshForwardPort` when it
    /// has one (user-mode networking), else the effective `ssh.port`, else 22.
    pub fn ssh_port(&self) -> u16 {
        match &self.node.machine {
            Machine::Libvirt {
                ssh_forward_port: Some(port),
                ..
            } => *port,
            _ => self.ssh.port.unwrap_or(22),
        }
    }
}

fn node_view<'a>(defaults: &Defaults, site: &'a Site, node: &'a Node) -> NodeView<'a> {
    let mut vm = defaults.vm.clone();
    if let Machine::Libvirt { vm: over, .. } = &node.machine {
        vm = vm.overlay(over);
    }
    let mut labels = defaults.labels.clone();
    labels.extend(site.labels.clone());
    labels.extend(node.labels.clone());
    labels.insert("edgeforge.io/site".into(), site.name.value.clone());
    if let Some(region) = &site.region {
        labels.insert("edgeforge.io/region".into(), region.clone());
    }
    if let Some(zone) = &site.zone {
        labels.insert("edgeforge.io/zone".into(), zone.clone());
    }
    NodeView {
        site,
        node,
        ssh: defaults.ssh.overlay(&node.ssh),
        vm,
        k3s: defaults.k3s.overlay(&node.k3s),
        labels,
    }
}

fn overlay_defaults(base: &Defaults, over: &Defaults) -> Defaults {
    let mut labels = base.labels.clone();
    labels.extend(over.labels.clone());
    Defaults {
        ssh: base.ssh.overlay(&over.ssh),
        vm: base.vm.overlay(&over.vm),
        k3s: base.k3s.overlay(&over.k3s),
        labels,
    }
}

/// Field-wise layering: a field set in `over` wins, else the base value stays.
macro_rules! overlay_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $ty {
            /// This value with every field that `over` sets replaced by `over`'s.
            pub fn overlay(&self, over: &$ty) -> $ty {
                $ty { $($field: over.$field.clone().or_else(|| self.$field.clone()),)* }
            }
        }
    };
}

overlay_fields!(SshSettings {
    user,
    port,
    identity_file,
    identity_passphrase,
    agent,
    jump,
    host_key,
    sudo,
    connect_timeout,
    keepalive,
});
overlay_fields!(VmSettings {
    cpus,
    memory_mib,
    disk_gib,
    image
});
overlay_fields!(K3sSettings {
    cluster_cidr,
    service_cidr,
    tls_san,
    registry_mirrors,
    token,
    agent_token,
    node_ip,
    node_external_ip,
    flannel_iface,
    flannel_backend,
    cluster_dns,
    disable,
    embedded_registry,
    write_kubeconfig_mode,
    node_taints,
    airgap_images,
    registry_rewrites,
    registry_configs,
    proxy,
    extra_config,
});
