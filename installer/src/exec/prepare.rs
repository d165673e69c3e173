//! From an inventory and its plan to a [`RunSpec`], checked before any target
//! is touched; and the production [`Connector`] that reaches the targets the
//! inventory describes.
//!
//! Each plan task becomes one [`ExecTask`]: its playbook
//! (`playbooks/<action>.yaml`, parsed and checked once), its target (derived
//! from the playbook's `target:` and the task: a node's host, its hypervisor
//! or BMC, the site's cluster, the federation host), its template context and
//! secrets, and the indices of the tasks it needs. A plan task whose playbook
//! this build does not have is left out with a note, and tasks that needed it
//! go on as if it were done, like the plan's external dependencies. VMs the
//! machine layer creates get their key material here (generated once into
//! the lab's state directory) and their SSH host keys pinned: edgeforge made
//! those keys, so it never needs to trust a first sight. Bare metal that
//! edgeforge installs likewise: a login key and two host keys per node (the
//! live installer's and the installed system's), generated into
//! `<state>/baremetal/` and pinned, and its machine task gets a
//! [`MetalTask`] with the OS image, the live ISO and the run's media server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::targets::{ConnectError, Connector, Target};
use super::{ExecTask, RunSpec, TaskGroup};
use crate::bmc::{BmcConfig, RedfishClient};
use crate::data::DataDir;
use crate::inventory::{Inventory, Machine, NodeView, Role};
use crate::kube::KubeConn;
use crate::metal::keys::KeyedNode;
use crate::metal::{
    InstallPlan, MediaServer, MetalKeys, MetalTask, OsImage, SharedImage, SharedLive,
};
use crate::plan::{Action, Plan, Task};
use crate::playbook::kinds::TaskData;
use crate::playbook::kinds::vm::VmTask;
use crate::playbook::{Playbook, TargetKind};
use crate::render::Renderer;
use crate::transport::known_hosts::HostKeyCheck;
use crate::transport::target::read_secret;
use crate::transport::{SshTarget, SshTransport, Transport};
use crate::virt::baseimage::BuildOptions;
use crate::virt::lab::{LabKeys, LabPlan};
use crate::virt::{Hypervisor, Session};

use super::select::Shard;

/// What a run is prepared from, beside the inventory and its plan.
pub struct PrepareOptions<'a> {
    /// Where playbooks and templates come from.
    pub data: &'a DataDir,
    /// The renderer every playbook is checked against.
    pub renderer: &'a Renderer,
    /// Run this playbook on every selected node instead of the layer playbooks.
    pub adhoc: Option<Arc<Playbook>>,
    /// Only the sites of this shard.
    pub shard: Option<Shard>,
    /// The inventory's state directory (cluster kubeconfigs fetched by the k3s layer live here).
    pub state_dir: &'a Path,
    /// How hypervisors build the base VM image.
    pub image: BuildOptions,
    /// Agents of a site a rolling upgrade takes out of service at once.
    pub max_unavailable: super::select::MaxUnavailable,
}

/// A run ready to start.
pub struct Prepared {
    /// The tasks.
    pub spec: RunSpec,
    /// How to reach their targets.
    pub connector: Arc<InventoryConnector>,
    /// Things the operator should know (left-out tasks).
    pub notes: Vec<String>,
    /// Things the operator should worry about (a BMC whose TLS is not verified).
    pub warnings: Vec<String>,
}

