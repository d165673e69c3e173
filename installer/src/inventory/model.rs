//! The typed inventory, `apiVersion: edgeforge/v1`.
//!
//! These types are the one source of truth for the inventory format: serde
//! reads them, schemars turns them into the JSON Schema that
//! `edgeforge inventory schema` prints, and their doc comments are the field
//! descriptions editors show. Every struct denies unknown fields.
//!
//! Values that errors must point at (names, addresses, references) are wrapped
//! in [`Sp`], which keeps the line and column they were read from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The only `apiVersion` this build reads.
pub const API_VERSION: &str = "edgeforge/v1";

/// The name a lab VM's NIC on its hypervisor's `clusterNetwork` gets inside
/// the guest (set by cloud-init), so k3s's `flannel-iface` can name it.
pub const CLUSTER_NIC: &str = "ef-cluster0";

/// A whole inventory: the sites to bring up and everything needed to reach them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    /// Format version; must be `edgeforge/v1`.
    pub api_version: Sp<String>,
    /// A name for this inventory, used in lock files, logs and the state directory.
    #[serde(default)]
    pub name: Option<Sp<String>>,
    /// Versions of what gets installed; each must be in the artifact manifest.
    #[serde(default)]
    pub versions: Versions,
    /// Settings every site and node inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// Libvirt hosts that run the VM nodes.
    #[serde(default)]
    pub hypervisors: Vec<Hypervisor>,
    /// SSH bastions that nodes reach through (`ssh.jump`).
    #[serde(default)]
    pub jump_hosts: Vec<JumpHost>,
    /// The host every new cluster registers into.
    #[serde(default)]
    pub federation: Federation,
    /// Where install media is served to BMCs (bare-metal installs).
    #[serde(default)]
    pub media_server: Option<MediaServer>,
    /// The edge sites, each with one cluster.
    pub sites: Vec<Site>,
}

/// Versions of the stack's components.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Versions {
    /// k3s release, e.g. `v1.34.2+k3s1`.
    #[serde(default)]
    pub k3s: Option<Sp<String>>,
    /// Base OS image (artifact name) for VM nodes, e.g. `debian-12-base`.
    #[serde(default)]
    pub os_image: Option<Sp<String>>,
}

/// Inheritable settings: inventory `defaults` < site `defaults` < node.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// How to reach nodes over SSH.
    #[serde(default)]
    pub ssh: SshSettings,
    /// Size and image of VM nodes.
    #[serde(default)]
    pub vm: VmSettings,
    /// k3s configuration.
    #[serde(default)]
    pub k3s: K3sSettings,
    /// Labels added to every node (and to the cluster on the federation host).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// SSH connection settings. Every field is optional so that it can be layered.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSettings {
    /// Remote user (default `root`).
    #[serde(default)]
    pub user: Option<Sp<String>>,
    /// TCP port (default 22).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Private key file (ed25519, ecdsa or rsa). Written relative to the
    /// inventory's directory or `~`; the loaded model holds it resolved.
    #[serde(default)]
    pub identity_file: Option<Sp<PathBuf>>,
    /// Passphrase of the identity file, by reference.
    #[serde(default)]
    pub identity_passphrase: Option<SecretRef>,
    /// Use keys from ssh-agent (`SSH_AUTH_SOCK`).
    #[serde(default)]
    pub agent: Option<bool>,
    /// Jump hosts to go through, outermost first, by name from `jumpHosts`.
    #[serde(default)]
    pub jump: Option<Vec<Sp<String>>>,
    /// How the host key is verified.
    #[serde(default)]
    pub host_key: Option<HostKeyPolicy>,
    /// Run privileged steps through sudo.
    #[serde(default)]
    pub sudo: Option<Sudo>,
    /// Seconds to wait for the TCP connection and SSH handshake (default 10).
    #[serde(default)]
    pub connect_timeout: Option<u32>,
    /// Seconds between keepalives; a host that misses 3 is failed (default 15).
    #[serde(default)]
    pub keepalive: Option<u32>,
}

