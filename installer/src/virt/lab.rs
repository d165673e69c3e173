//! The lab: every `machine: {type: libvirt}` node of an inventory as a VM.
//!
//! [`LabPlan::from_inventory`] is pure: it turns the inventory into one
//! [`VmSpec`] per node, grouped by hypervisor. The machine layer's VM steps
//! (`playbook::kinds::vm`) bring each VM up inside `apply`; [`status`] and
//! [`down`] look at and remove a lab through [`Hypervisor`]. The spec hash is
//! recorded in each domain's metadata, so libvirt itself remembers what every
//! VM was made from: a VM whose recorded hash differs from the plan's has
//! drifted, and is recreated only when the operator asks. [`LabKeys`] keeps the SSH material in
//! the lab's state directory: the login key pair and a stable ed25519 host
//! key per node, from which it writes a known_hosts file before any VM boots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    ClusterNic, DEFAULT_MACHINE, DEFAULT_POOL, DEFAULT_POOL_PATH, Hypervisor, NicSpec, SeedSpec,
    VirtError, VmSpec, VmState,
};
use crate::inventory::{Inventory, Machine, VmNetwork};

/// Default vCPUs of a lab VM.
pub const DEFAULT_CPUS: u32 = 2;
/// Default memory of a lab VM in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// Default root disk of a lab VM in GiB.
pub const DEFAULT_DISK_GIB: u64 = 10;
/// Default login user in lab VMs.
pub const DEFAULT_USER: &str = "edgeforge";

/// Errors of the lab beyond libvirt's.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The inventory asks for something the lab cannot do.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed.
    #[error(transparent)]
    Virt(#[from] VirtError),
    /// A key file could not be made or read.
    #[error("{what} {}", path.display())]
    Keys {
        /// What was being done.
        what: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The VMs of one hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// Hypervisor name in the inventory.
    pub hypervisor: String,
    /// libvirt URI.
    pub uri: String,
    /// Storage pool name.
    pub pool: String,
    /// Storage pool directory on the hypervisor.
    pub pool_path: String,
    /// The VMs.
    pub vms: Vec<LabVm>,
}

impl HostPlan {
    /// Hypervisor `hv` of the inventory, with no VMs yet.
    fn without_vms(hv: &crate::inventory::Hypervisor) -> HostPlan {
        HostPlan {
            hypervisor: hv.name.value.clone(),
            uri: hv.uri.value.clone(),
            pool: hv.pool.clone().unwrap_or_else(|| DEFAULT_POOL.into()),
            pool_path: hv
                .pool_path
                .as_ref()
                .map_or(DEFAULT_POOL_PATH.into(), |p| p.display().to_string()),
            vms: Vec::new(),
        }
    }
}

/// One VM of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabVm {
    /// The inventory node name (the guest's hostname).
    pub node: String,
    /// The VM spec (without the image and seed hashes, filled in by [`up`]).
    pub spec: VmSpec,
    /// Where edgeforge reaches its SSH server (`address:port`).
    pub ssh_addr: String,
    /// Login user.
    pub user: String,
    /// The identity file the inventory names, if any.
    pub identity_file: Option<PathBuf>,
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    /// Lab name (the inventory's name, default `lab`).
    pub name: String,
    /// Per hypervisor, in inventory order.
    pub hosts: Vec<HostPlan>,
}

