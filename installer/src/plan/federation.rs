//! The federation layer's tasks: per site, a chain that alternates between
//! the site's cluster and the federation host as the join requires, each
//! task one playbook against one target, passing what the next one needs as
//! outputs (tokens and CA bundles as secret ones).
//!
//! | flavour | chain (task keys `site/<site>/<step>`) |
//! |---|---|
//! | Karmada push | `identify` (cluster) → `check` (host) → `credentials` (cluster) → `register` (host) |
//! | Karmada pull | `identify` (cluster) → `agent-access` (host) → `agent` (cluster) → `register` (host) |
//! | KubeFed | `identify` (cluster) → `check` (host) → `credentials` (cluster) → `register` (host) |
//!
//! The host is checked before anything is written on the member (the name
//! is free or holds this cluster's id), as `karmadactl join` does.
//! Unregistering ([`federation_unjoin`], also the first part of a reset) runs
//! in the order the upstream tools use: Karmada push and pull `unregister`
//! (host) → `cleanup` (cluster); KubeFed `cleanup` (cluster) → `unregister`
//! (host).

use std::fmt;

use super::{Action, Generated, Layer, Plan, PlanError, Selection, Task, TaskId};
use crate::inventory::{FederationKind, FederationMode, Inventory, Site};

/// How a site's cluster is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// Karmada, the host reaching the cluster (`karmadactl join`).
    KarmadaPush,
    /// Karmada, an agent on the site reaching the host (`karmadactl register`).
    KarmadaPull,
    /// KubeFed (`kubefedctl join`).
    Kubefed,
}

impl Flavour {
    /// The flavour of `site` in `inv`, or `None` without federation.
    pub fn of(inv: &Inventory, site: &Site) -> Option<Flavour> {
        match inv.federation.kind {
            FederationKind::None => None,
            FederationKind::Kubefed => Some(Flavour::Kubefed),
            FederationKind::Karmada => Some(match inv.federation_mode(site) {
                FederationMode::Push => Flavour::KarmadaPush,
                FederationMode::Pull => Flavour::KarmadaPull,
            }),
        }
    }

    fn host(self) -> &'static str {
        match self {
            Flavour::Kubefed => "kubefed",
            _ => "karmada",
        }
    }
}

/// One task of a site's join or unjoin chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FederationStep {
    /// Cluster: read its id (`kube-system` UID) and API endpoint.
    Identify,
    /// Host: the name is free or this cluster's, the id is not used elsewhere.
    Check,
    /// Cluster: the credentials the host uses (push, KubeFed).
    Credentials,
    /// Host (pull): the check, the agent's RBAC and a credential for it.
    AgentAccess,
    /// Cluster (pull): the karmada-agent and its kubeconfig.
    Agent,
    /// Host: the registration (push, KubeFed), or the agent's Cluster Ready (pull).
    Register,
    /// Host: the registration removed.
    Unregister,
    /// Cluster: what the join created removed.
    Cleanup,
}

