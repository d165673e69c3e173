//! Semantic checks: what the schema walk does not say. Unique names,
//! references that resolve, jump hosts without cycles, quorum, addresses,
//! networks, URLs, files that must exist, the formats of names and host-key
//! fingerprints (the schema carries those as `pattern`s for editors; the walk
//! leaves them to the messages here). Number ranges are the schema's. For
//! k3s: the values k3s takes (IPs, flannel backends, components to disable,
//! taints), the values a cluster's servers must agree on (cluster-cidr,
//! service-cidr, cluster-dns, disable, flannel-backend, embedded-registry),
//! `extraConfig` keys that edgeforge writes itself, VM cluster addresses
//! inside their network, and the kubeconfig's API address covered by the
//! servers' `tlsSan`.
//!
//! The checks walk the spanned YAML tree, not the typed model, so they run
//! even when the structural check found errors elsewhere: a user fixing a
//! file sees all of its problems in one run. Each check reads only values
//! that have the expected shape and skips the rest (the structural check has
//! reported those already). Paths are resolved the way [`super::resolve_path`]
//! does for the loaded model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::diagnostic::{Diagnostics, did_you_mean};
use super::model::API_VERSION;
use super::yaml::{Entry, Node};

/// Runs every semantic check on `root`; relative paths are taken from `base_dir`.
pub(crate) fn check_meaning(root: &Node, base_dir: &Path, diags: &mut Diagnostics) {
    let mut c = Checker {
        base_dir,
        diags,
        hypervisors: HashMap::new(),
        jump_hosts: BTreeMap::new(),
        node_names: HashMap::new(),
        endpoints: HashMap::new(),
        forward_ports: HashMap::new(),
        cluster_addresses: HashMap::new(),
        media_server: root.get("mediaServer").is_some(),
    };
    c.api_version(root);
    c.hypervisors(root.get("hypervisors"));
    c.jump_hosts(root.get("jumpHosts"));
    if let Some(defaults) = root.get("defaults") {
        c.defaults(defaults);
    }
    c.federation(root.get("federation"));
    if let Some(media) = root.get("mediaServer") {
        c.media_server(media);
    }
    c.jump_cycles();
    let empty = Node::null();
    let inventory_ssh = root
        .get("defaults")
        .and_then(|d| d.get("ssh"))
        .unwrap_or(&empty);
    let inventory_k3s = root
        .get("defaults")
        .and_then(|d| d.get("k3s"))
        .unwrap_or(&empty);
    let mut site_names: HashMap<String, (u32, u32)> = HashMap::new();
    for site in root.get("sites").map(Node::items).unwrap_or(&[]) {
        if let Some(name) = site.get("name")
            && let Some(text) = name.as_str()
        {
            c.dns_label(name, "Site name");
            c.unique(&mut site_names, text, name, "site");
        }
        c.site(site, inventory_ssh, inventory_k3s);
    }
    c.site_federation(root);
}

/// The inventory's `versions.k3s` must be a release the artifact manifest
/// pins (`pinned`), or the k3s layer has no binary to place; `None` when it
/// is (or the inventory leaves it to the manifest's default).
pub fn check_k3s_version(
    inv: &super::Inventory,
    file: &str,
    pinned: &[String],
) -> Option<super::Diagnostic> {
    let v = inv.versions.k3s.as_ref()?;
    if pinned.contains(&v.value) {
        return None;
    }
    let mut diags = Diagnostics::new(file);
    diags.error(
        (v.line, v.col),
        format!(
            "`versions.k3s` is `{}`, which the artifact manifest does not pin (it has: {}).",
            v.value,
            if pinned.is_empty() {
                "none".to_string()
            } else {
                pinned.join(", ")
            }
        ),
        format!(
            "Use one of those, or record the release's hashes with `edgeforge images pin k3s {}`.",
            v.value
        ),
    );
    diags.into_sorted().pop()
}

/// k3s settings every server of a cluster must have the same value for
/// (inventory field, k3s flag).
const CRITICAL_K3S: [(&str, &str); 6] = [
    ("clusterCidr", "cluster-cidr"),
    ("serviceCidr", "service-cidr"),
    ("clusterDns", "cluster-dns"),
    ("disable", "disable"),
    ("flannelBackend", "flannel-backend"),
    ("embeddedRegistry", "embedded-registry"),
];

/// config.yaml keys edgeforge writes itself (from its own fields or the
/// cluster's shape), which `extraConfig` must not set: inventory field or
/// `None` when edgeforge derives the value.
const MANAGED_K3S_KEYS: [(&str, Option<&str>); 20] = [
    ("token", Some("token")),
    ("token-file", Some("token")),
    ("agent-token", Some("agentToken")),
    ("agent-token-file", Some("agentToken")),
    ("server", None),
    ("cluster-init", None),
    ("node-name", None),
    ("node-label", None),
    ("node-ip", Some("nodeIp")),
    ("node-external-ip", Some("nodeExternalIp")),
    ("node-taint", Some("nodeTaints")),
    ("tls-san", Some("tlsSan")),
    ("cluster-cidr", Some("clusterCidr")),
    ("service-cidr", Some("serviceCidr")),
    ("cluster-dns", Some("clusterDns")),
    ("disable", Some("disable")),
    ("flannel-backend", Some("flannelBackend")),
    ("flannel-iface", Some("flannelIface")),
    ("embedded-registry", Some("embeddedRegistry")),
    ("write-kubeconfig-mode", Some("writeKubeconfigMode")),
];

/// What `disable` accepts.
const K3S_COMPONENTS: [&str; 5] = [
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
];

/// What `flannelBackend` accepts.
const FLANNEL_BACKENDS: [&str; 4] = ["vxlan", "host-gw", "wireguard-native", "none"];

/// A `jump` entry: the jump host it names and where.
type JumpRef = (String, (u32, u32));

/// What the checks know about one hypervisor.
struct HypervisorInfo {
    /// VMs on it use user-mode networking (the default).
    user_mode: bool,
    /// Its isolated cluster network, when it has a valid one.
    cluster_cidr: Option<IpNet>,
    /// Its URI names no host: it is this machine.
    local: bool,
}

struct Checker<'a> {
    base_dir: &'a Path,
    diags: &'a mut Diagnostics,
    hypervisors: HashMap<String, HypervisorInfo>,
    /// Jump host name → the `jump` entries of its own `ssh`.
    jump_hosts: BTreeMap<String, Vec<JumpRef>>,
    node_names: HashMap<String, (u32, u32)>,
    /// (jump chain, address, port) → node name and position, for duplicates.
    endpoints: HashMap<(Vec<String>, String, u16), (String, u32)>,
    /// The inventory has a `mediaServer` (bare-metal installs need one).
    media_server: bool,
    /// (hypervisor, forwarded port) → line of the first node using it.
    forward_ports: HashMap<(String, i128), u32>,
    /// (hypervisor, cluster address) → line of the first node using it.
    cluster_addresses: HashMap<(String, IpAddr), u32>,
}

