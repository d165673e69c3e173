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
//! those keys, so it never needs to trust a first sight.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::targets::{ConnectError, Connector, Target};
use super::{ExecTask, RunSpec, TaskGroup};
use crate::data::DataDir;
use crate::inventory::{Inventory, Machine, NodeView, Role};
use crate::kube::KubeConn;
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
    let connector = InventoryConnector::new(inv, &tasks, &vms, opts)?;
    Ok(Prepared {
        spec: RunSpec { tasks },
        connector: Arc::new(connector),
        notes,
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
    pool: String,
    pool_path: String,
}

/// The production [`Connector`]: SSH targets, kubeconfigs and hypervisors
/// resolved from the inventory before any target is touched.
pub struct InventoryConnector {
    ssh: BTreeMap<String, SshTarget>,
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
        opts: &PrepareOptions<'_>,
    ) -> Result<InventoryConnector, PrepareError> {
        let jumps = |name: &str| {
            inv.jump_host(name)
                .map(|jh| (jh.address.value.clone(), inv.jump_host_ssh(jh)))
        };
        let hosts: std::collections::BTreeSet<&str> =
            tasks.iter().filter_map(|t| t.node.as_deref()).collect();
        let state = crate::state::root();
        let mut ssh = BTreeMap::new();
        for view in inv.nodes() {
            let name = view.node.name.as_str();
            if !hosts.contains(name) {
                continue;
            }
            let mut settings = view.ssh.clone();
            settings.port = Some(view.ssh_port());
            let vm = vms.get(name);
            if let Some(vm) = vm {
                // The lab's login key, which edgeforge generated and put into the VM.
                settings.identity_file = Some(crate::inventory::Sp::new(vm.keys.identity.clone()));
            }
            let mut target =
                SshTarget::from_settings(view.node.address.as_str(), &settings, &jumps, &state)
                    .map_err(|source| PrepareError::Ssh {
                        node: name.to_string(),
                        source,
                    })?;
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
        let hypervisors = inv
            .hypervisors
            .iter()
            .map(|h| {
                (
                    h.name.value.clone(),
                    HypervisorSpec {
                        uri: h.uri.value.clone(),
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
                    },
                )
            })
            .collect();
        Ok(InventoryConnector {
            ssh,
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

    fn hypervisor<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Session>, ConnectError>> {
        Box::pin(async move {
            let spec = self.hypervisors.get(name).ok_or_else(|| {
                ConnectError::NotConfigured(format!("no hypervisor named {name} in the inventory"))
            })?;
            let hv = Hypervisor::connect(&spec.uri, &self.data).await?;
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