impl LabPlan {
    /// The plan for every libvirt node in `inv`.
    pub fn from_inventory(inv: &Inventory) -> Result<LabPlan, LabError> {
        let name = inv.name.as_ref().map_or("lab", |n| n.as_str()).to_owned();
        let mut hosts: Vec<HostPlan> = Vec::new();
        for view in inv.nodes() {
            let Machine::Libvirt {
                hypervisor,
                ssh_forward_port,
                api_forward_port,
                cluster_address,
                ..
            } = &view.node.machine
            else {
                continue;
            };
            let node = &view.node.name;
            let hv = inv
                .hypervisors
                .iter()
                .find(|h| h.name.as_str() == hypervisor)
                .ok_or_else(|| {
                    LabError::Invalid(format!(
                        "line {} column {}: node {} names hypervisor `{hypervisor}`, which is not in `hypervisors`; add it there or fix the name",
                        node.line, node.col, node.value
                    ))
                })?;
            let network = match &hv.network {
                VmNetwork::User => {
                    let port = ssh_forward_port.ok_or_else(|| {
                        LabError::Invalid(format!(
                            "line {} column {}: node {} is on hypervisor {} with user networking but has no `machine.sshForwardPort`; give it a free loopback port",
                            node.line, node.col, node.value, hv.name.value
                        ))
                    })?;
                    NicSpec::User {
                        forward_address: "127.0.0.1".into(),
                        ssh_forward_port: port,
                        api_forward_port: *api_forward_port,
                    }
                }
                VmNetwork::Nat { name, .. } => NicSpec::Network {
                    name: name.clone().unwrap_or_else(|| "edgeforge".into()),
                },
                VmNetwork::Bridge { bridge } => NicSpec::Bridge {
                    bridge: bridge.clone(),
                },
            };
            let cluster = match (cluster_address, &hv.cluster_network) {
                (Some(address), Some(net)) => {
                    let prefix = net
                        .cidr
                        .parse::<ipnet::IpNet>()
                        .map(|n| n.prefix_len())
                        .map_err(|_| {
                            LabError::Invalid(format!(
                                "line {} column {}: the cluster network `cidr` of hypervisor {} is not a CIDR",
                                net.cidr.line, net.cidr.col, hv.name.value
                            ))
                        })?;
                    Some(ClusterNic::new(
                        &domain_name(&name, node),
                        &net.name,
                        address,
                        prefix,
                    ))
                }
                (Some(address), None) => {
                    return Err(LabError::Invalid(format!(
                        "line {} column {}: node {} has a `clusterAddress` but hypervisor {} has no `clusterNetwork`",
                        address.line, address.col, node.value, hv.name.value
                    )));
                }
                (None, _) => None,
            };
            let port = view.ssh.port.or(*ssh_forward_port).unwrap_or(22);
            let spec = VmSpec {
                name: domain_name(&name, node),
                hostname: node.value.clone(),
                lab: name.clone(),
                cpus: view.vm.cpus.unwrap_or(DEFAULT_CPUS),
                memory_mib: view.vm.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
                disk_gib: view.vm.disk_gib.unwrap_or(DEFAULT_DISK_GIB),
                image_sha256: String::new(),
                seed_sha256: String::new(),
                machine: DEFAULT_MACHINE.into(),
                network,
                cluster,
            };
            let vm = LabVm {
                node: node.value.clone(),
                spec,
                ssh_addr: format!("{}:{port}", view.node.address.value),
                user: view
                    .ssh
                    .user
                    .as_ref()
                    .map_or(DEFAULT_USER, |u| u.as_str())
                    .to_owned(),
                identity_file: view.ssh.identity_file.as_ref().map(|p| p.value.clone()),
            };
            match hosts.iter_mut().find(|h| h.hypervisor == hv.name.value) {
                Some(h) => h.vms.push(vm),
                None => hosts.push(HostPlan {
                    vms: vec![vm],
                    ..HostPlan::without_vms(hv)
                }),
            }
        }
        if hosts.is_empty() {
            return Err(LabError::Invalid(
                "the inventory has no node with `machine: {type: libvirt}`: nothing for the lab to run".into(),
            ));
        }
        Ok(LabPlan { name, hosts })
    }

    /// Whether hypervisor `name` is itself one of this lab's VMs.
    pub fn hosted_on_lab(&self, name: &str) -> bool {
        self.vms().any(|vm| vm.node == name)
    }

    /// Every hypervisor of `inv` as `lab down` visits them: those that are
    /// this lab's own VMs first (what runs on them is removed before they
    /// go), then the others in file order; hypervisors without lab VMs
    /// are visited too, for domains of this lab made there by other means.
    pub fn down_order(&self, inv: &Inventory) -> Vec<HostPlan> {
        let mut hosts: Vec<HostPlan> = inv
            .hypervisors
            .iter()
            .map(|h| {
                self.hosts
                    .iter()
                    .find(|p| p.hypervisor == h.name.as_str())
                    .cloned()
                    .unwrap_or_else(|| HostPlan::without_vms(h))
            })
            .collect();
        hosts.sort_by_key(|h| !self.hosted_on_lab(&h.hypervisor));
        hosts
    }

    /// Every VM, across hypervisors.
    pub fn vms(&self) -> impl Iterator<Item = &LabVm> {
        self.hosts.iter().flat_map(|h| h.vms.iter())
    }

