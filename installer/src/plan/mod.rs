//! The plan: an inventory turned into a DAG of tasks with the cross-node
//! ordering a cluster needs. Pure: it reads the typed inventory and touches no
//! host; `edgeforge plan` prints it and the executor walks it.
//!
//! # Tasks
//!
//! Node layers run once per node, in this order: `machine` (wait for SSH on an
//! existing host, define and boot a VM on a libvirt hypervisor, or power on
//! and boot through Redfish), `os`, `virt` (only on `hypervisorHost: true`
//! nodes) and `k3s` (the site's first server initialises the cluster, other
//! servers and agents join it). Each site then has cluster-level tasks: in the
//! `k3s` layer `fetch-kubeconfig` (fetch it from the first server and wait for
//! every node to be Ready: "the cluster is ready"), and in the `federation`
//! layer `register` (join the cluster into Karmada or KubeFed; omitted when the
//! federation type is `none`).
//!
//! # Dependencies
//!
//! - a node's layers in order: machine → os → virt → k3s;
//! - the first server of a site (first `role: server` in file order) before
//!   the site's other servers, and every server before the site's agents;
//! - every node's k3s task before the site's `fetch-kubeconfig`, which comes
//!   before `register`;
//! - a VM's `machine` task after the `virt` task of its hypervisor when that
//!   hypervisor is itself a node: a `hypervisorHost` node whose name equals the
//!   hypervisor's name, or whose address is the host of the hypervisor's URI.
//!
//! # Order
//!
//! Task ids are dense indices in a topological order: the dependencies of a
//! task always have smaller ids. Among tasks whose dependencies are met the one
//! generated first goes first, and tasks are generated site by site, node by
//! node in file order, layer by layer; so the order is stable across runs, and
//! reordering unrelated sites does not change the order within a site.
//! [`Plan::waves`] groups tasks by depth; [`Scheduler`] answers "what is ready
//! now" for an executor that runs tasks as their dependencies finish.
//!
//! # Selection (`--limit`, `--layer`)
//!
//! [`Selection`] keeps a subset of tasks: a node's tasks when the node matches
//! the [`Limit`], a site's cluster tasks when at least one of its nodes does,
//! and only tasks of the chosen layers. A dependency on a task outside the
//! selection is kept as an *external* dependency, listed by key and assumed
//! already done; it does not hold back the selected tasks.
//!
//! # Steps
//!
//! Each task names the playbook that carries out its steps
//! ([`Action::playbook`], e.g. `k3s/server-join`). Because ids are dense, the
//! executor attaches step lists in a side table indexed by [`TaskId`], built
//! with [`Plan::attach`].

mod limit;
mod render;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use crate::inventory::{FederationKind, Inventory, Machine, Node, Role, Site};

pub use limit::{Limit, LimitError};
pub use render::{JSON_SCHEMA_VERSION, render_dot, render_json, render_text};

/// Builds the plan for `inventory`, keeping the tasks `selection` chooses.
pub fn build<'a>(inventory: &'a Inventory, selection: &Selection) -> Result<Plan<'a>, PlanError> {
    let full = generate(inventory)?;
    let order = topological_order(&full)?;
    select(full, &order, inventory, selection)
}

/// A layer of the stack, in the order a site is brought up.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The machine exists and answers SSH (VM defined, bare metal booted).
    Machine,
    /// Hostname, users, packages, sysctl, kernel modules, swap, time.
    Os,
    /// KVM/libvirt on hypervisor hosts.
    Virt,
    /// k3s installed, servers and agents joined, kubeconfig fetched.
    K3s,
    /// The cluster registered into the federation host.
    Federation,
}

impl Layer {
    /// Every layer, in bring-up order.
    pub const ALL: [Layer; 5] = [
        Layer::Machine,
        Layer::Os,
        Layer::Virt,
        Layer::K3s,
        Layer::Federation,
    ];