/// How a host key is checked. There is deliberately no way to skip the check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostKeyPolicy {
    /// A pinned key fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it.
    #[serde(default)]
    #[schemars(pattern(r"^SHA256:[A-Za-z0-9+/]{43}=?$"))]
    pub fingerprint: Option<Sp<String>>,
    /// An OpenSSH known_hosts file (hashed entries and `[host]:port` work);
    /// resolved like `identityFile`.
    #[serde(default)]
    pub known_hosts: Option<Sp<PathBuf>>,
    /// `strict` (default): the key must be known. `accept-new`: record the
    /// first key seen in edgeforge's own known_hosts, refuse a changed one.
    #[serde(default)]
    pub policy: Option<HostKeyMode>,
}

/// Whether unknown host keys are accepted on first sight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyMode {
    /// Only keys already known (pinned or in known_hosts) are accepted.
    Strict,
    /// Unknown keys are recorded on first connection; changed keys are refused.
    AcceptNew,
}

/// Privilege escalation through sudo.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sudo {
    /// Use sudo for privileged steps (default true when the user is not root).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The sudo password, by reference; fed on stdin, never on a command line.
    #[serde(default)]
    pub password: Option<SecretRef>,
}

/// A secret, always by reference and never inline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum SecretRef {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (trailing newline removed); resolved like `identityFile`.
    File(PathBuf),
}

/// Size and image of a VM node.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmSettings {
    /// Virtual CPUs (default 2).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub cpus: Option<u32>,
    /// Memory in MiB (default 1024).
    #[serde(default)]
    #[schemars(range(min = 256))]
    pub memory_mib: Option<u64>,
    /// Root disk in GiB (default 10).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub disk_gib: Option<u64>,
    /// Base image artifact name (default `versions.osImage`).
    #[serde(default)]
    pub image: Option<Sp<String>>,
}

/// k3s settings; sites and nodes may override each field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K3sSettings {
    /// Pod network, e.g. `10.42.0.0/16`.
    #[serde(default)]
    pub cluster_cidr: Option<Sp<String>>,
    /// Service network, e.g. `10.43.0.0/16`.
    #[serde(default)]
    pub service_cidr: Option<Sp<String>>,
    /// Extra names and addresses for the API server certificate.
    #[serde(default)]
    pub tls_san: Option<Vec<Sp<String>>>,
    /// Registry mirrors, by registry host (`docker.io`) to mirror endpoint URLs.
    #[serde(default)]
    pub registry_mirrors: Option<BTreeMap<String, Vec<Sp<String>>>>,
    /// The cluster's server token, by reference (generated and kept in the
    /// state directory when absent).
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// The agent token (agents join with it, servers cannot), by reference
    /// (generated and kept in the state directory when absent).
    #[serde(default)]
    pub agent_token: Option<SecretRef>,
    /// The address k3s uses for this node (`node-ip`); default the VM's
    /// `machine.clusterAddress`, else what k3s finds.
    #[serde(default)]
    pub node_ip: Option<Sp<String>>,
    /// The node's external address (`node-external-ip`).
    #[serde(default)]
    pub node_external_ip: Option<Sp<String>>,
    /// The interface flannel uses (`flannel-iface`); default the VM's cluster
    /// NIC when it has a `machine.clusterAddress`.
    #[serde(default)]
    pub flannel_iface: Option<Sp<String>>,
    /// `vxlan` (k3s's default), `host-gw`, `wireguard-native` or `none`.
    #[serde(default)]
    pub flannel_backend: Option<Sp<String>>,
    /// The cluster DNS service address (`cluster-dns`), inside `serviceCidr`.
    #[serde(default)]
    pub cluster_dns: Option<Sp<String>>,
    /// Packaged components k3s does not deploy (`disable`): `traefik`,
    /// `servicelb`, `local-storage`, `metrics-server`, `coredns`.
    #[serde(default)]
    pub disable: Option<Vec<Sp<String>>>,
    /// Run k3s's embedded registry mirror (Spegel) (`embedded-registry`).
    #[serde(default)]
    pub embedded_registry: Option<bool>,
    /// Mode of `/etc/rancher/k3s/k3s.yaml` (`write-kubeconfig-mode`, default `0600`).
    #[serde(default)]
    pub write_kubeconfig_mode: Option<Sp<String>>,
    /// Taints the node registers with (`node-taint`), e.g. `dedicated=edge:NoSchedule`.
    #[serde(default)]
    pub node_taints: Option<Vec<Sp<String>>>,
    /// Place k3s's air-gap images tarball on the node (default true).
    #[serde(default)]
    pub airgap_images: Option<bool>,
    /// Image name rewrites per registry (`registries.yaml` `rewrite`): regex → replacement.
    #[serde(default)]
    pub registry_rewrites: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// Credentials and TLS per registry host (`registries.yaml` `configs`).
    #[serde(default)]
    pub registry_configs: Option<BTreeMap<String, RegistryConfig>>,
    /// Proxies for k3s and containerd (the only values in its environment file).
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
    /// Extra keys written verbatim into k3s's config.yaml.
    #[serde(default)]
    pub extra_config: Option<BTreeMap<String, serde_json::Value>>,
}