impl FederationStep {
    /// The last part of the task key, `site/<site>/<this>`.
    pub fn key(self) -> &'static str {
        match self {
            FederationStep::Identify => "identify",
            FederationStep::Check => "check",
            FederationStep::Credentials => "credentials",
            FederationStep::AgentAccess => "agent-access",
            FederationStep::Agent => "agent",
            FederationStep::Register => "register",
            FederationStep::Unregister => "unregister",
            FederationStep::Cleanup => "cleanup",
        }
    }

    /// The playbook (below playbooks/, without extension).
    pub fn playbook(self, flavour: Flavour) -> &'static str {
        use FederationStep as S;
        use Flavour as F;
        match (flavour, self) {
            (_, S::Identify) => "federation/identify",
            (F::KarmadaPush, S::Check) | (F::KarmadaPull, S::Check) => "federation/karmada-check",
            (F::Kubefed, S::Check) => "federation/kubefed-check",
            (F::KarmadaPush, S::Credentials) => "federation/karmada-push-credentials",
            (F::Kubefed, S::Credentials) => "federation/kubefed-credentials",
            (_, S::AgentAccess) => "federation/karmada-pull-agent-access",
            (_, S::Agent) => "federation/karmada-pull-agent",
            (F::KarmadaPush, S::Register) => "federation/karmada-push-register",
            (F::KarmadaPull, S::Register) => "federation/karmada-pull-register",
            (F::Kubefed, S::Register) => "federation/kubefed-register",
            (F::KarmadaPush, S::Unregister) => "federation/karmada-push-unregister",
            (F::KarmadaPull, S::Unregister) => "federation/karmada-pull-unregister",
            (F::Kubefed, S::Unregister) => "federation/kubefed-unregister",
            (F::KarmadaPush, S::Cleanup) => "federation/karmada-push-cleanup",
            (F::KarmadaPull, S::Cleanup) => "federation/karmada-pull-cleanup",
            (F::Kubefed, S::Cleanup) => "federation/kubefed-cleanup",
            // Pull mode has no credentials step: the agent task creates its own.
            (F::KarmadaPull, S::Credentials) => "federation/karmada-pull-agent",
        }
    }

    /// A short kebab-case name of the action, for machine consumption.
    pub fn name(self) -> &'static str {
        match self {
            FederationStep::Identify => "identify-cluster",
            FederationStep::Check => "check-host",
            FederationStep::Credentials => "create-credentials",
            FederationStep::AgentAccess => "grant-agent-access",
            FederationStep::Agent => "deploy-agent",
            FederationStep::Register => "register",
            FederationStep::Unregister => "unregister",
            FederationStep::Cleanup => "clean-up-cluster",
        }
    }

    /// What the task does, for the plan's text.
    pub fn describe(
        self,
        flavour: Flavour,
        cluster: &str,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let host = flavour.host();
        match self {
            FederationStep::Identify => {
                write!(f, "read the id and API endpoint of cluster {cluster}")
            }
            FederationStep::Check => write!(
                f,
                "check the {host} host for cluster {cluster}'s name and id"
            ),
            FederationStep::Credentials => {
                write!(f, "create {host} credentials on cluster {cluster}")
            }
            FederationStep::AgentAccess => write!(
                f,
                "check the karmada host, grant cluster {cluster}'s agent access"
            ),
            FederationStep::Agent => write!(f, "deploy the karmada-agent on cluster {cluster}"),
            FederationStep::Register => match flavour {
                Flavour::KarmadaPull => write!(
                    f,
                    "register cluster {cluster} into karmada (pull: wait for its agent)"
                ),
                _ => write!(f, "register cluster {cluster} into {host}"),
            },
            FederationStep::Unregister => write!(f, "unregister cluster {cluster} from {host}"),
            FederationStep::Cleanup => {
                write!(f, "remove the {host} credentials from cluster {cluster}")
            }
        }
    }
}

/// The join chain of a site, in order.
fn join_steps(flavour: Flavour) -> [FederationStep; 4] {
    use FederationStep as S;
    match flavour {
        Flavour::KarmadaPull => [S::Identify, S::AgentAccess, S::Agent, S::Register],
        _ => [S::Identify, S::Check, S::Credentials, S::Register],
    }
}

/// The unjoin chain of a site, in order.
fn unjoin_steps(flavour: Flavour) -> [FederationStep; 2] {
    use FederationStep as S;
    match flavour {
        Flavour::Kubefed => [S::Cleanup, S::Unregister],
        _ => [S::Unregister, S::Cleanup],
    }
}

/// Appends the site's join chain after `ready` (its kubeconfig task).
pub(super) fn push_join<'a>(
    push: &mut dyn FnMut(Layer, Action<'a>, Vec<TaskId>) -> TaskId,
    inv: &'a Inventory,
    site: &'a Site,
    ready: TaskId,
) {
    let Some(flavour) = Flavour::of(inv, site) else {
        return;
    };
    let cluster = Inventory::cluster_name(site);
    let mut last = ready;
    for step in join_steps(flavour) {
        last = push(
            Layer::Federation,
            Action::Federate {
                cluster,
                flavour,
                step,
            },
            vec![last],
        );
    }
}

/// Appends the site's unjoin chain to `tasks`, after `after`; returns the
/// tasks the rest of a reset must wait for (its last task, or `after` when
/// the inventory has no federation). For `federation unjoin` and `reset`.
pub fn unjoin_chain<'a>(
    tasks: &mut Vec<Task<'a>>,
    inv: &'a Inventory,
    site: &'a Site,
    site_index: usize,
    after: Vec<TaskId>,
) -> Vec<TaskId> {
    let Some(flavour) = Flavour::of(inv, site) else {
        return after;
    };
    let cluster = Inventory::cluster_name(site);
    let mut deps = after;
    for step in unjoin_steps(flavour) {
        let id = TaskId(tasks.len() as u32);
        tasks.push(Task {
            id,
            site,
            site_index,
            node: None,
            node_index: None,
            layer: Layer::Federation,
            action: Action::Federate {
                cluster,
                flavour,
                step,
            },
            deps: std::mem::take(&mut deps),
            external_deps: Vec::new(),
            wave: 0,
        });
        deps = vec![id];
    }
    deps
}