    /// The lowercase name used on the command line and in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Machine => "machine",
            Layer::Os => "os",
            Layer::Virt => "virt",
            Layer::K3s => "k3s",
            Layer::Federation => "federation",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// An existing machine: wait until it answers SSH.
    WaitForSsh,
    /// Define and boot a VM on the named libvirt hypervisor, then wait for SSH.
    DefineVm {
        /// Hypervisor name from the inventory's `hypervisors`.
        hypervisor: &'a str,
    },
    /// Power on and boot bare metal through a Redfish BMC, then wait for SSH.
    RedfishBoot {
        /// BMC base URL.
        endpoint: &'a str,
    },
    /// Apply the OS layer.
    ConfigureOs,
    /// Install and start KVM/libvirt on a hypervisor host.
    PrepareHypervisor,
    /// Install k3s and initialise the cluster on the site's first server.
    InitFirstServer,
    /// Install k3s and join the cluster as another server.
    JoinServer {
        /// The first server it joins through.
        first: &'a str,
    },
    /// Install k3s and join the cluster as an agent.
    JoinAgent {
        /// The first server it joins through.
        first: &'a str,
    },
    /// Fetch the kubeconfig from the first server and wait for every node Ready.
    FetchKubeconfig {
        /// The first server the kubeconfig comes from.
        first: &'a str,
        /// How many nodes must be Ready.
        nodes: usize,
    },
    /// Register the cluster into the federation host.
    Register {
        /// Cluster name on the federation host.
        cluster: &'a str,
        /// Karmada or KubeFed.
        federation: FederationKind,
    },
}

impl Action<'_> {
    /// A short kebab-case name, stable for machine consumption.
    pub fn name(&self) -> &'static str {
        match self {
            Action::WaitForSsh => "wait-for-ssh",
            Action::DefineVm { .. } => "define-vm",
            Action::RedfishBoot { .. } => "redfish-boot",
            Action::ConfigureOs => "configure-os",
            Action::PrepareHypervisor => "prepare-hypervisor",
            Action::InitFirstServer => "init-first-server",
            Action::JoinServer { .. } => "join-server",
            Action::JoinAgent { .. } => "join-agent",
            Action::FetchKubeconfig { .. } => "fetch-kubeconfig",
            Action::Register { .. } => "register",
        }
    }

    /// The playbook (relative to playbooks/, without extension) carrying the steps.
    pub fn playbook(&self) -> &'static str {
        match self {
            Action::WaitForSsh => "machine/existing",
            Action::DefineVm { .. } => "machine/libvirt",
            Action::RedfishBoot { .. } => "machine/redfish",
            Action::ConfigureOs => "os",
            Action::PrepareHypervisor => "virt",
            Action::InitFirstServer => "k3s/server-init",
            Action::JoinServer { .. } => "k3s/server-join",
            Action::JoinAgent { .. } => "k3s/agent-join",
            Action::FetchKubeconfig { .. } => "k3s/kubeconfig",
            Action::Register {
                federation: FederationKind::Kubefed,
                ..
            } => "federation/kubefed",
            Action::Register { .. } => "federation/karmada",
        }
    }
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WaitForSsh => f.write_str("wait for SSH"),
            Action::DefineVm { hypervisor } => {
                write!(f, "define+boot VM on {hypervisor}, wait for SSH")
            }
            Action::RedfishBoot { endpoint } => {
                write!(f, "power on+boot via Redfish {endpoint}, wait for SSH")
            }
            Action::ConfigureOs => f.write_str("configure OS"),
            Action::PrepareHypervisor => f.write_str("prepare KVM/libvirt hypervisor"),
            Action::InitFirstServer => f.write_str("install k3s, init cluster (first server)"),
            Action::JoinServer { first } => write!(f, "install k3s, join as server via {first}"),
            Action::JoinAgent { first } => write!(f, "install k3s, join as agent via {first}"),
            Action::FetchKubeconfig { first, nodes } => write!(
                f,
                "fetch kubeconfig from {first}, wait for {nodes} node(s) Ready"
            ),
            Action::Register {
                cluster,
                federation,
            } => {
                let host = match federation {
                    FederationKind::Kubefed => "kubefed",
                    _ => "karmada",
                };
                write!(f, "register cluster {cluster} into {host}")
            }
        }
    }
}

/// Index of a task in [`Plan::tasks`]; dependencies always have smaller ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u32);