/// How k3s's containerd talks to one registry (or mirror endpoint host).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// User name for basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for basic authentication, by reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// A bearer token instead of user and password, by reference.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// CA bundle that signs the registry's certificate (a file on this
    /// machine, copied to the nodes); resolved like `identityFile`.
    #[serde(default)]
    pub ca_file: Option<Sp<PathBuf>>,
    /// Client certificate for mutual TLS (a file on this machine, copied to the nodes).
    #[serde(default)]
    pub cert_file: Option<Sp<PathBuf>>,
    /// The client certificate's private key, by reference.
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// Do not verify the registry's certificate.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

/// Proxies in k3s's environment file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxySettings {
    /// `HTTP_PROXY`.
    #[serde(default)]
    pub http_proxy: Option<String>,
    /// `HTTPS_PROXY`.
    #[serde(default)]
    pub https_proxy: Option<String>,
    /// `NO_PROXY` (k3s adds its cluster and service networks itself).
    #[serde(default)]
    pub no_proxy: Option<String>,
}

/// A libvirt host that runs VM nodes.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hypervisor {
    /// Name that nodes refer to in `machine.hypervisor`.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Sp<String>,
    /// libvirt URI: `qemu:///system` for this machine, `qemu+ssh://user@host/system` for another
    /// (reached through edgeforge's SSH connection, with that host's SSH settings and host key check).
    pub uri: Sp<String>,
    /// Storage pool for base images and VM disks (default `edgeforge`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Directory backing the pool (default `/var/lib/edgeforge/images`).
    #[serde(default)]
    pub pool_path: Option<PathBuf>,
    /// How VMs are networked.
    #[serde(default)]
    pub network: VmNetwork,
    /// An isolated libvirt network (no address on this host, no forwarding)
    /// for traffic between the VMs (k3s, flannel); each VM gets a second NIC
    /// on it with its `machine.clusterAddress`.
    #[serde(default)]
    pub cluster_network: Option<ClusterNetwork>,
}

/// The isolated network between a hypervisor's VMs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// libvirt network name (created when missing).
    pub name: Sp<String>,
    /// The network, e.g. `10.77.0.0/24`; VM addresses must lie in it.
    pub cidr: Sp<String>,
}