impl Checker<'_> {
    fn api_version(&mut self, root: &Node) {
        let Some(v) = root.get("apiVersion") else {
            return;
        };
        if let Some(text) = v.as_str()
            && text != API_VERSION
        {
            self.diags.error(
                v.at(),
                format!("`apiVersion` is `{text}`, but this edgeforge reads only `{API_VERSION}`."),
                format!("Write `apiVersion: {API_VERSION}`."),
            );
        }
    }

    fn hypervisors(&mut self, list: Option<&Node>) {
        let mut names = HashMap::new();
        for hv in list.map(Node::items).unwrap_or(&[]) {
            let Some(name_node) = hv.get("name") else {
                continue;
            };
            let Some(name) = name_node.as_str() else {
                continue;
            };
            self.dns_label(name_node, "Hypervisor name");
            self.unique(&mut names, name, name_node, "hypervisor");
            if let Some(uri) = hv.get("uri") {
                self.libvirt_uri(uri);
            }
            let network = hv.get("network");
            let mode = network.and_then(|n| n.get("mode")).and_then(Node::as_str);
            if let Some(cidr) = network.and_then(|n| n.get("cidr")) {
                self.cidr(cidr, "The NAT network `cidr`");
            }
            let cluster = hv.get("clusterNetwork");
            if let Some(name) = cluster.and_then(|c| c.get("name"))
                && let Some(text) = name.as_str()
                && !is_libvirt_name(text)
            {
                self.diags.error(
                    name.at(),
                    format!("The cluster network name `{text}` is not a libvirt network name."),
                    "Use 1 to 63 lowercase letters, digits and `-` (e.g. `ef-lab`).",
                );
            }
            let cluster_cidr = cluster
                .and_then(|c| c.get("cidr"))
                .and_then(|c| self.cidr(c, "The cluster network `cidr`"));
            self.hypervisors.insert(
                name.to_owned(),
                HypervisorInfo {
                    user_mode: matches!(mode, None | Some("user")),
                    cluster_cidr,
                    local: hv
                        .get("uri")
                        .and_then(Node::as_str)
                        .and_then(|u| url::Url::parse(u).ok())
                        .is_some_and(|u| {
                            u.host_str()
                                .is_none_or(|h| h.is_empty() || h == "localhost")
                        }),
                },
            );
        }
    }

    fn jump_hosts(&mut self, list: Option<&Node>) {
        let items = list.map(Node::items).unwrap_or(&[]);
        let mut names = HashMap::new();
        // Names first: jump hosts may refer to ones listed after them.
        for jh in items {
            if let Some(name_node) = jh.get("name")
                && let Some(name) = name_node.as_str()
            {
                self.dns_label(name_node, "Jump host name");
                self.unique(&mut names, name, name_node, "jump host");
                let jumps = jh
                    .get("ssh")
                    .and_then(|s| s.get("jump"))
                    .map(Node::items)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|j| j.as_str().map(|s| (s.to_owned(), j.at())))
                    .collect();
                self.jump_hosts.entry(name.to_owned()).or_insert(jumps);
            }
        }
        for jh in items {
            if let Some(address) = jh.get("address") {
                self.host(address, "`address`");
            }
            if let Some(ssh) = jh.get("ssh") {
                self.ssh(ssh);
            }
        }
    }

    fn defaults(&mut self, defaults: &Node) {
        if let Some(ssh) = defaults.get("ssh") {
            self.ssh(ssh);
        }
        if let Some(k3s) = defaults.get("k3s") {
            self.k3s(k3s);
        }
        if let Some(labels) = defaults.get("labels") {
            self.labels(labels);
        }
    }

    fn federation(&mut self, fed: Option<&Node>) {
        let Some(fed) = fed else {
            return;
        };
        let kind = fed.get("type").and_then(Node::as_str).unwrap_or("none");
        match fed.get("kubeconfig") {
            None if kind != "none" => self.diags.error(
                fed.at(),
                format!("The `{kind}` federation has no `kubeconfig`."),
                "Add `kubeconfig: path/to/federation-host.kubeconfig` (the host's admin \
                 kubeconfig), or set `type: none`.",
            ),
            Some(path) if path.as_str().is_some() && kind != "none" => {
                if let Some(missing) = self.missing_file(path) {
                    self.diags.warning(
                        path.at(),
                        format!("The federation kubeconfig {missing} does not exist (yet)."),
                        "The federation layer fails unless it exists when it runs; \
                         check the path (relative paths start at the inventory's directory).",
                    );
                }
            }
            _ => {}
        }
        if let Some(insecure) = fed.get("insecureSkipTLSVerify") {
            self.insecure_warning(insecure, "the federation host");
        }
        if let Some(mode) = fed.get("mode")
            && kind != "karmada"
        {
            self.diags.warning(
                mode.at(),
                format!("`mode` is ignored: only Karmada has push and pull modes, and the federation is `{kind}`."),
                "Remove `mode`, or set `type: karmada`.",
            );
        }
        if let Some(agent) = fed.get("agent") {
            if let Some(image) = agent.get("image")
                && let Some(text) = image.as_str()
                && !is_image_repository(text)
            {
                self.diags.error(
                    image.at(),
                    format!("The agent `image` `{text}` is not an image repository."),
                    "Write the repository without a tag, e.g. `docker.io/karmada/karmada-agent`; \
                     the tag goes into `version`.",
                );
            }
            if let Some(version) = agent.get("version")
                && let Some(text) = version.as_str()
                && !is_image_tag(text)
            {
                self.diags.error(
                    version.at(),
                    format!("The agent `version` `{text}` is not an image tag."),
                    "Write a Karmada release tag, e.g. `v1.18.2`.",
                );
            }
            if let Some(endpoint) = agent.get("hostEndpoint") {
                self.url(endpoint, "The agent's `hostEndpoint`");
            }
        }
        if let Some(kubefed) = fed.get("kubefed") {
            for key in ["hostClusterName", "namespace"] {
                if let Some(name) = kubefed.get(key) {
                    self.dns_label(name, &format!("`kubefed.{key}`"));
                }
            }
        }
    }

    /// Checks what each site says about joining the federation host: modes
    /// the federation has, endpoints that are URLs, and cluster names the
    /// host can tell apart.
    fn site_federation(&mut self, root: &Node) {
        let fed = root.get("federation");
        let kind = fed
            .and_then(|f| f.get("type"))
            .and_then(Node::as_str)
            .unwrap_or("none");
        let mut clusters: HashMap<String, (u32, u32)> = HashMap::new();
        for site in root.get("sites").map(Node::items).unwrap_or(&[]) {
            let Some(site_name) = site.get("name").and_then(Node::as_str) else {
                continue;
            };
            if let Some(insecure) = site
                .get("cluster")
                .and_then(|c| c.get("insecureSkipTLSVerify"))
            {
                self.insecure_warning(insecure, &format!("site `{site_name}`'s cluster"));
            }
            let cluster = site.get("cluster").and_then(|c| c.get("name"));
            let name_node = cluster
                .filter(|n| n.as_str().is_some())
                .or(site.get("name"));
            if kind != "none"
                && let Some(node) = name_node
                && let Some(name) = node.as_str()
            {
                if let Some(first) = clusters.get(name) {
                    self.diags.error(
                        node.at(),
                        format!(
                            "Site `{site_name}`'s cluster is called `{name}` on the federation host, \
                             like the cluster of the site at line {}.",
                            first.0
                        ),
                        "Give one of them its own `cluster.name`; the host keeps one registration per name.",
                    );
                } else {
                    clusters.insert(name.to_owned(), node.at());
                }
            }
            let Some(sf) = site.get("federation") else {
                continue;
            };
            if let Some(endpoint) = sf.get("apiEndpoint") {
                self.url(endpoint, "The cluster's `apiEndpoint`");
            }
            if let Some(mode) = sf.get("mode")
                && kind != "karmada"
            {
                self.diags.error(
                    mode.at(),
                    format!(
                        "Site `{site_name}` sets `federation.mode`, but the federation is `{kind}`; \
                         only Karmada has push and pull modes."
                    ),
                    "Remove the site's `federation.mode`, or set the inventory's `federation.type: karmada`.",
                );
            }
        }
    }

    /// Warns that TLS verification of an API is switched off.
    fn insecure_warning(&mut self, flag: &Node, what: &str) {
        if flag.as_bool() == Some(true) {
            self.diags.warning(
                flag.at(),
                format!("TLS verification of {what} is off: anyone on the path can read its tokens."),
                "Put the API server's CA into the kubeconfig (`certificate-authority-data`) and remove \
                 `insecureSkipTLSVerify`.",
            );
        }
    }

    /// Reports each cycle among jump hosts once.
    fn jump_cycles(&mut self) {
        let mut reported: HashSet<Vec<String>> = HashSet::new();
        let names: Vec<String> = self.jump_hosts.keys().cloned().collect();
        for start in names {
            // Depth-first from `start`, looking for a path back to it.
            let mut stack: Vec<(String, Vec<String>, (u32, u32))> =
                vec![(start.clone(), vec![start.clone()], (0, 0))];
            let mut seen = HashSet::new();
            while let Some((name, path, _)) = stack.pop() {
                let Some(edges) = self.jump_hosts.get(&name) else {
                    continue;
                };
                for (next, at) in edges {
                    if *next == start {
                        let mut members = path.clone();
                        members.sort();
                        if reported.insert(members) {
                            let mut chain = path.clone();
                            chain.push(start.clone());
                            self.diags.error(
                                *at,
                                format!("The jump hosts form a cycle: {}.", chain.join(" → ")),
                                "A jump host's `ssh.jump` may only name hosts that lead \
                                 away from it; remove one link of the cycle.",
                            );
                        }
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p, *at));
                    }
                }
            }
        }
    }

    fn site(&mut self, site: &Node, inventory_ssh: &Node, inventory_k3s: &Node) {
        let site_name = site
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or("?")
            .to_owned();
        let site_at = site.get("name").map_or(site.at(), Node::at);
        for key in ["region", "zone"] {
            if let Some(v) = site.get(key) {
                self.label_value(v, &format!("`{key}`"));
            }
        }
        if let Some(labels) = site.get("labels") {
            self.labels(labels);
        }
        let empty = Node::null();
        let site_defaults = site.get("defaults");
        if let Some(d) = site_defaults {
            self.defaults(d);
        }
        let site_ssh = site_defaults.and_then(|d| d.get("ssh")).unwrap_or(&empty);
        if let Some(cluster_name) = site.get("cluster").and_then(|c| c.get("name"))
            && cluster_name.as_str().is_some()
        {
            self.dns_label(cluster_name, "Cluster name");
        }
        let Some(nodes) = site.get("nodes") else {
            return;
        };
        let mut servers = 0usize;
        for node in nodes.items() {
            if node.get("role").and_then(Node::as_str) == Some("server") {
                servers += 1;
            }
            self.node(node, &[site_ssh, inventory_ssh]);
        }
        let site_k3s = site_defaults.and_then(|d| d.get("k3s")).unwrap_or(&empty);
        let server_nodes: Vec<&Node> = nodes
            .items()
            .iter()
            .filter(|n| n.get("role").and_then(Node::as_str) == Some("server"))
            .collect();
        self.servers_agree(&site_name, &server_nodes, &[site_k3s, inventory_k3s]);
        if let Some(first) = server_nodes.first() {
            self.api_covered(site, first, &server_nodes, &[site_k3s, inventory_k3s]);
        }
        if servers == 0 {
            self.diags.error(
                site_at,
                format!("Site `{site_name}` has no server node; its cluster needs one."),
                "Give one node `role: server` (1 or 3 servers for an odd etcd quorum).",
            );
        } else if servers.is_multiple_of(2) {
            self.diags.warning(
                site_at,
                format!(
                    "Site `{site_name}` has {servers} servers; with an even number, etcd \
                     loses quorum as easily as with one server less."
                ),
                "Use an odd number of servers (1, 3 or 5): make one of them an agent or add one.",
            );
        }
    }

    /// Checks a node; `layers` are the SSH defaults it inherits, nearest first.
    fn node(&mut self, node: &Node, layers: &[&Node]) {
        let name = node
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or("?")
            .to_owned();
        if let Some(name_node) = node.get("name")
            && name_node.as_str().is_some()
        {
            self.dns_label(name_node, "Node name");
            let mut names = std::mem::take(&mut self.node_names);
            self.unique(&mut names, &name, name_node, "node");
            self.node_names = names;
        }
        let ssh = node.get("ssh");
        if let Some(ssh) = ssh {
            self.ssh(ssh);
        }
        if let Some(k3s) = node.get("k3s") {
            self.k3s(k3s);
        }
        if let Some(labels) = node.get("labels") {
            self.labels(labels);
        }
        let machine = node.get("machine");
        let forward_port = machine.and_then(|m| self.machine(m, &name, node.get("address")));
        if let (Some(forward), Some(port)) = (forward_port, ssh.and_then(|s| s.get("port")))
            && port.as_int().is_some_and(|p| p != i128::from(forward))
        {
            self.diags.warning(
                port.at(),
                format!(
                    "`port` is ignored for node `{name}`: it is a user-mode VM, reached on its \
                     `sshForwardPort` {forward}."
                ),
                "Remove `ssh.port` from this node.",
            );
        }
        let Some(address) = node.get("address") else {
            return;
        };
        if !self.host(address, "`address`") {
            return;
        }
        // The effective endpoint: jump chain, address and port after layering.
        let layered = |key: &str| -> Option<&Node> {
            ssh.and_then(|s| s.get(key))
                .or_else(|| layers.iter().find_map(|l| l.get(key)))
        };
        let port = match forward_port {
            Some(p) => p,
            None => match layered("port") {
                None => 22,
                Some(p) => match p.as_int().map(u16::try_from) {
                    Some(Ok(p)) => p,
                    _ => return, // reported by the structural check
                },
            },
        };
        let jumps: Vec<String> = layered("jump")
            .map(Node::items)
            .unwrap_or(&[])
            .iter()
            .filter_map(|j| j.as_str().map(str::to_owned))
            .collect();
        let Some(addr) = address.as_str() else {
            return;
        };
        let key = (jumps, addr.to_ascii_lowercase(), port);
        if let Some((other, line)) = self.endpoints.get(&key) {
            self.diags.error(
                address.at(),
                format!(
                    "Nodes `{other}` (line {line}) and `{name}` both connect to {addr} port {port}."
                ),
                "Give each node its own address or SSH port; two entries for one machine \
                 would configure it twice.",
            );
        } else {
            self.endpoints.insert(key, (name, address.line));
        }
    }

    /// Checks a node's `machine`; returns the forwarded SSH port of a
    /// user-mode VM.
    fn machine(
        &mut self,
        machine: &Node,
        node_name: &str,
        node_address: Option<&Node>,
    ) -> Option<u16> {
        match machine.get("type").and_then(Node::as_str) {
            Some("libvirt") => {
                let hv_node = machine.get("hypervisor")?;
                let hv_name = hv_node.as_str()?;
                let forward = machine.get("sshForwardPort");
                let Some(info) = self.hypervisors.get(hv_name) else {
                    let known: Vec<&str> = self.hypervisors.keys().map(String::as_str).collect();
                    self.diags.error(
                        hv_node.at(),
                        format!("Node `{node_name}` names hypervisor `{hv_name}`, which is not in `hypervisors`."),
                        unknown_ref_hint(hv_name, &known, "hypervisors"),
                    );
                    return forward
                        .and_then(Node::as_int)
                        .and_then(|p| u16::try_from(p).ok());
                };
                let user_mode = info.user_mode;
                let local = info.local;
                let cluster_cidr = info.cluster_cidr;
                self.cluster_address(machine, node_name, hv_name, cluster_cidr);
                let ssh_port = match (user_mode, forward) {
                    (true, None) => {
                        self.diags.error(
                            machine.at(),
                            format!(
                                "Node `{node_name}` is a VM on `{hv_name}`, which uses user-mode \
                                 networking, but it has no `sshForwardPort`."
                            ),
                            "Add `sshForwardPort: 2201` (a free port on the hypervisor's \
                             loopback, one per VM) and set `address: 127.0.0.1`.",
                        );
                        None
                    }
                    (true, Some(port_node)) => {
                        if local {
                            self.forwarded_to_loopback(node_address, node_name, hv_name);
                        }
                        let port = port_node.as_int().filter(|p| *p > 0)?;
                        let key = (hv_name.to_owned(), port);
                        if let Some(line) = self.forward_ports.get(&key) {
                            self.diags.error(
                                port_node.at(),
                                format!(
                                    "`sshForwardPort` {port} on hypervisor `{hv_name}` is already \
                                     used by the VM at line {line}."
                                ),
                                "Give each VM on a hypervisor its own forwarded port.",
                            );
                        } else {
                            self.forward_ports.insert(key, port_node.line);
                        }
                        u16::try_from(port).ok()
                    }
                    (false, Some(port_node)) => {
                        self.diags.warning(
                            port_node.at(),
                            format!(
                                "`sshForwardPort` is ignored: hypervisor `{hv_name}` does not \
                                 use user-mode networking."
                            ),
                            "Remove it; the VM is reached at its `address` on its own network.",
                        );
                        None
                    }
                    (false, None) => None,
                };
                if let Some(api) = machine.get("apiForwardPort") {
                    self.api_forward_port(api, hv_name, user_mode);
                }
                ssh_port
            }
            Some("redfish") => {
                if let Some(endpoint) = machine.get("endpoint") {
                    self.url(endpoint, "The Redfish `endpoint`");
                }
                if let Some(install) = machine.get("install") {
                    self.metal_install(install);
                }
                if let Some(user) = machine.get("username")
                    && user.as_str().is_some_and(str::is_empty)
                {
                    self.diags.error(
                        user.at(),
                        "`username` is empty.".into(),
                        "Write the BMC user name.",
                    );
                }
                if let Some(password) = machine.get("password") {
                    self.secret(password);
                }
                if let Some(ca) = machine.get("caFile") {
                    self.must_exist(
                        ca,
                        "The CA bundle `caFile`",
                        "Point it at the PEM file with the CA that signed the BMC's certificate.",
                    );
                }
                None
            }
            _ => None,
        }
    }

    /// A VM's `clusterAddress`: an IP inside its hypervisor's cluster
    /// network, unique there.
    fn cluster_address(
        &mut self,
        machine: &Node,
        node_name: &str,
        hv_name: &str,
        cidr: Option<IpNet>,
    ) {
        let Some(addr_node) = machine.get("clusterAddress") else {
            return;
        };
        let Some(text) = addr_node.as_str() else {
            return;
        };
        let Ok(ip) = text.parse::<IpAddr>() else {
            self.diags.error(
                addr_node.at(),
                format!("`clusterAddress` `{text}` is not an IP address."),
                "Write an address of the hypervisor's `clusterNetwork`, e.g. `10.77.0.11`.",
            );
            return;
        };
        match cidr {
            None => self.diags.error(
                addr_node.at(),
                format!(
                    "Node `{node_name}` has a `clusterAddress`, but hypervisor `{hv_name}` has no `clusterNetwork` for it."
                ),
                "Add `clusterNetwork: {name: ef-lab, cidr: 10.77.0.0/24}` to the hypervisor.",
            ),
            Some(net) if !net.contains(&ip) || ip == net.network() || ip == net.broadcast() => {
                self.diags.error(
                    addr_node.at(),
                    format!(
                        "`clusterAddress` {ip} is not a host address of `{hv_name}`'s cluster network {net}."
                    ),
                    format!("Pick an address inside {net} (not its first or last)."),
                )
            }
            Some(_) => {
                let key = (hv_name.to_owned(), ip);
                if let Some(line) = self.cluster_addresses.get(&key) {
                    self.diags.error(
                        addr_node.at(),
                        format!(
                            "`clusterAddress` {ip} on hypervisor `{hv_name}` is already used by the VM at line {line}."
                        ),
                        "Give each VM its own cluster address.",
                    );
                } else {
                    self.cluster_addresses.insert(key, addr_node.line);
                }
            }
        }
    }

    /// A VM's `apiForwardPort`: user-mode networking only, not a port another VM forwards.
    fn api_forward_port(&mut self, port_node: &Node, hv_name: &str, user_mode: bool) {
        if !user_mode {
            self.diags.warning(
                port_node.at(),
                format!(
                    "`apiForwardPort` is ignored: hypervisor `{hv_name}` does not use user-mode networking."
                ),
                "Remove it; the API server is reached at the VM's address.",
            );
            return;
        }
        let Some(port) = port_node.as_int().filter(|p| *p > 0) else {
            return;
        };
        let key = (hv_name.to_owned(), port);
        if let Some(line) = self.forward_ports.get(&key) {
            self.diags.error(
                port_node.at(),
                format!(
                    "`apiForwardPort` {port} on hypervisor `{hv_name}` is already forwarded for the VM at line {line}."
                ),
                "Give each forward on a hypervisor its own loopback port.",
            );
        } else {
            self.forward_ports.insert(key, port_node.line);
        }
    }

    /// The values k3s requires to be the same on every server of a cluster
    /// (each server's own, else the site's, else the inventory's).
    fn servers_agree(&mut self, site_name: &str, servers: &[&Node], defaults: &[&Node]) {
        for (field, flag) in CRITICAL_K3S {
            let mut first: Option<(String, String)> = None;
            for server in servers {
                let name = server.get("name").and_then(Node::as_str).unwrap_or("?");
                let own = server.get("k3s").and_then(|k| k.get(field));
                let value = own.or_else(|| defaults.iter().find_map(|d| d.get(field)));
                let text = value.map_or_else(|| "(k3s's default)".to_string(), canonical);
                match &first {
                    None => first = Some((name.to_owned(), text)),
                    Some((first_name, first_text)) if *first_text != text => {
                        let at = own.or(value).map_or(server.at(), Node::at);
                        self.diags.error(
                            at,
                            format!(
                                "`{field}` ({flag}) of server `{name}` is {text}, but server `{first_name}` of site `{site_name}` has {first_text}; every server of a cluster must have the same value."
                            ),
                            format!(
                                "Set `{field}` once for the site (`defaults.k3s.{field}`), not per server."
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// The host of the API address the kubeconfig will use must be in the
    /// certificate of the server it reaches: k3s always includes loopback,
    /// the node's name and its own addresses; anything else must be in `tlsSan`.
    fn api_covered(&mut self, site: &Node, first: &Node, servers: &[&Node], defaults: &[&Node]) {
        let explicit = site.get("cluster").and_then(|c| c.get("apiServer"));
        let (host, at, whom): (String, (u32, u32), Vec<&Node>) = match explicit {
            Some(url_node) => {
                let Some(text) = url_node.as_str() else {
                    return;
                };
                let parsed = url::Url::parse(text)
                    .ok()
                    .filter(|u| u.scheme() == "https")
                    .and_then(|u| u.host_str().map(str::to_owned));
                let Some(host) = parsed else {
                    self.diags.error(
                        url_node.at(),
                        format!("`apiServer` `{text}` is not an https URL."),
                        "Write the URL the operator reaches the API at, e.g. `https://lab-api.example.com:6443`.",
                    );
                    return;
                };
                // Any server may answer behind that address.
                (host, url_node.at(), servers.to_vec())
            }
            None => {
                let Some(address) = first.get("address") else {
                    return;
                };
                let Some(text) = address.as_str() else {
                    return;
                };
                (text.to_owned(), address.at(), vec![first])
            }
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return;
        }
        for server in whom {
            let name = server.get("name").and_then(Node::as_str).unwrap_or("?");
            let k3s = |field: &str| {
                server
                    .get("k3s")
                    .and_then(|k| k.get(field))
                    .or_else(|| defaults.iter().find_map(|d| d.get(field)))
            };
            let mut covered: Vec<String> = vec![name.to_owned()];
            covered.extend(
                k3s("tlsSan")
                    .map(Node::items)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_owned)),
            );
            let node_ip = k3s("nodeIp")
                .and_then(Node::as_str)
                .filter(|t| t.parse::<IpAddr>().is_ok())
                .or_else(|| {
                    server
                        .get("machine")
                        .and_then(|m| m.get("clusterAddress"))
                        .and_then(Node::as_str)
                });
            covered.extend(node_ip.map(str::to_owned));
            covered.extend(
                k3s("nodeExternalIp")
                    .and_then(Node::as_str)
                    .map(str::to_owned),
            );
            if node_ip.is_none() {
                // k3s takes the node's own address, which is what edgeforge reaches it at.
                covered.extend(
                    server
                        .get("address")
                        .and_then(Node::as_str)
                        .map(str::to_owned),
                );
            }
            if !covered.iter().any(|c| c.eq_ignore_ascii_case(&host)) {
                self.diags.error(
                    at,
                    format!(
                        "The kubeconfig will reach the API at `{host}`, which server `{name}`'s certificate does not cover (its `tlsSan`, name and node addresses)."
                    ),
                    format!(
                        "Add `{host}` to `tlsSan` (e.g. in the site's `defaults.k3s`), or set `cluster.apiServer` to an address the certificate covers."
                    ),
                );
                return;
            }
        }
    }

    /// Warns when a user-mode VM on this machine is not addressed on
    /// loopback, where its SSH port is forwarded.
    fn forwarded_to_loopback(&mut self, address: Option<&Node>, node_name: &str, hv_name: &str) {
        let Some(address) = address else {
            return;
        };
        let Some(text) = address.as_str() else {
            return;
        };
        let loopback =
            text == "localhost" || text.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            self.diags.warning(
                address.at(),
                format!(
                    "Node `{node_name}` is a user-mode VM on `{hv_name}` (this machine), whose \
                     SSH port is forwarded on loopback, but its `address` is `{text}`."
                ),
                "Set `address: 127.0.0.1`.",
            );
        }
    }

    fn ssh(&mut self, ssh: &Node) {
        if let Some(user) = ssh.get("user")
            && user.as_str().is_some_and(str::is_empty)
        {
            self.diags.error(
                user.at(),
                "`user` is empty.".into(),
                "Write the remote user name, e.g. `root`.",
            );
        }
        if let Some(key) = ssh.get("identityFile") {
            self.identity_file(key);
        }
        if let Some(secret) = ssh.get("identityPassphrase") {
            self.secret(secret);
        }
        if let Some(secret) = ssh.get("sudo").and_then(|s| s.get("password")) {
            self.secret(secret);
        }
        for j in ssh.get("jump").map(Node::items).unwrap_or(&[]) {
            let Some(name) = j.as_str() else {
                continue;
            };
            if !self.jump_hosts.contains_key(name) {
                let known: Vec<&str> = self.jump_hosts.keys().map(String::as_str).collect();
                self.diags.error(
                    j.at(),
                    format!("Jump host `{name}` is not defined in `jumpHosts`."),
                    unknown_ref_hint(name, &known, "jumpHosts"),
                );
            }
        }
        if let Some(hk) = ssh.get("hostKey") {
            if let Some(fp) = hk.get("fingerprint")
                && let Some(text) = fp.as_str()
                && !is_sha256_fingerprint(text)
            {
                self.diags.error(
                    fp.at(),
                    "`fingerprint` is not an OpenSSH SHA256 fingerprint.".into(),
                    "Write it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it: \
                     `SHA256:` followed by 43 base64 characters.",
                );
            }
            if let Some(kh) = hk.get("knownHosts") {
                self.must_exist(
                    kh,
                    "The known_hosts file",
                    "Create it (e.g. from `ssh-keyscan` output checked against the host) or fix \
                     the path; relative paths start at the inventory's directory.",
                );
            }
        }
    }

    fn k3s(&mut self, k3s: &Node) {
        let cluster = k3s
            .get("clusterCidr")
            .and_then(|n| self.cidr(n, "`clusterCidr`"));
        let service = k3s
            .get("serviceCidr")
            .and_then(|n| self.cidr(n, "`serviceCidr`"));
        if let (Some(c), Some(s)) = (cluster, service)
            && (c.contains(&s.network()) || s.contains(&c.network()))
            && let Some(at) = k3s.get("serviceCidr").map(Node::at)
        {
            self.diags.error(
                at,
                format!("`serviceCidr` {s} overlaps `clusterCidr` {c}."),
                "Pods and services need separate ranges, e.g. 10.42.0.0/16 and 10.43.0.0/16.",
            );
        }
        for san in k3s.get("tlsSan").map(Node::items).unwrap_or(&[]) {
            self.host(san, "`tlsSan` entry");
        }
        for entry in k3s.get("registryMirrors").map(Node::entries).unwrap_or(&[]) {
            if entry.key != "*" && !is_registry_host(&entry.key) {
                self.diags.error(
                    entry.key_at,
                    format!("Registry `{}` is not a registry host name.", entry.key),
                    "Key the mirrors by the registry they stand in for, e.g. `docker.io`, \
                     `registry.k8s.io:5000` or `*` for all.",
                );
            }
            for endpoint in entry.value.items() {
                self.url(endpoint, "The mirror endpoint");
            }
        }
        for key in ["token", "agentToken"] {
            if let Some(token) = k3s.get(key) {
                self.secret(token);
            }
        }
        for key in ["nodeIp", "nodeExternalIp", "clusterDns"] {
            if let Some(v) = k3s.get(key)
                && let Some(text) = v.as_str()
                && text.parse::<IpAddr>().is_err()
            {
                self.diags.error(
                    v.at(),
                    format!("`{key}` `{text}` is not an IP address."),
                    "Write an IPv4 or IPv6 address, e.g. `10.0.0.11`.",
                );
            }
        }
        if let (Some(dns), Some(s)) = (k3s.get("clusterDns"), service)
            && let Some(ip) = dns.as_str().and_then(|t| t.parse::<IpAddr>().ok())
            && !s.contains(&ip)
        {
            self.diags.error(
                dns.at(),
                format!("`clusterDns` {ip} is outside `serviceCidr` {s}."),
                "The DNS service address must be in the service network, e.g. 10.43.0.10.",
            );
        }
        if let Some(iface) = k3s.get("flannelIface")
            && let Some(text) = iface.as_str()
            && !is_iface_name(text)
        {
            self.diags.error(
                iface.at(),
                format!("`flannelIface` `{text}` is not a network interface name."),
                "Use up to 15 letters, digits, `-`, `_` or `.`, e.g. `eth1`.",
            );
        }
        self.one_of(
            k3s.get("flannelBackend"),
            "flannelBackend",
            &FLANNEL_BACKENDS,
        );
        for item in k3s.get("disable").map(Node::items).unwrap_or(&[]) {
            self.one_of(Some(item), "disable", &K3S_COMPONENTS);
        }
        if let Some(mode) = k3s.get("writeKubeconfigMode")
            && let Some(text) = mode.as_str()
            && !(text.len() <= 4
                && !text.is_empty()
                && text.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        {
            self.diags.error(
                mode.at(),
                format!("`writeKubeconfigMode` `{text}` is not an octal file mode."),
                "Write it quoted, e.g. `\"0600\"` (the kubeconfig holds admin credentials).",
            );
        }
        for taint in k3s.get("nodeTaints").map(Node::items).unwrap_or(&[]) {
            if let Some(text) = taint.as_str()
                && !is_taint(text)
            {
                self.diags.error(
                    taint.at(),
                    format!("Taint `{text}` is not `key[=value]:Effect`."),
                    "Write e.g. `dedicated=edge:NoSchedule`; the effect is NoSchedule,                      PreferNoSchedule or NoExecute.",
                );
            }
        }
        for entry in k3s
            .get("registryRewrites")
            .map(Node::entries)
            .unwrap_or(&[])
        {
            self.registry_key(&entry.key, entry.key_at);
        }
        for entry in k3s.get("registryConfigs").map(Node::entries).unwrap_or(&[]) {
            self.registry_key(&entry.key, entry.key_at);
            for key in ["password", "token", "key"] {
                if let Some(secret) = entry.value.get(key) {
                    self.secret(secret);
                }
            }
            for key in ["caFile", "certFile"] {
                if let Some(file) = entry.value.get(key) {
                    self.must_exist(
                        file,
                        &format!("The registry `{key}`"),
                        "Point it at a PEM file on this machine; edgeforge copies it to the nodes.",
                    );
                }
            }
            if entry.value.get("password").is_some() && entry.value.get("username").is_none() {
                self.diags.error(
                    entry.key_at,
                    format!(
                        "Registry `{}` has a `password` but no `username`.",
                        entry.key
                    ),
                    "Add `username`, or use `token` for a bearer token.",
                );
            }
        }
        for entry in k3s.get("extraConfig").map(Node::entries).unwrap_or(&[]) {
            if let Some((_, field)) = MANAGED_K3S_KEYS.iter().find(|(k, _)| *k == entry.key) {
                self.diags.error(
                    entry.key_at,
                    format!(
                        "`extraConfig` sets `{}`, which edgeforge writes into config.yaml itself.",
                        entry.key
                    ),
                    match field {
                        Some(f) => format!("Use the k3s setting `{f}` instead."),
                        None => "Remove it; edgeforge derives it from the cluster (first server, node names and labels)."
                            .to_string(),
                    },
                );
            }
        }
    }

    fn registry_key(&mut self, key: &str, at: (u32, u32)) {
        if key != "*" && !is_registry_host(key) {
            self.diags.error(
                at,
                format!("Registry `{key}` is not a registry host name."),
                "Key it by registry host, e.g. `docker.io` or `registry.example.com:5000`.",
            );
        }
    }

    /// Errors unless the scalar `node` is one of `allowed`.
    fn one_of(&mut self, node: Option<&Node>, what: &str, allowed: &[&str]) {
        if let Some(n) = node
            && let Some(text) = n.as_str()
            && !allowed.contains(&text)
        {
            self.diags.error(
                n.at(),
                format!("`{what}` `{text}` is not one k3s knows."),
                match did_you_mean(text, allowed.iter().copied()) {
                    Some(m) => format!("Did you mean `{m}`? (one of: {})", allowed.join(", ")),
                    None => format!("Use one of: {}.", allowed.join(", ")),
                },
            );
        }
    }

    fn labels(&mut self, labels: &Node) {
        for Entry { key, key_at, value } in labels.entries() {
            if !is_label_key(key) {
                self.diags.error(
                    *key_at,
                    format!("Label key `{key}` is not a valid Kubernetes label key."),
                    "Use an optional DNS prefix and `/`, then up to 63 letters, digits, `-`, `_` \
                     or `.`, starting and ending with a letter or digit, e.g. `example.com/rack`.",
                );
            }
            self.label_value(value, &format!("The value of label `{key}`"));
        }
    }

    fn label_value(&mut self, value: &Node, what: &str) {
        if let Some(text) = value.as_str()
            && !is_label_value(text)
        {
            self.diags.error(
                value.at(),
                format!("{what} is not a valid Kubernetes label value (it becomes one)."),
                "Use up to 63 letters, digits, `-`, `_` or `.`, starting and ending with a \
                 letter or digit.",
            );
        }
    }

    /// A secret reference in map form: env names must be valid, files should exist.
    fn secret(&mut self, secret: &Node) {
        if secret.entries().len() != 1 {
            return; // not a reference; the structural check said so
        }
        if let Some(env) = secret.get("env")
            && let Some(name) = env.as_str()
            && !is_env_name(name)
        {
            self.diags.error(
                env.at(),
                "`env` is not an environment variable name.".into(),
                "Write the name of the variable that holds the secret (letters, digits and \
                 `_`, not starting with a digit), e.g. `{env: EDGE_SUDO_PASSWORD}`.",
            );
        }
        if let Some(file) = secret.get("file")
            && let Some(missing) = self.missing_file(file)
        {
            self.diags.warning(
                file.at(),
                format!("The secret file {missing} does not exist (yet)."),
                "edgeforge reads it when the secret is needed; create it before then \
                 (relative paths start at the inventory's directory).",
            );
        }
    }

    fn identity_file(&mut self, key: &Node) {
        let Some(text) = key.as_str() else {
            return;
        };
        let resolved = super::resolve_path(self.base_dir, Path::new(text));
        if super::load::is_managed_path(&resolved) {
            // Keys in edgeforge's state directory are generated by edgeforge
            // (`edgeforge lab up`): they need not exist before it runs.
            return;
        }
        self.must_exist(
            key,
            "The identity file",
            "Create the key (`ssh-keygen -t ed25519 -f PATH`) or fix the path; relative paths \
             start at the inventory's directory and `~` is your home directory.",
        );
    }

    /// Errors when the file a path node names does not exist.
    fn must_exist(&mut self, path: &Node, what: &str, hint: &str) {
        if let Some(missing) = self.missing_file(path) {
            self.diags
                .error(path.at(), format!("{what} {missing} does not exist."), hint);
        }
    }

    /// `Some(description)` when the path a node names is not a file.
    fn missing_file(&self, path: &Node) -> Option<String> {
        let text = path.as_str()?;
        let resolved = super::resolve_path(self.base_dir, Path::new(text));
        if resolved.is_file() {
            return None;
        }
        if resolved.as_os_str() == text {
            Some(format!("`{text}`"))
        } else {
            Some(format!("`{text}` ({})", resolved.display()))
        }
    }

    fn libvirt_uri(&mut self, uri: &Node) {
        let Some(text) = uri.as_str() else {
            return;
        };
        let ok = url::Url::parse(text).is_ok_and(|u| {
            let scheme = u.scheme();
            let driver = scheme.split('+').next().unwrap_or("");
            matches!(driver, "qemu" | "test" | "lxc" | "xen" | "ch")
        });
        if !ok {
            self.diags.error(
                uri.at(),
                format!("`uri` `{text}` is not a libvirt URI."),
                "Use `qemu:///system` for this machine or `qemu+ssh://user@host/system` for another.",
            );
        }
    }

    /// Checks a Redfish node's `install`: the disk is a device path, the image exists.
    fn metal_install(&mut self, install: &Node) {
        if !self.media_server {
            self.diags.error(
                install.at(),
                "This node is to be installed, but the inventory has no `mediaServer` to serve \
                 the live ISO to its BMC from."
                    .into(),
                "Add `mediaServer: {listen: ADDRESS:PORT}` at the top level, with an address of \
                 this machine that the BMCs can reach.",
            );
        }
        if let Some(disk) = install.get("disk")
            && let Some(text) = disk.as_str()
            && !(text.starts_with("/dev/") && text.len() > 5 && !text.contains(char::is_whitespace))
        {
            self.diags.error(
                disk.at(),
                format!("`disk` `{text}` is not a device path."),
                "Write the disk as the live system names it, e.g. `/dev/sda`, `/dev/nvme0n1` or \
                 `/dev/disk/by-path/...`, or leave it out for the machine's only fixed disk.",
            );
        }
        if let Some(image) = install.get("image") {
            self.must_exist(
                image,
                "The OS image `image`",
                "Point it at a qcow2 or raw root filesystem image, or leave it out to install \
                 edgeforge's base image.",
            );
        }
    }

    /// Checks `mediaServer`: `listen` is `address:port`, `url` an http(s) URL.
    fn media_server(&mut self, media: &Node) {
        if let Some(listen) = media.get("listen")
            && let Some(text) = listen.as_str()
            && text.parse::<std::net::SocketAddr>().is_err()
        {
            self.diags.error(
                listen.at(),
                format!("`listen` `{text}` is not an `address:port`."),
                "Write the address of this machine that the BMCs can reach and a port, e.g. \
                 `10.20.0.1:8088` (`[fd00::1]:8088` for IPv6; port 0 picks a free one).",
            );
        }
        if let Some(url) = media.get("url") {
            self.url(url, "The media server `url`");
        }
    }

    /// Checks an http(s) URL.
    fn url(&mut self, node: &Node, what: &str) {
        let Some(text) = node.as_str() else {
            return;
        };
        let ok = url::Url::parse(text)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            self.diags.error(
                node.at(),
                format!("{what} `{text}` is not an http(s) URL."),
                "Write a full URL with scheme and host, e.g. `https://10.0.0.10` or \
                 `https://mirror.example.com:5000`.",
            );
        }
    }

    /// Checks a CIDR and returns it when valid.
    fn cidr(&mut self, node: &Node, what: &str) -> Option<IpNet> {
        let text = node.as_str()?;
        match text.parse::<IpNet>() {
            Ok(net) if net.addr() != net.network() => {
                self.diags.error(
                    node.at(),
                    format!("{what} `{text}` has host bits set."),
                    format!("Write the network address: `{}`.", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.diags.error(
                    node.at(),
                    format!("{what} `{text}` is not a network in CIDR notation."),
                    "Write an address and prefix length, e.g. `10.42.0.0/16` or `fd00:42::/56`.",
                );
                None
            }
        }
    }

    /// Checks an IP address or DNS name; returns whether it is one.
    fn host(&mut self, node: &Node, what: &str) -> bool {
        let Some(text) = node.as_str() else {
            return false;
        };
        if text.parse::<IpAddr>().is_ok() || is_dns_name(text) {
            return true;
        }
        self.diags.error(
            node.at(),
            format!("{what} `{text}` is neither an IP address nor a DNS name."),
            "Write an IPv4/IPv6 address (e.g. `10.0.0.5`) or a host name (e.g. `edge-1.example.com`).",
        );
        false
    }

    fn dns_label(&mut self, node: &Node, what: &str) {
        if let Some(text) = node.as_str()
            && !is_dns_label(text)
        {
            self.diags.error(
                node.at(),
                format!("{what} `{text}` is not a DNS label."),
                "Use 1 to 63 lowercase letters, digits and `-`, starting and ending with a \
                 letter or digit (it becomes a host or cluster name).",
            );
        }
    }

    /// Records `name` in `seen`, reporting it when it is already there.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, (u32, u32)>,
        name: &str,
        node: &Node,
        what: &str,
    ) {
        if let Some(first) = seen.get(name) {
            self.diags.error(
                node.at(),
                format!(
                    "Duplicate {what} name `{name}` (first at line {}).",
                    first.0
                ),
                if what == "node" {
                    "Rename one of them; node names are host names and must be unique across \
                     the whole inventory."
                } else {
                    "Rename one of them; names must be unique."
                },
            );
        } else {
            seen.insert(name.to_owned(), node.at());
        }
    }
}

fn unknown_ref_hint(name: &str, known: &[&str], list: &str) -> String {
    match did_you_mean(name, known.iter().copied()) {
        Some(s) => format!("Did you mean `{s}`?"),
        None if known.is_empty() => format!("Define it under `{list}:` first."),
        None => {
            let mut known = known.to_vec();
            known.sort_unstable();
            format!(
                "Define it under `{list}:` or use one of: {}.",
                known.join(", ")
            )
        }
    }
}

/// An RFC 1123 label: lowercase letters, digits and `-`, 1..=63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name (labels of letters, digits and `-`), case-insensitive, at most 253 characters.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase()))
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A libvirt object name edgeforge makes: a DNS label.
fn is_libvirt_name(s: &str) -> bool {
    is_dns_label(s)
}

/// A Linux interface name: 1 to 15 characters, no `/`, `:` or space.
fn is_iface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A taint: `key[=value]:Effect`.
fn is_taint(s: &str) -> bool {
    let Some((kv, effect)) = s.rsplit_once(':') else {
        return false;
    };
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        && is_label_key(key)
        && is_label_value(value)
}

/// A value as text for comparing settings: lists as sorted sets.
fn canonical(node: &Node) -> String {
    match &node.value {
        super::yaml::Value::Seq(items) => {
            let mut parts: Vec<String> = items.iter().map(canonical).collect();
            parts.sort();
            format!("[{}]", parts.join(", "))
        }
        super::yaml::Value::Map(entries) => {
            let parts: Vec<String> = entries
                .iter()
                .map(|e| format!("{}: {}", e.key, canonical(&e.value)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        super::yaml::Value::Scalar { text, .. } => format!("`{text}`"),
    }
}

/// A registry host, optionally with a port: `docker.io`, `localhost:5000`.
fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    let host_ok = is_dns_name(host)
        || host.parse::<IpAddr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<IpAddr>().is_ok());
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// An image repository without tag or digest: `registry[:port]/path` or `path`, lowercase.
fn is_image_repository(s: &str) -> bool {
    let (first, rest) = s.split_once('/').unwrap_or(("", s));
    let registry_ok = if first.contains('.') || first.contains(':') || first == "localhost" {
        is_registry_host(first)
    } else {
        first.is_empty() || is_path_component(first)
    };
    !s.is_empty() && registry_ok && rest.split('/').all(is_path_component)
}

/// One path component of an image name: lowercase letters, digits, and
/// `.`, `_`, `-` separators between them.
fn is_path_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// An image tag: up to 128 letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
fn is_image_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Kubernetes label key: `[prefix/]name`.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_name) && !name.is_empty() && is_label_value(name)
}

/// A Kubernetes label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`,
/// beginning and ending with an alphanumeric.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// An environment variable name.
fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// `SHA256:` and 43 characters of unpadded base64, as `ssh-keygen -l` prints.
fn is_sha256_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b64| {
        let b64 = b64.strip_suffix('=').unwrap_or(b64);
        b64.len() == 43
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_and_names() {
        assert!(is_dns_label("edge-1"));
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_name("Bastion.EU.example.com"));
        assert!(is_dns_name("localhost."));
        assert!(
            !is_dns_name("10.0.0.999"),
            "all-numeric names are botched IPs"
        );
        assert!(!is_dns_name("bad host"));
        assert!(!is_dns_name("a..b"));
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "docker.io",
            "registry.k8s.io:5000",
            "10.0.0.5:5000",
            "[fd00::1]:5000",
        ] {
            assert!(is_registry_host(ok), "{ok}");
        }
        for bad in ["https://docker.io", "docker.io:0", "docker.io:99999", "a b"] {
            assert!(!is_registry_host(bad), "{bad}");
        }
    }

    #[test]
    fn kubernetes_labels() {
        assert!(is_label_key("example.com/rack"));
        assert!(is_label_key("rack_1.a"));
        assert!(!is_label_key("example.com/"));
        assert!(!is_label_key("bad key"));
        assert!(is_label_value(""));
        assert!(is_label_value("2026q4"));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value(&"x".repeat(64)));
    }

    #[test]
    fn image_repositories_and_tags() {
        for ok in [
            "docker.io/karmada/karmada-agent",
            "karmada/karmada-agent",
            "registry.eu.example.com:5000/karmada/karmada-agent",
            "busybox",
        ] {
            assert!(is_image_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "docker.io/karmada/karmada-agent:v1.18.2",
            "Karmada/agent",
            "a//b",
            "a b",
        ] {
            assert!(!is_image_repository(bad), "{bad}");
        }
        assert!(is_image_tag("v1.18.2"));
        assert!(is_image_tag("latest"));
        assert!(!is_image_tag("-x"));
        assert!(!is_image_tag("a:b"));
    }

    #[test]
    fn env_names_and_fingerprints() {
        assert!(is_env_name("EDGE_SUDO_PASSWORD"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(is_sha256_fingerprint(
            "SHA256:CZJu5gIF7RTgHyzDzWKZ/CytyTqqR7lZdAL+kcWBQ8k"
        ));
        assert!(!is_sha256_fingerprint(
            "SHA256:CZJu5gIF7RTgHyzDzWKZ/CytyTqqR7lZdAL+kcWBQ8"
        ));
        assert!(!is_sha256_fingerprint(
            "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"
        ));
    }
}