/// Why a run cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A playbook is malformed.
    #[error(transparent)]
    Playbook(#[from] crate::playbook::PlaybookError),
    /// A playbook's templates or expressions do not compile.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// A data file could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A node's SSH settings (or a secret they reference) cannot be used.
    #[error("node {node}")]
    Ssh {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: crate::transport::TargetError,
    },
    /// A secret of a task cannot be read.
    #[error(transparent)]
    Secret(#[from] crate::transport::TargetError),
    /// The lab's VMs cannot be planned or their keys made.
    #[error(transparent)]
    Lab(#[from] crate::virt::lab::LabError),
    /// A node's BMC settings (or the password they reference) cannot be used.
    #[error(transparent)]
    Bmc(#[from] crate::bmc::BmcError),
    /// A playbook's target does not fit the task it is used for.
    #[error("{0}")]
    Target(String),
}

impl PrepareError {
    /// 2 for problems of the input, 1 for the machine (keys that cannot be written).
    pub fn exit_code(&self) -> u8 {
        match self {
            PrepareError::Lab(crate::virt::lab::LabError::Invalid(_)) => 2,
            PrepareError::Lab(_) | PrepareError::Data(_) => 1,
            PrepareError::Bmc(e) if !e.is_input_error() => 1,
            _ => 2,
        }
    }
}

/// Turns the plan into the run's tasks and the connector that reaches their targets.
pub fn prepare(
    inv: &Inventory,
    plan: &Plan<'_>,
    opts: &PrepareOptions<'_>,
) -> Result<Prepared, PrepareError> {
    let views: BTreeMap<&str, NodeView<'_>> =
        inv.nodes().map(|v| (v.node.name.as_str(), v)).collect();
    let in_shard = |site: &str| opts.shard.is_none_or(|s| s.contains_site(site));
    let mut playbooks: BTreeMap<&'static str, Option<Arc<Playbook>>> = BTreeMap::new();
    let mut tasks: Vec<ExecTask> = Vec::new();
    // Plan task id → index in `tasks`, for the kept ones.
    let mut index: Vec<Option<usize>> = vec![None; plan.tasks().len()];
    let mut left_out: BTreeMap<&'static str, usize> = BTreeMap::new();
    let vms = vm_tasks(inv, plan)?;
    let k3s_default = default_k3s_version(inv, opts.data);
    let metal_keys = metal_keys(inv, opts)?;
    let metal = metal_tasks(inv, plan, opts, metal_keys.as_ref())?;

    match &opts.adhoc {
        Some(pb) => {
            pb.check(opts.renderer)?;
            if pb.target != TargetKind::Host {
                return Err(PrepareError::Target(format!(
                    "{}: --playbook runs on every selected node's host; a `target: {}` playbook cannot",
                    pb.source, pb.target
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            for task in plan.tasks() {
                let Some(node) = task.node else { continue };
                if !in_shard(task.site.name.as_str()) || !seen.insert(node.name.as_str()) {
                    continue;
                }
                let Some(view) = views.get(node.name.as_str()) else {
                    continue;
                };
                tasks.push(ExecTask {
                    key: format!("{}/playbook", node.name.as_str()),
                    subject: node.name.value.clone(),
                    site: task.site.name.value.clone(),
                    node: Some(node.name.value.clone()),
                    layer: "playbook".into(),
                    target: Target::Host(node.name.value.clone()),
                    playbook: pb.clone(),
                    context: crate::context::node(inv, view),
                    secrets: secrets(view)?,
                    data: TaskData::None,
                    deps: Vec::new(),
                    group: None,
                });
            }
        }
        None => {
            for task in plan.tasks() {
                if !in_shard(task.site.name.as_str()) {
                    continue;
                }
                let key = task.action.playbook();
                let pb = match playbooks.get(key) {
                    Some(pb) => pb.clone(),
                    None => {
                        let pb = load_playbook(opts, key)?;
                        playbooks.insert(key, pb.clone());
                        pb
                    }
                };
                let Some(pb) = pb else {
                    *left_out.entry(key).or_default() += 1;
                    continue;
                };
                let view = task.node.and_then(|n| views.get(n.name.as_str()));
                if let Some(view) = view
                    && !pb.applies_to(view)
                {
                    continue;
                }
                let target = target_for(pb.target, task)?;
                let deps = task
                    .deps
                    .iter()
                    .filter_map(|d| index.get(d.index()).copied().flatten())
                    .collect();
                let (subject, mut context, secrets) = match view {
                    Some(view) => (
                        view.node.name.value.clone(),
                        crate::context::node(inv, view),
                        secrets(view)?,
                    ),
                    None => (
                        format!("site/{}", task.site.name.as_str()),
                        crate::context::site(inv, task.site),
                        BTreeMap::new(),
                    ),
                };
                if context["versions"]["k3s"].is_null()
                    && let Some(v) = &k3s_default
                {
                    context["versions"]["k3s"] = serde_json::Value::String(v.clone());
                }
                let data = match (&target, task.node, &task.action) {
                    (Target::Hypervisor(_), Some(n), _) => vms
                        .get(n.name.as_str())
                        .map(|v| TaskData::Vm(v.clone()))
                        .unwrap_or_default(),
                    (_, _, crate::plan::Action::Federate { .. }) => TaskData::Federation(Arc::new(
                        crate::federation::SiteSpec::new(inv, task.site),
                    )),
                    (Target::Bmc(_), Some(n), _) => metal
                        .get(n.name.as_str())
                        .map(|m| TaskData::Metal(m.clone()))
                        .unwrap_or_default(),
                    _ => TaskData::None,
                };
                let group = k3s_group(task, opts.max_unavailable);
                index[task.id.index()] = Some(tasks.len());
                tasks.push(ExecTask {
                    key: task.key(),
                    subject,
                    site: task.site.name.value.clone(),
                    node: task.node.map(|n| n.name.value.clone()),
                    layer: task.layer.to_string(),
                    target,
                    playbook: pb,
                    context,
                    secrets,
                    data,
                    deps,
                    group,
                });
            }
        }
    }
    let notes = left_out
        .iter()
        .filter(|(pb, _)| !pb.starts_with("machine/existing"))
        .map(|(pb, n)| {
            format!(
                "{n} task(s) of `{pb}` have no playbook in this build and are left out (tasks after them go on as if they were done)"
            )
        })
        .collect();
    let connector = InventoryConnector::new(inv, &tasks, &vms, metal_keys.as_ref(), opts)?;
    let warnings = connector
        .bmcs
        .values()
        .filter_map(BmcConfig::insecure_warning)
        .collect();
    Ok(Prepared {
        spec: RunSpec { tasks },
        connector: Arc::new(connector),
        notes,
        warnings,
    })
}

/// The rolling group of a node's k3s task: a site's servers one at a time,
/// then its agents, `--max-unavailable` of them at once.
fn k3s_group(task: &Task<'_>, max_unavailable: super::select::MaxUnavailable) -> Option<TaskGroup> {
    let site = task.site.name.as_str();
    let servers = format!("site/{site}/k3s-servers");
    match task.action {
        Action::InitFirstServer | Action::JoinServer { .. } => Some(TaskGroup {
            name: servers,
            limit: 1,
            after: None,
        }),
        Action::JoinAgent { .. } => {
            let agents = task
                .site
                .nodes
                .iter()
                .filter(|n| n.role == Role::Agent)
                .count();
            Some(TaskGroup {
                name: format!("site/{site}/k3s-agents"),
                limit: max_unavailable.slots(agents),
                after: Some(servers),
            })
        }
        _ => None,
    }
}

/// The manifest's default k3s release, for inventories without `versions.k3s`.
fn default_k3s_version(inv: &Inventory, data: &DataDir) -> Option<String> {
    if inv.versions.k3s.is_some() {
        return None;
    }
    crate::artifacts::Manifest::from_data(data)
        .ok()
        .and_then(|m| m.defaults.k3s.map(|v| v.value))
}

/// `playbooks/<key>.yaml`, parsed and checked, or `None` when the data directory has none.
fn load_playbook(
    opts: &PrepareOptions<'_>,
    key: &str,
) -> Result<Option<Arc<Playbook>>, PrepareError> {
    let rel = format!("playbooks/{key}.yaml");
    if !opts.data.exists(&rel) {
        return Ok(None);
    }
    let text = opts.data.read_text(&rel)?;
    let pb = Playbook::parse(&rel, &text)?;
    pb.check(opts.renderer)?;
    Ok(Some(Arc::new(pb)))
}

/// The target a task's playbook runs against.
fn target_for(kind: TargetKind, task: &Task<'_>) -> Result<Target, PrepareError> {
    let site = task.site.name.value.clone();
    let mismatch = |what: &str| {
        PrepareError::Target(format!(
            "playbooks/{}.yaml has `target: {kind}`, but task {} {what}",
            task.action.playbook(),
            task.key()
        ))
    };
    Ok(match kind {
        TargetKind::Host => match task.node {
            Some(n) => Target::Host(n.name.value.clone()),
            // A site's host task runs on its first server.
            None => task
                .site
                .nodes
                .iter()
                .find(|n| n.role == Role::Server)
                .map(|n| Target::Host(n.name.value.clone()))
                .ok_or_else(|| mismatch("belongs to a site without a server"))?,
        },
        TargetKind::Cluster => Target::Cluster(site),
        TargetKind::Federation => Target::Federation,
        TargetKind::Hypervisor => match task.node.map(|n| &n.machine) {
            Some(Machine::Libvirt { hypervisor, .. }) => Target::Hypervisor(hypervisor.clone()),
            _ => return Err(mismatch("is not about a libvirt VM")),
        },
        TargetKind::Bmc => match task.node {
            Some(n) if matches!(n.machine, Machine::Redfish { .. }) => {
                Target::Bmc(n.name.value.clone())
            }
            _ => return Err(mismatch("is not about a Redfish machine")),
        },
    })
}

/// The secrets a node's tasks see as `secrets.*` (see [`crate::context::k3s_secret_refs`]).
fn secrets(view: &NodeView<'_>) -> Result<BTreeMap<String, String>, PrepareError> {
    let mut secrets = BTreeMap::new();
    for (key, reference) in crate::context::k3s_secret_refs(view) {
        let what = match key.as_str() {
            "k3s_token" => "k3s.token".to_string(),
            "k3s_agent_token" => "k3s.agentToken".to_string(),
            other => format!("k3s.registryConfigs {other}"),
        };
        secrets.insert(key, read_secret(&what, &reference)?.expose().to_string());
    }
    Ok(secrets)
}

/// The VM of every libvirt node that has a task in the plan, with the lab's
/// keys (generated once): also without its machine task (`--layer k3s`),
/// SSH to the VM logs in with the lab's key and pins its host key.
fn vm_tasks(
    inv: &Inventory,
    plan: &Plan<'_>,
) -> Result<BTreeMap<String, Arc<VmTask>>, PrepareError> {
    let wanted: std::collections::BTreeSet<&str> = plan
        .tasks()
        .iter()
        .filter_map(|t| t.node)
        .filter(|n| matches!(n.machine, crate::inventory::Machine::Libvirt { .. }))
        .map(|n| n.name.as_str())
        .collect();
    lab_vms(inv, &wanted)
}

/// The lab VMs among `wanted` nodes, with the lab's keys (generated once).
fn lab_vms(
    inv: &Inventory,
    wanted: &std::collections::BTreeSet<&str>,
) -> Result<BTreeMap<String, Arc<VmTask>>, PrepareError> {
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let lab = LabPlan::from_inventory(inv)?;
    let identity = lab.identity_file()?;
    let keys = LabKeys::ensure(&crate::state::lab_dir(&lab.name), identity.as_deref(), &lab)?;
    Ok(lab
        .vms()
        .filter(|vm| wanted.contains(vm.node.as_str()))
        .map(|vm| {
            (
                vm.node.clone(),
                Arc::new(VmTask {
                    vm: vm.clone(),
                    keys: keys.clone(),
                }),
            )
        })
        .collect())
}

/// The key material of the inventory's bare-metal installs (every Redfish
/// node with `machine.install`), generated once into `<state>/baremetal/`;
/// `None` when no node is installed by edgeforge.
fn metal_keys(
    inv: &Inventory,
    opts: &PrepareOptions<'_>,
) -> Result<Option<MetalKeys>, PrepareError> {
    let installed: Vec<NodeView<'_>> = inv
        .nodes()
        .filter(|v| {
            matches!(
                v.node.machine,
                Machine::Redfish {
                    install: Some(_),
                    ..
                }
            )
        })
        .collect();
    if installed.is_empty() {
        return Ok(None);
    }
    let mut identities: Vec<&std::path::Path> = installed
        .iter()
        .filter_map(|v| v.ssh.identity_file.as_ref().map(|p| p.value.as_path()))
        .collect();
    identities.sort();
    identities.dedup();
    if identities.len() > 1 {
        return Err(PrepareError::Target(format!(
            "the nodes edgeforge installs name different identity files ({}); one login key is \
             put into all of them, give them the same `ssh.identityFile` (or none: edgeforge \
             then generates one)",
            identities
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let nodes: Vec<KeyedNode> = installed
        .iter()
        .map(|v| KeyedNode {
            node: v.node.name.value.clone(),
            ssh_addr: format!("{}:{}", v.node.address.value, v.ssh_port()),
        })
        .collect();
    let keys = MetalKeys::ensure(
        &opts.state_dir.join("baremetal"),
        identities.first().copied(),
        &nodes,
    )?;
    Ok(Some(keys))
}

/// The [`MetalTask`] of every Redfish node with a machine task in the plan.
fn metal_tasks(
    inv: &Inventory,
    plan: &Plan<'_>,
    opts: &PrepareOptions<'_>,
    keys: Option<&MetalKeys>,
) -> Result<BTreeMap<String, Arc<MetalTask>>, PrepareError> {
    let wanted: std::collections::BTreeSet<&str> = plan
        .tasks()
        .iter()
        .filter(|t| matches!(t.action, crate::plan::Action::RedfishBoot { .. }))
        .filter_map(|t| t.node.map(|n| n.name.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    let mut media: Option<Arc<MediaServer>> = None;
    let live = Arc::new(SharedLive::new(opts.image.clone()));
    let mut images: BTreeMap<Option<PathBuf>, Arc<SharedImage>> = BTreeMap::new();
    for view in inv.nodes() {
        let name = view.node.name.as_str();
        let Machine::Redfish { install, .. } = &view.node.machine else {
            continue;
        };
        if !wanted.contains(name) {
            continue;
        }
        let ssh_timeout = install
            .as_ref()
            .and_then(|i| i.ssh_timeout)
            .map_or(crate::metal::DEFAULT_SSH_TIMEOUT, |s| {
                std::time::Duration::from_secs(u64::from(s))
            });
        let plan = match (install, keys) {
            (Some(install), Some(keys)) => {
                let media = match &media {
                    Some(m) => m.clone(),
                    None => {
                        let m = Arc::new(media_server(inv)?);
                        media = Some(m.clone());
                        m
                    }
                };
                let image = images
                    .entry(install.image.clone())
                    .or_insert_with(|| {
                        let source = match &install.image {
                            Some(path) => OsImage::File(path.clone()),
                            None => OsImage::Base(opts.image.clone()),
                        };
                        Arc::new(SharedImage::new(source, opts.image.cache.clone()))
                    })
                    .clone();
                let mut live_target = ssh_target(inv, &view, Some(keys.identity.clone()))?;
                // The live system: root with the login key, only its own pinned host key.
                live_target.user = "root".into();
                live_target.passphrase = None;
                live_target.agent = false;
                live_target.sudo = crate::transport::SudoMode::None;
                live_target.host_key = HostKeyCheck {
                    pinned: None,
                    known_hosts: vec![keys.live_known_hosts.clone()],
                    accept_new: None,
                };
                Some(InstallPlan {
                    user: view
                        .ssh
                        .user
                        .as_ref()
                        .map_or("root", |u| u.as_str())
                        .to_string(),
                    disk: install.disk.clone(),
                    image,
                    live: live.clone(),
                    media,
                    keys: keys.clone(),
                    live_target,
                    media_dir: opts.state_dir.join("baremetal").join("media"),
                })
            }
            _ => None,
        };
        out.insert(
            name.to_string(),
            Arc::new(MetalTask {
                node: name.to_string(),
                ssh_timeout,
                install: plan,
            }),
        );
    }
    Ok(out)
}

/// The run's media server, from the inventory's `mediaServer`.
fn media_server(inv: &Inventory) -> Result<MediaServer, PrepareError> {
    let settings = inv.media_server.as_ref().ok_or_else(|| {
        PrepareError::Target(
            "a node is to be installed, but the inventory has no `mediaServer` to serve the \
             live ISO to its BMC from; add `mediaServer: {listen: ADDRESS:PORT}` with an address \
             of this machine that the BMCs can reach"
                .into(),
        )
    })?;
    let listen = settings.listen.value.parse().map_err(|_| {
        PrepareError::Target(format!(
            "line {}: `mediaServer.listen` `{}` is not an `address:port`",
            settings.listen.line, settings.listen.value
        ))
    })?;
    Ok(MediaServer::new(
        listen,
        settings.url.as_ref().map(|u| u.value.clone()),
    ))
}

/// The SSH target of a node as the inventory describes it (with `identity`
/// as its identity file when edgeforge generated the login key).
fn ssh_target(
    inv: &Inventory,
    view: &NodeView<'_>,
    identity: Option<PathBuf>,
) -> Result<SshTarget, PrepareError> {
    let mut settings = view.ssh.clone();
    settings.port = Some(view.ssh_port());
    if let Some(identity) = identity {
        settings.identity_file = Some(crate::inventory::Sp::new(identity));
    }
    settings_target(
        inv,
        view.node.name.as_str(),
        view.node.address.as_str(),
        &settings,
    )
}

fn settings_target(
    inv: &Inventory,
    name: &str,
    address: &str,
    settings: &crate::inventory::SshSettings,
) -> Result<SshTarget, PrepareError> {
    let jumps = |name: &str| {
        inv.jump_host(name)
            .map(|jh| (jh.address.value.clone(), inv.jump_host_ssh(jh)))
    };
    SshTarget::from_settings(address, settings, &jumps, &crate::state::root()).map_err(|source| {
        PrepareError::Ssh {
            node: name.to_owned(),
            source,
        }
    })
}

/// The SSH target of hypervisor `hv` when its URI reaches it over SSH
/// (`qemu+ssh://user@host:port/system`), else None.
///
/// A hypervisor that is itself a node (a `hypervisorHost` node with the
/// hypervisor's name, or with the URI's address and port) is reached exactly
/// as that node is: its identity and host key check, and for a lab VM the
/// login key and host key edgeforge generated, so only that key is accepted.
/// Any other host gets the inventory's default SSH settings. The URI's user,
/// port and `keyfile` parameter win over both.
pub fn hypervisor_ssh_target(
    inv: &Inventory,
    hv: &crate::inventory::Hypervisor,
) -> Result<Option<SshTarget>, PrepareError> {
    let uri = hv.uri.as_str();
    if !crate::virt::tunnel::is_ssh_uri(uri) {
        return Ok(None);
    }
    // `check` validated the URI; one that does not parse is libvirt's to report.
    let Ok(url) = url::Url::parse(uri) else {
        return Ok(None);
    };
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let node = inv.nodes().find(|v| {
        v.node.hypervisor_host
            && (v.node.name.as_str() == hv.name.as_str()
                || (v.node.address.as_str() == host
                    && url.port().is_none_or(|p| p == v.ssh_port())))
    });
    let mut target = match &node {
        Some(view) => {
            let name = view.node.name.as_str();
            let vms = match view.node.machine {
                Machine::Libvirt { .. } => lab_vms(inv, &std::iter::once(name).collect())?,
                _ => BTreeMap::new(),
            };
            match vms.get(name) {
                Some(vm) => {
                    let mut t = ssh_target(inv, view, Some(vm.keys.identity.clone()))?;
                    t.host_key = HostKeyCheck {
                        pinned: None,
                        known_hosts: vec![vm.keys.known_hosts.clone()],
                        accept_new: None,
                    };
                    t
                }
                None => ssh_target(inv, view, None)?,
            }
        }
        None => settings_target(inv, hv.name.as_str(), &host, &inv.defaults.ssh)?,
    };
    if !url.username().is_empty() {
        target.user = url.username().to_owned();
    }
    if let Some(port) = url.port() {
        target.port = port;
    }
    if let Some((_, key)) = url.query_pairs().find(|(k, _)| k == "keyfile") {
        target.identity_files.insert(0, PathBuf::from(key.as_ref()));
    }
    Ok(Some(target))
}

/// Where a cluster or federation API client comes from.
#[derive(Debug, Clone)]
struct KubeSource {
    kubeconfig: PathBuf,
    context: Option<String>,
    /// The inventory accepts a kubeconfig without TLS verification.
    allow_insecure: bool,
}

/// A hypervisor as the inventory describes it.
#[derive(Debug, Clone)]
struct HypervisorSpec {
    uri: String,
    /// How to reach it when its URI goes over SSH.
    ssh: Option<SshTarget>,
    pool: String,
    pool_path: String,
}

/// The production [`Connector`]: SSH targets, kubeconfigs, hypervisors and
/// BMCs (passwords read) resolved from the inventory before any target is touched.
pub struct InventoryConnector {
    ssh: BTreeMap<String, SshTarget>,
    bmcs: BTreeMap<String, BmcConfig>,
    kube: BTreeMap<Target, KubeSource>,
    hypervisors: BTreeMap<String, HypervisorSpec>,
    data: DataDir,
    image: BuildOptions,
}

impl InventoryConnector {
    fn new(
        inv: &Inventory,
        tasks: &[ExecTask],
        vms: &BTreeMap<String, Arc<VmTask>>,
        metal_keys: Option<&MetalKeys>,
        opts: &PrepareOptions<'_>,
    ) -> Result<InventoryConnector, PrepareError> {
        let hosts: std::collections::BTreeSet<&str> =
            tasks.iter().filter_map(|t| t.node.as_deref()).collect();
        let mut ssh = BTreeMap::new();
        for view in inv.nodes() {
            let name = view.node.name.as_str();
            if !hosts.contains(name) {
                continue;
            }
            let vm = vms.get(name);
            let metal = match (&view.node.machine, metal_keys) {
                (
                    Machine::Redfish {
                        install: Some(_), ..
                    },
                    Some(keys),
                ) => Some(keys),
                _ => None,
            };
            // The login key edgeforge generated and put into the VM or the
            // installed machine.
            let identity = vm
                .map(|vm| vm.keys.identity.clone())
                .or_else(|| metal.map(|k| k.identity.clone()));
            let mut target = ssh_target(inv, &view, identity)?;
            if let Some(keys) = metal {
                // edgeforge installed this machine with its own host key: only
                // that key is accepted.
                target.host_key = HostKeyCheck {
                    pinned: None,
                    known_hosts: vec![keys.known_hosts.clone()],
                    accept_new: None,
                };
            }
            if let Some(vm) = vm {
                // edgeforge generated this VM's host key: only that key is accepted.
                target.host_key = HostKeyCheck {
                    pinned: None,
                    known_hosts: vec![vm.keys.known_hosts.clone()],
                    accept_new: None,
                };
            }
            ssh.insert(name.to_string(), target);
        }
        let mut kube = BTreeMap::new();
        let mut bmcs = BTreeMap::new();
        for t in tasks {
            if let Target::Bmc(node) = &t.target
                && !bmcs.contains_key(node)
                && let Some(view) = inv.nodes().find(|v| v.node.name.as_str() == node)
                && let Some(cfg) = BmcConfig::from_machine(node, &view.node.machine)?
            {
                bmcs.insert(node.clone(), cfg);
            }
        }
        // Every site's cluster, not only those of `target: cluster` tasks:
        // host tasks reach it too (`Reach::site_cluster`), e.g. a node's k3s
        // task waiting for its Node once the first server wrote the kubeconfig.
        for s in &inv.sites {
            let allow_insecure = s.cluster.insecure_skip_tls_verify;
            let source = match s.cluster.kubeconfig.as_ref() {
                Some(k) => KubeSource {
                    kubeconfig: k.value.clone(),
                    context: s.cluster.context.clone(),
                    allow_insecure,
                },
                None => KubeSource {
                    kubeconfig: opts
                        .state_dir
                        .join("kubeconfig")
                        .join(format!("{}.yaml", s.name)),
                    context: None,
                    allow_insecure,
                },
            };
            kube.insert(Target::Cluster(s.name.to_string()), source);
        }
        if tasks.iter().any(|t| t.target == Target::Federation)
            && let Some(k) = &inv.federation.kubeconfig
        {
            kube.insert(
                Target::Federation,
                KubeSource {
                    kubeconfig: k.value.clone(),
                    context: inv.federation.context.clone(),
                    allow_insecure: inv.federation.insecure_skip_tls_verify,
                },
            );
        }
        // Only the hypervisors some task uses: resolving a remote one's SSH
        // target reads (and for a lab VM writes) key material.
        let used: std::collections::BTreeSet<&str> = tasks
            .iter()
            .filter_map(|t| match &t.target {
                Target::Hypervisor(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut hypervisors = BTreeMap::new();
        for h in inv
            .hypervisors
            .iter()
            .filter(|h| used.contains(h.name.as_str()))
        {
            let spec = HypervisorSpec {
                uri: h.uri.value.clone(),
                ssh: hypervisor_ssh_target(inv, h)?,
                pool: h
                    .pool
                    .clone()
                    .unwrap_or_else(|| crate::virt::DEFAULT_POOL.into()),
                pool_path: h
                    .pool_path
                    .as_ref()
                    .map_or(crate::virt::DEFAULT_POOL_PATH.into(), |p| {
                        p.display().to_string()
                    }),
            };
            hypervisors.insert(h.name.value.clone(), spec);
        }
        Ok(InventoryConnector {
            ssh,
            bmcs,
            kube,
            hypervisors,
            data: opts.data.clone(),
            image: opts.image.clone(),
        })
    }
}

impl Connector for InventoryConnector {
    fn host<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Transport>, ConnectError>> {
        Box::pin(async move {
            let target = self.ssh.get(node).ok_or_else(|| {
                ConnectError::NotConfigured(format!(
                    "no SSH settings were resolved for node {node}"
                ))
            })?;
            let t = SshTransport::connect(target).await?;
            Ok(Arc::new(t) as Arc<dyn Transport>)
        })
    }

    fn kube<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<KubeConn, ConnectError>> {
        Box::pin(async move {
            let source = self.kube.get(target).ok_or_else(|| {
                ConnectError::NotConfigured(match target {
                    Target::Federation => "the inventory's `federation` has no `kubeconfig`".into(),
                    other => format!("no kubeconfig is known for {other}"),
                })
            })?;
            crate::kube::connect_file_with(
                &source.kubeconfig,
                source.context.as_deref(),
                source.allow_insecure,
            )
            .await
            .map_err(|e| ConnectError::Kube {
                target: target.to_string(),
                kubeconfig: format!(
                    "{}{}",
                    source.kubeconfig.display(),
                    source
                        .context
                        .as_ref()
                        .map(|c| format!(" (context {c})"))
                        .unwrap_or_default()
                ),
                source: e,
            })
        })
    }

    fn bmc<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Arc<RedfishClient>, ConnectError>> {
        Box::pin(async move {
            let cfg = self.bmcs.get(node).ok_or_else(|| {
                ConnectError::NotConfigured(format!(
                    "node {node} has no `machine: {{type: redfish}}` BMC settings"
                ))
            })?;
            let client = RedfishClient::new(cfg)?;
            if let Err(e) = client.login().await {
                let _ = client.logout().await;
                return Err(e.into());
            }
            Ok(Arc::new(client))
        })
    }

    fn hypervisor<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Session>, ConnectError>> {
        Box::pin(async move {
            let spec = self.hypervisors.get(name).ok_or_else(|| {
                ConnectError::NotConfigured(format!("no hypervisor named {name} in the inventory"))
            })?;
            let hv = Hypervisor::connect_via(&spec.uri, spec.ssh.as_ref(), &self.data).await?;
            let mut image = self.image.clone();
            image.data = self.data.clone();
            Ok(Arc::new(Session::new(
                name,
                hv,
                &spec.pool,
                &spec.pool_path,
                image,
            )))
        })
    }
}