/// How VMs on a hypervisor reach and are reached.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "mode"
)]
pub enum VmNetwork {
    /// User-mode networking (passt) with SSH forwarded from a loopback port
    /// of the hypervisor: no bridge, no root networking, fine for labs.
    #[default]
    User,
    /// A libvirt NAT network.
    Nat {
        /// libvirt network name (default `edgeforge`).
        #[serde(default)]
        name: Option<String>,
        /// Network address, e.g. `192.168.150.0/24`.
        #[serde(default)]
        cidr: Option<String>,
    },
    /// An existing host bridge.
    Bridge {
        /// Bridge interface on the hypervisor, e.g. `br0`.
        bridge: String,
    },
}

/// An SSH bastion.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JumpHost {
    /// Name that `ssh.jump` refers to.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Sp<String>,
    /// Address (IP or DNS name).
    pub address: Sp<String>,
    /// How to reach the jump host; it may itself name jump hosts.
    #[serde(default)]
    pub ssh: SshSettings,
}

/// The federation host clusters register into.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Federation {
    /// `karmada`, `kubefed` or `none` (default).
    #[serde(default, rename = "type")]
    pub kind: FederationKind,
    /// Kubeconfig of the federation host; resolved like `identityFile`.
    #[serde(default)]
    pub kubeconfig: Option<Sp<PathBuf>>,
    /// Context in that kubeconfig (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Accept a host kubeconfig that sets `insecure-skip-tls-verify` (default
    /// false: such a kubeconfig is refused). edgeforge warns every time.
    #[serde(default, rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
    /// Karmada: how sites join unless they set their own `federation.mode`:
    /// `push` (default) or `pull` (a karmada-agent on the site).
    #[serde(default)]
    pub mode: Option<FederationMode>,
    /// Karmada: the provider recorded on every Cluster (`spec.provider`)
    /// unless a site sets its own.
    #[serde(default)]
    pub provider: Option<String>,
    /// Seconds to wait for service-account tokens, for deletions and for a
    /// pull-mode agent's Cluster to become Ready (default 120).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub wait_timeout: Option<u32>,
    /// Karmada pull mode: the karmada-agent edgeforge deploys on pull sites.
    #[serde(default)]
    pub agent: KarmadaAgent,
    /// KubeFed: names on the host.
    #[serde(default)]
    pub kubefed: KubefedSettings,
}

/// How a cluster joins Karmada.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FederationMode {
    /// The host reaches the cluster's API (`karmadactl join`).
    #[default]
    Push,
    /// A karmada-agent on the site reaches the host (`karmadactl register`):
    /// for sites behind NAT whose API the host cannot reach.
    Pull,
}

/// The karmada-agent of pull-mode sites.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KarmadaAgent {
    /// Image repository (default `docker.io/karmada/karmada-agent`).
    #[serde(default)]
    pub image: Option<Sp<String>>,
    /// Image tag, the Karmada release (default `v1.18.2`).
    #[serde(default)]
    pub version: Option<Sp<String>>,
    /// Pull the image through the site's registry mirror for its registry
    /// (`k3s.registryMirrors`), when it has one (default true).
    #[serde(default)]
    pub use_registry_mirror: Option<bool>,
    /// The host's API URL as agents reach it (default: the server of the
    /// federation kubeconfig).
    #[serde(default)]
    pub host_endpoint: Option<Sp<String>>,
}

/// KubeFed names.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubefedSettings {
    /// The host cluster's name in service-account names `<cluster>-<host>`
    /// (kubefedctl's `--host-cluster-name`; default `host`).
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub host_cluster_name: Option<Sp<String>>,
    /// The KubeFed system namespace (default `kube-federation-system`).
    #[serde(default)]
    pub namespace: Option<Sp<String>>,
}

/// How one site joins the federation host.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SiteFederation {
    /// Karmada: `push` or `pull` (default: the inventory's `federation.mode`).
    #[serde(default)]
    pub mode: Option<FederationMode>,
    /// Karmada: the Cluster's provider (default: `federation.provider`).
    #[serde(default)]
    pub provider: Option<String>,
    /// The cluster's API URL as the host (push, KubeFed) or Karmada's proxy
    /// (pull) reaches it (default: the server of the cluster's kubeconfig).
    #[serde(default)]
    pub api_endpoint: Option<Sp<String>>,
}