impl TaskId {
    /// The id as a `usize`, for side tables indexed by task.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One unit of work: a layer on a node, or a cluster-level step of a site.
#[derive(Debug, Clone)]
pub struct Task<'a> {
    /// This task's position in the topological order.
    pub id: TaskId,
    /// The site the task belongs to.
    pub site: &'a Site,
    /// Index of the site in the inventory (file order).
    pub site_index: usize,
    /// The node, for node tasks; `None` for cluster-level tasks.
    pub node: Option<&'a Node>,
    /// Index of the node within its site, for node tasks.
    pub node_index: Option<usize>,
    /// The layer.
    pub layer: Layer,
    /// What the task does.
    pub action: Action<'a>,
    /// Tasks of this plan that must finish first (ascending ids).
    pub deps: Vec<TaskId>,
    /// Keys of dependencies outside the selection, assumed already done.
    pub external_deps: Vec<String>,
    /// Depth in the DAG: 0 for tasks with no dependency in the plan.
    pub wave: u32,
}

impl Task<'_> {
    /// A stable, unique name: `<node>/<layer>` or `site/<site>/<action>`.
    pub fn key(&self) -> String {
        task_key(self.site, self.node, self.layer, &self.action)
    }
}

/// The ordered DAG of tasks for (a selection of) an inventory.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The inventory the plan was built from.
    pub inventory: &'a Inventory,
    /// The selection the plan was built with.
    pub selection: Selection,
    tasks: Vec<Task<'a>>,
    waves: u32,
}

impl<'a> Plan<'a> {
    /// Every task, in topological order (`tasks()[i].id == TaskId(i)`).
    pub fn tasks(&self) -> &[Task<'a>] {
        &self.tasks
    }

    /// The task with this id, if the id belongs to this plan.
    pub fn task(&self, id: TaskId) -> Option<&Task<'a>> {
        self.tasks.get(id.index())
    }

    /// Tasks grouped by depth: every task of wave n depends only on earlier waves.
    pub fn waves(&self) -> Vec<Vec<TaskId>> {
        let mut waves = vec![Vec::new(); self.waves as usize];
        for t in &self.tasks {
            if let Some(w) = waves.get_mut(t.wave as usize) {
                w.push(t.id);
            }
        }
        waves
    }

    /// A tracker of which tasks are ready as others finish.
    pub fn scheduler(&self) -> Scheduler {
        let mut dependents = vec![Vec::new(); self.tasks.len()];
        let mut pending = Vec::with_capacity(self.tasks.len());
        for t in &self.tasks {
            pending.push(u32::try_from(t.deps.len()).unwrap_or(u32::MAX));
            for d in &t.deps {
                if let Some(list) = dependents.get_mut(d.index()) {
                    list.push(t.id);
                }
            }
        }
        Scheduler {
            dependents,
            pending,
        }
    }

    /// Builds a side table (e.g. the steps of each task) indexed by [`TaskId`].
    pub fn attach<S, E>(&self, mut f: impl FnMut(&Task<'a>) -> Result<S, E>) -> Result<Vec<S>, E> {
        self.tasks.iter().map(&mut f).collect()
    }

    /// How many distinct nodes have at least one task in the plan.
    pub fn node_count(&self) -> usize {
        self.tasks
            .iter()
            .filter_map(|t| t.node_index.map(|n| (t.site_index, n)))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// How many distinct sites have at least one task in the plan.
    pub fn site_count(&self) -> usize {
        let mut seen: Vec<usize> = self.tasks.iter().map(|t| t.site_index).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// How many waves the plan has.
    pub fn wave_count(&self) -> u32 {
        self.waves
    }
}

/// Answers "what can run now" while an executor completes tasks.
#[derive(Debug, Clone)]
pub struct Scheduler {
    dependents: Vec<Vec<TaskId>>,
    pending: Vec<u32>,
}

impl Scheduler {
    /// Tasks with no dependency in the plan: ready at the start.
    pub fn initial(&self) -> Vec<TaskId> {
        (0..self.pending.len())
            .filter(|&i| self.pending.get(i) == Some(&0))
            .map(|i| TaskId(i as u32))
            .collect()
    }

    /// Marks `id` done and returns the tasks that became ready, in id order.
    pub fn complete(&mut self, id: TaskId) -> Vec<TaskId> {
        let mut ready = Vec::new();
        let Some(dependents) = self.dependents.get(id.index()) else {
            return ready;
        };
        for d in dependents {
            if let Some(p) = self.pending.get_mut(d.index()) {
                *p = p.saturating_sub(1);
                if *p == 0 {
                    ready.push(*d);
                }
            }
        }
        ready
    }
}

/// Which tasks to keep: nodes matching a limit, and some layers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only nodes (and sites) matching this; `None` keeps every node.
    pub limit: Option<Limit>,
    /// Only these layers; empty keeps every layer.
    pub layers: Vec<Layer>,
}

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Two nodes share a name, so their tasks cannot be told apart.
    #[error(
        "node name `{name}` is used twice (line {first_line} and line {second_line}); give each node a unique name"
    )]
    DuplicateNode {
        /// The repeated name.
        name: String,
        /// Line of the first node.
        first_line: u32,
        /// Line of the second node.
        second_line: u32,
    },
    /// A site has no server, so there is no cluster to join.
    #[error("site `{site}` (line {line}) has no node with `role: server`; make one node a server")]
    NoServer {
        /// The site.
        site: String,
        /// Line of the site name.
        line: u32,
    },
    /// VMs and hypervisor hosts depend on each other in a circle.
    #[error(
        "the plan has a dependency cycle involving {tasks}; a VM cannot run on a hypervisor that itself depends on that VM"
    )]
    Cycle {
        /// Keys of (some of) the tasks on the cycle.
        tasks: String,
    },
    /// `--limit` selected no node.
    #[error(
        "--limit `{pattern}` matches no node, site or task; check the names (`edgeforge plan` without --limit lists them)"
    )]
    LimitMatchesNothing {
        /// The limit as given.
        pattern: String,
    },
}