    /// The one login key the inventory names for the lab's VMs (the lab
    /// generates one key for all of them), or `None` for the default.
    pub fn identity_file(&self) -> Result<Option<PathBuf>, LabError> {
        let mut files: Vec<&PathBuf> = self
            .vms()
            .filter_map(|v| v.identity_file.as_ref())
            .collect();
        files.sort();
        files.dedup();
        if files.len() > 1 {
            return Err(LabError::Invalid(format!(
                "the lab's nodes name different identity files ({}); the lab generates one key for all its VMs, give them the same `ssh.identityFile`",
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(files.first().map(|p| (*p).clone()))
    }
}

/// The domain name of `node` in lab `lab` (names its volumes too).
pub fn domain_name(lab: &str, node: &str) -> String {
    format!("{lab}-{node}")
}

/// SSH material of a lab, kept in its state directory.
#[derive(Debug, Clone)]
pub struct LabKeys {
    /// The state directory.
    pub dir: PathBuf,
    /// The login private key (its `.pub` beside it).
    pub identity: PathBuf,
    /// The known_hosts file with every VM's host key.
    pub known_hosts: PathBuf,
}

impl LabKeys {
    /// Creates (once) the login key at `identity` (default `<dir>/id_ed25519`)
    /// and a host key per VM, and writes `<dir>/known_hosts`.
    pub fn ensure(
        dir: &Path,
        identity: Option<&Path>,
        plan: &LabPlan,
    ) -> Result<LabKeys, LabError> {
        let identity = identity.map_or_else(|| dir.join("id_ed25519"), Path::to_owned);
        ensure_keypair(&identity, "edgeforge-lab")?;
        let mut lines = String::new();
        for vm in plan.vms() {
            let key = dir
                .join("hostkeys")
                .join(format!("{}_ed25519", vm.spec.name));
            ensure_keypair(&key, &format!("edgeforge-lab-host-{}", vm.node))?;
            let public = read_key(&pub_path(&key))?;
            let host = match vm.ssh_addr.rsplit_once(':') {
                Some((h, "22")) => h.to_owned(),
                Some((h, p)) => format!("[{h}]:{p}"),
                None => vm.ssh_addr.clone(),
            };
            lines.push_str(&format!("{host} {}\n", public.trim()));
        }
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, lines).map_err(|source| LabError::Keys {
            what: "writing".into(),
            path: known_hosts.clone(),
            source,
        })?;
        Ok(LabKeys {
            dir: dir.to_owned(),
            identity,
            known_hosts,
        })
    }

    /// The cloud-init seed of `vm`.
    pub fn seed(&self, vm: &LabVm, instance_id: &str) -> Result<SeedSpec, LabError> {
        let key = self
            .dir
            .join("hostkeys")
            .join(format!("{}_ed25519", vm.spec.name));
        Ok(SeedSpec {
            hostname: vm.node.clone(),
            instance_id: instance_id.to_owned(),
            user: vm.user.clone(),
            authorized_key: read_key(&pub_path(&self.identity))?.trim().to_owned(),
            host_key_private: read_key(&key)?,
            host_key_public: read_key(&pub_path(&key))?.trim().to_owned(),
            cluster: vm.spec.cluster.clone(),
        })
    }
}

impl LabVm {
    /// The VM's full spec: the inventory's plus the hashes of what comes from
    /// outside it (the base image, the seed's identity material).
    pub fn finished_spec(&self, image_sha256: &str, keys: &LabKeys) -> Result<VmSpec, LabError> {
        let mut spec = self.spec.clone();
        spec.image_sha256 = image_sha256.to_owned();
        let seed = keys.seed(self, "")?;
        let material = format!(
            "{}\0{}\0{}\0{}",
            seed.user, seed.hostname, seed.authorized_key, seed.host_key_public
        );
        spec.seed_sha256 = hex::encode(Sha256::digest(material));
        Ok(spec)
    }
}

/// One VM as `lab status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmReport {
    /// Domain name.
    pub name: String,
    /// Hypervisor name.
    pub hypervisor: String,
    /// State, or None when not defined.
    pub state: Option<VmState>,
    /// Where SSH is reached.
    pub ssh_addr: String,
    /// Whether an SSH server answers there now.
    pub ssh_up: bool,
    /// Whether the recorded spec differs from the inventory's (None: unknown,
    /// no base image to compare with).
    pub drift: Option<bool>,
    /// DHCP addresses the hypervisor knows.
    pub addresses: Vec<String>,
}

/// The state of every planned VM of `host`, plus lab VMs the plan no longer
/// has; drift is known when the base image's sha256 is.
pub async fn status(
    hv: &Hypervisor,
    host: &HostPlan,
    lab: &str,
    image_sha256: Option<&str>,
    keys: &LabKeys,
) -> Result<Vec<VmReport>, LabError> {
    let mut reports = Vec::new();
    let mut seen = BTreeMap::new();
    for vm in &host.vms {
        let s = hv.vm_status(&vm.spec.name).await?;
        seen.insert(vm.spec.name.clone(), ());
        let ssh_up = s.as_ref().is_some_and(|s| s.state == VmState::Running)
            && super::ssh_banner(&vm.ssh_addr).await;
        let wanted = match image_sha256 {
            Some(sha) => Some(vm.finished_spec(sha, keys)?.spec_hash()),
            None => None,
        };
        reports.push(VmReport {
            name: vm.spec.name.clone(),
            hypervisor: host.hypervisor.clone(),
            state: s.as_ref().map(|s| s.state),
            ssh_addr: vm.ssh_addr.clone(),
            ssh_up,
            drift: match (&s, wanted) {
                (Some(s), Some(w)) => Some(s.spec_hash != w),
                _ => None,
            },
            addresses: s.map(|s| s.addresses).unwrap_or_default(),
        });
    }
    for s in hv.list_lab(lab).await? {
        if !seen.contains_key(&s.name) {
            reports.push(VmReport {
                name: s.name,
                hypervisor: host.hypervisor.clone(),
                state: Some(s.state),
                ssh_addr: s.ssh_endpoint,
                ssh_up: false,
                drift: Some(true),
                addresses: s.addresses,
            });
        }
    }
    Ok(reports)
}

/// Removes every domain of lab `lab` on `host` (and the planned ones, should
/// their metadata be gone) with their volumes; the base image stays.
pub async fn down(
    hv: &Hypervisor,
    host: &HostPlan,
    lab: &str,
) -> Result<Vec<(String, super::Removed)>, LabError> {
    let mut names: Vec<String> = hv
        .list_lab(lab)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    for vm in &host.vms {
        if !names.contains(&vm.spec.name) {
            names.push(vm.spec.name.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let removed = hv.remove_vm(&host.pool, &name).await?;
        if removed.undefined || !removed.volumes.is_empty() {
            out.push((name, removed));
        }
    }
    // The isolated network goes with the last VM that used it.
    let mut networks: Vec<&str> = host
        .vms
        .iter()
        .filter_map(|v| v.spec.cluster.as_ref().map(|c| c.network.as_str()))
        .collect();
    networks.sort_unstable();
    networks.dedup();
    for net in networks {
        hv.remove_network_if_unused(net).await?;
    }
    Ok(out)
}

pub(crate) fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

pub(crate) fn read_key(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(|source| LabError::Keys {
        what: "reading the key".into(),
        path: path.to_owned(),
        source,
    })
}

/// Generates an ed25519 key pair with ssh-keygen unless `path` exists.
pub(crate) fn ensure_keypair(path: &Path, comment: &str) -> Result<(), LabError> {
    if path.is_file() && pub_path(path).is_file() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| LabError::Keys {
            what: "creating the key directory".into(),
            path: parent.to_owned(),
            source,
        })?;
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .map_err(|source| LabError::Keys {
            what: "running ssh-keygen (apt-get install openssh-client) for".into(),
            path: path.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Keys {
            what: format!(
                "ssh-keygen failed ({}) for",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            path: path.to_owned(),
            source: std::io::Error::other("ssh-keygen failed"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"
apiVersion: edgeforge/v1
name: lab
defaults:
  ssh: {user: root}
  vm: {cpus: 2, memoryMib: 1024, diskGib: 4}
hypervisors:
  - name: local
    uri: "test:///default"
    network: {mode: user}
sites:
  - name: s
    nodes:
      - name: n1
        role: server
        address: 127.0.0.1
        machine: {type: libvirt, hypervisor: local, sshForwardPort: 2201}
      - name: n2
        role: agent
        address: 127.0.0.1
        machine: {type: libvirt, hypervisor: local, sshForwardPort: 2202, vm: {memoryMib: 512}}
      - name: bare
        role: agent
        address: 10.0.0.9
"#;

    /// Parses a test inventory with the same checks as `edgeforge check`.
    fn parse(yaml: &str) -> Inventory {
        crate::inventory::load_str("lab-test.yaml", yaml)
            .expect("inventory")
            .inventory
    }

    #[test]
    fn plan_covers_libvirt_nodes_with_layered_settings() {
        let inv = parse(LAB);
        let plan = LabPlan::from_inventory(&inv).expect("plan");
        assert_eq!(plan.name, "lab");
        assert_eq!(plan.hosts.len(), 1);
        let host = &plan.hosts[0];
        assert_eq!(host.pool, DEFAULT_POOL);
        let names: Vec<_> = host.vms.iter().map(|v| v.spec.name.as_str()).collect();
        assert_eq!(names, ["lab-n1", "lab-n2"]);
        assert_eq!(host.vms[1].spec.memory_mib, 512);
        assert_eq!(host.vms[1].spec.cpus, 2);
        assert_eq!(host.vms[0].ssh_addr, "127.0.0.1:2201");
        assert_eq!(host.vms[0].user, "root");
    }

    #[test]
    fn lab_down_visits_hypervisors_on_lab_vms_first_and_those_without_vms_too() {
        let yaml = LAB
            .replace(
                "    network: {mode: user}\n",
                "    network: {mode: user}\n  - name: far\n    uri: \"qemu+ssh://root@10.0.0.7/system\"\n  - name: n2\n    uri: \"qemu+ssh://root@127.0.0.1:2202/system\"\n",
            )
            .replace(
                "sshForwardPort: 2202, vm: {memoryMib: 512}}",
                "sshForwardPort: 2202, vm: {memoryMib: 512}}\n        hypervisorHost: true",
            );
        let inv = parse(&yaml);
        let plan = LabPlan::from_inventory(&inv).expect("plan");
        assert!(plan.hosted_on_lab("n2"));
        assert!(!plan.hosted_on_lab("far") && !plan.hosted_on_lab("local"));
        let order = plan.down_order(&inv);
        let names: Vec<&str> = order.iter().map(|h| h.hypervisor.as_str()).collect();
        assert_eq!(names, ["n2", "local", "far"]);
        assert_eq!(order[1].vms.len(), 2);
        assert!(order[0].vms.is_empty() && order[2].vms.is_empty());
        assert_eq!(order[2].pool, DEFAULT_POOL);
        assert_eq!(order[2].uri, "qemu+ssh://root@10.0.0.7/system");
    }

    #[test]
    fn unknown_hypervisor_and_missing_port_are_invalid() {
        // The loader refuses these before the lab sees them.
        let messages = |yaml: &str| match crate::inventory::load_str("lab-test.yaml", yaml) {
            Err(crate::inventory::LoadError::Invalid(d)) => d
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => panic!("must be invalid: {other:?}"),
        };
        let err =
            messages(&LAB.replace("hypervisor: local, sshForwardPort: 2202", "hypervisor: far"));
        assert!(err.contains("far"), "{err}");
        let err = messages(&LAB.replace(", sshForwardPort: 2201", ""));
        assert!(err.contains("sshForwardPort"), "{err}");
    }

    #[test]
    fn keys_and_known_hosts_are_stable() {
        let inv = parse(LAB);
        let plan = LabPlan::from_inventory(&inv).expect("plan");
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = LabKeys::ensure(tmp.path(), None, &plan).expect("keys");
        let first = std::fs::read_to_string(&keys.known_hosts).expect("known_hosts");
        assert_eq!(first.lines().count(), 2);
        assert!(
            first.starts_with("[127.0.0.1]:2201 ssh-ed25519 "),
            "{first}"
        );
        let again = LabKeys::ensure(tmp.path(), None, &plan).expect("keys");
        assert_eq!(
            std::fs::read_to_string(&again.known_hosts).expect("known_hosts"),
            first
        );
        let seed = keys.seed(&plan.hosts[0].vms[0], "id-1").expect("seed");
        assert!(seed.host_key_private.contains("OPENSSH PRIVATE KEY"));
        assert!(seed.authorized_key.starts_with("ssh-ed25519 "));
    }
}