/// Which federation control plane, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FederationKind {
    /// No federation: clusters stand alone.
    #[default]
    None,
    /// Karmada (push or pull mode, per site).
    Karmada,
    /// KubeFed (archived upstream; kept for existing hosts).
    Kubefed,
}

/// An edge site: a place with one cluster.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Site {
    /// Unique site name (DNS label: lowercase letters, digits, `-`).
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Sp<String>,
    /// Region label, e.g. `eu-west`.
    #[serde(default)]
    pub region: Option<String>,
    /// Zone label, e.g. `eu-west-1a`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Labels for this site's nodes and cluster.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the inventory-wide defaults for this site.
    #[serde(default)]
    pub defaults: Defaults,
    /// The site's cluster.
    #[serde(default)]
    pub cluster: Cluster,
    /// How the site's cluster joins the federation host.
    #[serde(default)]
    pub federation: SiteFederation,
    /// The site's nodes.
    pub nodes: Vec<Node>,
}

/// The one k3s cluster of a site.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// Cluster name on the federation host (default: the site name).
    #[serde(default)]
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Option<Sp<String>>,
    /// Kubeconfig of a cluster that already runs (default: the one the k3s
    /// layer fetches into the state directory); resolved like `identityFile`.
    #[serde(default)]
    pub kubeconfig: Option<Sp<PathBuf>>,
    /// Context in that kubeconfig (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The API server URL the fetched kubeconfig points at: the address the
    /// operator reaches (default the first server's `machine.apiForwardPort`
    /// on its address, else `https://<first server address>:6443`). Its host
    /// must be covered by the servers' `tlsSan`.
    #[serde(default)]
    pub api_server: Option<Sp<String>>,
    /// Accept a kubeconfig that sets `insecure-skip-tls-verify` (default
    /// false: such a kubeconfig is refused). edgeforge warns every time.
    #[serde(default, rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
}

/// A machine in a site.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Node {
    /// Unique node name; also its hostname.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: Sp<String>,
    /// `server` (control plane) or `agent` (worker).
    pub role: Role,
    /// Address edgeforge connects to (IP or DNS name).
    pub address: Sp<String>,
    /// Overrides of the SSH defaults.
    #[serde(default)]
    pub ssh: SshSettings,
    /// Overrides of the k3s defaults.
    #[serde(default)]
    pub k3s: K3sSettings,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How the machine comes to exist (default: it already exists).
    #[serde(default)]
    pub machine: Machine,
    /// This node also hosts VMs: run the virt layer on it.
    #[serde(default)]
    pub hypervisor_host: bool,
}

/// The role of a node in its cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the k3s control plane (and etcd with more than one).
    Server,
    /// Runs workloads only.
    Agent,
}