/// The full, unselected graph in generation order.
struct Generated<'a> {
    tasks: Vec<Task<'a>>,
}

fn task_key(site: &Site, node: Option<&Node>, layer: Layer, action: &Action<'_>) -> String {
    match node {
        Some(n) => format!("{}/{}", n.name.as_str(), layer),
        None => {
            let what = match action {
                Action::Register { .. } => "register",
                _ => "kubeconfig",
            };
            format!("site/{}/{}", site.name.as_str(), what)
        }
    }
}

/// Generates every task with its dependencies, in file order then layer order.
fn generate<'a>(inv: &'a Inventory) -> Result<Generated<'a>, PlanError> {
    let node_total: usize = inv.sites.iter().map(|s| s.nodes.len()).sum();
    let mut by_name: HashMap<&str, &Node> = HashMap::with_capacity(node_total);
    let mut by_address: HashMap<&str, &str> = HashMap::new();
    for site in &inv.sites {
        for node in &site.nodes {
            if let Some(prev) = by_name.insert(node.name.as_str(), node) {
                return Err(PlanError::DuplicateNode {
                    name: node.name.value.clone(),
                    first_line: prev.name.line,
                    second_line: node.name.line,
                });
            }
            if node.hypervisor_host {
                by_address
                    .entry(node.address.as_str())
                    .or_insert(node.name.as_str());
            }
        }
    }
    // Hypervisor name -> the node that is that hypervisor, if any.
    let mut hypervisor_node: HashMap<&str, &str> = HashMap::new();
    for h in &inv.hypervisors {
        let by_own_name = by_name
            .get(h.name.as_str())
            .filter(|n| n.hypervisor_host)
            .map(|n| n.name.as_str());
        let by_uri =
            uri_host(h.uri.as_str()).and_then(|host| by_address.get(host.as_str()).copied());
        if let Some(node) = by_own_name.or(by_uri) {
            hypervisor_node.insert(h.name.as_str(), node);
        }
    }

    let mut tasks: Vec<Task<'a>> = Vec::with_capacity(node_total * 4 + inv.sites.len() * 2);
    // Node name -> id of its virt task, filled as generated; VM edges resolved after.
    let mut virt_task: HashMap<&str, TaskId> = HashMap::new();
    let mut vm_edges: Vec<(TaskId, &str)> = Vec::new();
    let federated = inv.federation.kind != FederationKind::None;

    for (site_index, site) in inv.sites.iter().enumerate() {
        let first = site
            .nodes
            .iter()
            .find(|n| n.role == Role::Server)
            .ok_or_else(|| PlanError::NoServer {
                site: site.name.value.clone(),
                line: site.name.line,
            })?;
        let first_name = first.name.as_str();
        let mut first_k3s = None;
        let mut server_k3s = Vec::new();
        let mut agent_k3s = Vec::new();
        for (node_index, node) in site.nodes.iter().enumerate() {
            let machine = match &node.machine {
                Machine::Existing => Action::WaitForSsh,
                Machine::Libvirt { hypervisor, .. } => Action::DefineVm {
                    hypervisor: hypervisor.as_str(),
                },
                Machine::Redfish { endpoint, .. } => Action::RedfishBoot {
                    endpoint: endpoint.as_str(),
                },
            };
            let mut push = |layer: Layer, action: Action<'a>, deps: Vec<TaskId>| -> TaskId {
                let id = TaskId(tasks.len() as u32);
                tasks.push(Task {
                    id,
                    site,
                    site_index,
                    node: Some(node),
                    node_index: Some(node_index),
                    layer,
                    action,
                    deps,
                    external_deps: Vec::new(),
                    wave: 0,
                });
                id
            };
            let m = push(Layer::Machine, machine, Vec::new());
            if let Machine::Libvirt { hypervisor, .. } = &node.machine
                && let Some(host) = hypervisor_node.get(hypervisor.as_str())
            {
                vm_edges.push((m, host));
            }
            let mut last = push(Layer::Os, Action::ConfigureOs, vec![m]);
            if node.hypervisor_host {
                last = push(Layer::Virt, Action::PrepareHypervisor, vec![last]);
                virt_task.insert(node.name.as_str(), last);
            }
            let k3s_action = if std::ptr::eq(node, first) {
                Action::InitFirstServer
            } else if node.role == Role::Server {
                Action::JoinServer { first: first_name }
            } else {
                Action::JoinAgent { first: first_name }
            };
            let k = push(Layer::K3s, k3s_action, vec![last]);
            match k3s_action {
                Action::InitFirstServer => first_k3s = Some(k),
                Action::JoinServer { .. } => server_k3s.push(k),
                _ => agent_k3s.push(k),
            }
        }
        // Cross-node order inside the site.
        if let Some(f) = first_k3s {
            for &s in &server_k3s {
                if let Some(t) = tasks.get_mut(s.index()) {
                    t.deps.push(f);
                }
            }
            let servers: Vec<TaskId> = std::iter::once(f)
                .chain(server_k3s.iter().copied())
                .collect();
            for &a in &agent_k3s {
                if let Some(t) = tasks.get_mut(a.index()) {
                    t.deps.extend_from_slice(&servers);
                }
            }
        }
        let all_k3s: Vec<TaskId> = first_k3s
            .into_iter()
            .chain(server_k3s)
            .chain(agent_k3s)
            .collect();
        let mut push_cluster = |layer: Layer, action: Action<'a>, deps: Vec<TaskId>| -> TaskId {
            let id = TaskId(tasks.len() as u32);
            tasks.push(Task {
                id,
                site,
                site_index,
                node: None,
                node_index: None,
                layer,
                action,
                deps,
                external_deps: Vec::new(),
                wave: 0,
            });
            id
        };
        let ready = push_cluster(
            Layer::K3s,
            Action::FetchKubeconfig {
                first: first_name,
                nodes: site.nodes.len(),
            },
            all_k3s,
        );
        if federated {
            push_cluster(
                Layer::Federation,
                Action::Register {
                    cluster: Inventory::cluster_name(site),
                    federation: inv.federation.kind,
                },
                vec![ready],
            );
        }
    }
    for (vm_machine, host) in vm_edges {
        if let Some(&v) = virt_task.get(host)
            && let Some(t) = tasks.get_mut(vm_machine.index())
        {
            t.deps.push(v);
        }
    }
    Ok(Generated { tasks })
}