/// The tasks that unregister the selected sites (`selection.limit`, e.g.
/// `site:S`) from the federation host in the upstream order, and remove
/// from their clusters what the join created: what `edgeforge federation
/// unjoin` runs, and what `edgeforge reset` runs first.
pub fn federation_unjoin<'a>(
    inventory: &'a Inventory,
    selection: &Selection,
) -> Result<Plan<'a>, PlanError> {
    let mut tasks = Vec::new();
    for (i, site) in inventory.sites.iter().enumerate() {
        unjoin_chain(&mut tasks, inventory, site, i, Vec::new());
    }
    let full = Generated { tasks };
    let order = super::topological_order(&full)?;
    let selection = Selection {
        limit: selection.limit.clone(),
        layers: Vec::new(),
    };
    super::select(full, &order, inventory, &selection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Limit, build};

    const INV: &str = "apiVersion: edgeforge/v1\n\
        federation: {type: karmada, kubeconfig: /tmp/k}\n\
        sites:\n\
        \x20 - {name: a, nodes: [{name: a1, role: server, address: 10.0.0.1}]}\n\
        \x20 - {name: b, federation: {mode: pull}, cluster: {name: bee}, nodes: [{name: b1, role: server, address: 10.0.0.2}]}\n";

    fn keys(plan: &Plan<'_>) -> Vec<String> {
        plan.tasks().iter().map(Task::key).collect()
    }

    fn deps(plan: &Plan<'_>, key: &str) -> Vec<String> {
        let t = plan.tasks().iter().find(|t| t.key() == key).expect(key);
        t.deps
            .iter()
            .map(|d| plan.tasks()[d.index()].key())
            .collect()
    }

    #[test]
    fn each_site_joins_through_a_chain_that_alternates_targets() {
        let inv = crate::inventory::load_str("t.yaml", INV).unwrap().inventory;
        let plan = build(
            &inv,
            &Selection {
                limit: None,
                layers: vec![Layer::Federation],
            },
        )
        .unwrap();
        assert_eq!(
            keys(&plan),
            [
                "site/a/identify",
                "site/a/check",
                "site/a/credentials",
                "site/a/register",
                "site/b/identify",
                "site/b/agent-access",
                "site/b/agent",
                "site/b/register",
            ]
        );
        assert_eq!(deps(&plan, "site/a/check"), ["site/a/identify"]);
        assert_eq!(deps(&plan, "site/a/register"), ["site/a/credentials"]);
        assert_eq!(deps(&plan, "site/b/register"), ["site/b/agent"]);
        let a = &plan.tasks()[0];
        assert_eq!(a.external_deps, ["site/a/kubeconfig"]);
        let playbooks: Vec<&str> = plan.tasks().iter().map(|t| t.action.playbook()).collect();
        assert_eq!(
            playbooks,
            [
                "federation/identify",
                "federation/karmada-check",
                "federation/karmada-push-credentials",
                "federation/karmada-push-register",
                "federation/identify",
                "federation/karmada-pull-agent-access",
                "federation/karmada-pull-agent",
                "federation/karmada-pull-register",
            ]
        );
        assert_eq!(
            plan.tasks()[7].action.to_string(),
            "register cluster bee into karmada (pull: wait for its agent)"
        );
    }

    #[test]
    fn unjoin_runs_in_the_upstream_order_for_the_chosen_sites() {
        let inv = crate::inventory::load_str("t.yaml", INV).unwrap().inventory;
        let all = federation_unjoin(&inv, &Selection::default()).unwrap();
        assert_eq!(
            keys(&all),
            [
                "site/a/unregister",
                "site/a/cleanup",
                "site/b/unregister",
                "site/b/cleanup",
            ]
        );
        assert_eq!(deps(&all, "site/b/cleanup"), ["site/b/unregister"]);
        let one = federation_unjoin(
            &inv,
            &Selection {
                limit: Some(Limit::parse("site:b").unwrap()),
                layers: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(keys(&one), ["site/b/unregister", "site/b/cleanup"]);
        assert_eq!(
            one.tasks()[0].action.playbook(),
            "federation/karmada-pull-unregister"
        );
        let kubefed = INV
            .replace("type: karmada", "type: kubefed")
            .replace("federation: {mode: pull}, ", "");
        let inv = crate::inventory::load_str("t.yaml", &kubefed)
            .unwrap()
            .inventory;
        let plan = federation_unjoin(&inv, &Selection::default()).unwrap();
        assert_eq!(
            keys(&plan)[..2],
            [
                "site/a/cleanup".to_string(),
                "site/a/unregister".to_string()
            ]
        );
        let none = INV
            .replace("type: karmada", "type: none")
            .replace("federation: {mode: pull}, ", "");
        let inv = crate::inventory::load_str("t.yaml", &none)
            .unwrap()
            .inventory;
        assert!(
            federation_unjoin(&inv, &Selection::default())
                .unwrap()
                .tasks()
                .is_empty()
        );
    }
}