/// Where a node's machine comes from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum Machine {
    /// An installed machine reachable over SSH.
    #[default]
    Existing,
    /// A VM that edgeforge defines on a libvirt hypervisor.
    Libvirt {
        /// Name from `hypervisors`.
        hypervisor: String,
        /// Size and image (override the VM defaults).
        #[serde(default)]
        vm: VmSettings,
        /// With `network.mode: user`, the loopback port on the hypervisor
        /// forwarded to the VM's port 22 (then `address` is `127.0.0.1`).
        #[serde(default)]
        #[schemars(range(min = 1))]
        ssh_forward_port: Option<u16>,
        /// The VM's static address on its hypervisor's `clusterNetwork`
        /// (its second NIC; k3s's `node-ip` unless `k3s.nodeIp` says otherwise).
        #[serde(default)]
        cluster_address: Option<Sp<String>>,
        /// With `network.mode: user`, a loopback port on the hypervisor
        /// forwarded to the VM's API server port 6443 (for the kubeconfig).
        #[serde(default)]
        #[schemars(range(min = 1))]
        api_forward_port: Option<u16>,
    },
    /// Bare metal powered and booted through a Redfish BMC.
    Redfish {
        /// BMC base URL, e.g. `https://10.0.0.10`.
        endpoint: String,
        /// Redfish system `Id` or `UUID` (default: the only system the BMC lists).
        #[serde(default)]
        system_id: Option<String>,
        /// BMC user name.
        username: String,
        /// BMC password, by reference.
        password: SecretRef,
        /// CA bundle that signs the BMC's certificate (default: system roots);
        /// resolved like `identityFile`.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Skip TLS certificate verification for this BMC (default false).
        /// Prefer `caFile`; edgeforge warns every time it is used.
        #[serde(default)]
        insecure: bool,
        /// Install an OS on the machine's disk through edgeforge's live ISO
        /// (absent: the machine already has its OS and is only powered on).
        #[serde(default)]
        install: Option<MetalInstall>,
    },
}

/// How edgeforge installs a bare-metal machine: the live ISO (`edgeforge
/// images build-live`) booted as virtual media, the OS image streamed to the
/// disk over SSH, then the machine booted from that disk.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetalInstall {
    /// The disk the OS goes onto, as the live system names it (`/dev/sda`,
    /// `/dev/nvme0n1`, `/dev/disk/by-path/...`); default: the machine's only
    /// fixed disk. Everything on it is erased.
    #[serde(default)]
    pub disk: Option<String>,
    /// The OS image to write: a qcow2 or raw root filesystem image laid out
    /// like edgeforge's base image; resolved like `identityFile`. Default: the
    /// base image (`edgeforge images build-base`).
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Seconds to wait for the live system, and later the installed system,
    /// to answer SSH after power-on (default 1200; servers can take minutes
    /// to get through their firmware).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub ssh_timeout: Option<u32>,
}

/// Where edgeforge serves install media (the live ISO) to BMCs during `apply`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MediaServer {
    /// `address:port` on this machine to listen on: an address the BMCs can
    /// reach (port 0 picks a free one).
    pub listen: Sp<String>,
    /// The base URL BMCs use to reach it, when that differs from
    /// `http://<listen>` (NAT, a DNS name); default `http://<listen>`.
    #[serde(default)]
    pub url: Option<Sp<String>>,
}

/// A value with the position it was read from (1-based line and column;
/// 0 when the value was built in code rather than read).
#[derive(Clone, Default)]
pub struct Sp<T> {
    /// The value itself.
    pub value: T,
    /// 1-based line, 0 if unknown.
    pub line: u32,
    /// 1-based column, 0 if unknown.
    pub col: u32,
}

impl<T> Sp<T> {
    /// A value with no source position.
    pub fn new(value: T) -> Self {
        Sp {
            value,
            line: 0,
            col: 0,
        }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Sp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Sp<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    /// Reads the value with its position from the inventory loader's
    /// deserializer (see `inventory::de`) or from serde-saphyr (through its
    /// `Spanned`, so other YAML files can use `Sp` too); any other
    /// deserializer gives the value with position 0:0.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(super::de::SP_NEWTYPE, SpVisitor(std::marker::PhantomData))
    }
}

/// Visits either the loader's `(line, col, value)` or a plain value.
struct SpVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for SpVisitor<T> {
    type Value = Sp<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Sp<T>, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Sp {
            value: s.value,
            line: u32::try_from(s.referenced.line()).unwrap_or(u32::MAX),
            col: u32::try_from(s.referenced.column()).unwrap_or(u32::MAX),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Sp<T>, A::Error> {
        use serde::de::Error;
        let line = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let col = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let value = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(2, &self))?;
        Ok(Sp { value, line, col })
    }
}

impl<T: Serialize> Serialize for Sp<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