/// The host part of a libvirt URI (`qemu+ssh://user@host:22/system` → `host`).
fn uri_host(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    let host = parsed.host_str()?;
    if host.is_empty() {
        return None;
    }
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// Kahn's algorithm, always taking the ready task generated first.
fn topological_order(g: &Generated<'_>) -> Result<Vec<TaskId>, PlanError> {
    let n = g.tasks.len();
    let mut pending: Vec<usize> = g.tasks.iter().map(|t| t.deps.len()).collect();
    let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); n];
    for t in &g.tasks {
        for d in &t.deps {
            if let Some(list) = dependents.get_mut(d.index()) {
                list.push(t.id.0);
            }
        }
    }
    let mut heap: BinaryHeap<Reverse<u32>> = pending
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == 0)
        .map(|(i, _)| Reverse(i as u32))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = heap.pop() {
        order.push(TaskId(i));
        for &d in dependents.get(i as usize).map_or(&[][..], |v| v.as_slice()) {
            if let Some(p) = pending.get_mut(d as usize) {
                *p -= 1;
                if *p == 0 {
                    heap.push(Reverse(d));
                }
            }
        }
    }
    if order.len() < n {
        let stuck: Vec<String> = g
            .tasks
            .iter()
            .filter(|t| pending.get(t.id.index()).is_some_and(|p| *p > 0))
            .filter(|t| t.layer == Layer::Machine || t.layer == Layer::Virt)
            .take(8)
            .map(|t| t.key())
            .collect();
        return Err(PlanError::Cycle {
            tasks: stuck.join(", "),
        });
    }
    Ok(order)
}

/// Keeps the selected tasks, renumbered in topological order, with waves.
fn select<'a>(
    full: Generated<'a>,
    order: &[TaskId],
    inv: &'a Inventory,
    selection: &Selection,
) -> Result<Plan<'a>, PlanError> {
    let keep_layer = |l: Layer| selection.layers.is_empty() || selection.layers.contains(&l);
    let limited = |t: &Task<'_>| {
        selection
            .limit
            .as_ref()
            .is_none_or(|limit| limit.matches_task(t.site, t.node, &t.key()))
    };
    if let Some(limit) = &selection.limit
        && !full.tasks.iter().any(limited)
    {
        return Err(PlanError::LimitMatchesNothing {
            pattern: limit.as_str().to_string(),
        });
    }
    let keep = |t: &Task<'_>| -> bool { keep_layer(t.layer) && limited(t) };
    let mut new_id: Vec<Option<TaskId>> = vec![None; full.tasks.len()];
    let mut next = 0u32;
    for old in order {
        if let Some(t) = full.tasks.get(old.index())
            && keep(t)
        {
            new_id[old.index()] = Some(TaskId(next));
            next += 1;
        }
    }
    let mut slots: Vec<Option<Task<'a>>> = (0..next).map(|_| None).collect();
    for t in &full.tasks {
        let Some(id) = new_id.get(t.id.index()).copied().flatten() else {
            continue;
        };
        let mut deps = Vec::with_capacity(t.deps.len());
        let mut external_deps = Vec::new();
        for d in &t.deps {
            match new_id.get(d.index()).copied().flatten() {
                Some(nd) => deps.push(nd),
                None => {
                    if let Some(dt) = full.tasks.get(d.index()) {
                        external_deps.push(dt.key());
                    }
                }
            }
        }
        deps.sort_unstable();
        external_deps.sort_unstable();
        if let Some(slot) = slots.get_mut(id.index()) {
            *slot = Some(Task {
                id,
                deps,
                external_deps,
                ..t.clone()
            });
        }
    }
    let mut tasks: Vec<Task<'a>> = slots.into_iter().flatten().collect();
    let mut waves = 0u32;
    for i in 0..tasks.len() {
        let wave = tasks[i]
            .deps
            .iter()
            .filter_map(|d| tasks.get(d.index()).map(|t| t.wave + 1))
            .max()
            .unwrap_or(0);
        tasks[i].wave = wave;
        waves = waves.max(wave + 1);
    }
    Ok(Plan {
        inventory: inv,
        selection: selection.clone(),
        tasks,
        waves,
    })
}

#[cfg(test)]
mod tests;
