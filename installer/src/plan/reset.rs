//! The reset plan: the order in which `edgeforge reset` takes k3s off a
//! site's nodes (or one node). Pure, like the plan.
//!
//! For a whole site on a federation host (`federation.type` other than
//! `none`) the site is first unjoined from the federation
//! ([`federation_unjoin`], the federation layer's hook). Then its agents are
//! reset (all at once), then its other servers one at a time in reverse file
//! order, and the first server last, so the cluster's API answers for as long
//! as a Node must be deleted through it and etcd loses one member at a time.
//! A single node (`--node`) is reset on its own.

use crate::inventory::{FederationKind, Inventory, Node, Role, Site};

/// What a reset task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetAction {
    /// Unjoin the site's cluster from the federation host (playbook `federation/unjoin`).
    FederationUnjoin,
    /// Delete the node's Node, then stop and uninstall k3s on it (playbook `k3s/reset`).
    ResetNode,
}

impl ResetAction {
    /// The playbook (relative to playbooks/, without extension).
    pub fn playbook(self) -> &'static str {
        match self {
            ResetAction::FederationUnjoin => "federation/unjoin",
            ResetAction::ResetNode => "k3s/reset",
        }
    }
}

/// One task of a reset.
#[derive(Debug, Clone)]
pub struct ResetTask<'a> {
    /// The site.
    pub site: &'a Site,
    /// The node, for node resets.
    pub node: Option<&'a Node>,
    /// What it does.
    pub action: ResetAction,
    /// Indices (in the reset plan) of the tasks that must succeed first.
    pub deps: Vec<usize>,
}

impl ResetTask<'_> {
    /// `<node>/reset`, or `site/<site>/unjoin`.
    pub fn key(&self) -> String {
        match (self.node, self.action) {
            (Some(n), _) => format!("{}/reset", n.name.as_str()),
            (None, _) => format!("site/{}/unjoin", self.site.name.as_str()),
        }
    }
}

/// Why a reset cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// `--site` names no site.
    #[error("there is no site `{0}` in the inventory; `edgeforge plan` lists the sites")]
    NoSite(String),
    /// `--node` names no node (of that site).
    #[error("there is no node `{node}`{}; `edgeforge plan` lists the nodes", site.as_ref().map(|s| format!(" in site `{s}`")).unwrap_or_default())]
    NoNode {
        /// The node asked for.
        node: String,
        /// The site it was looked for in.
        site: Option<String>,
    },
}

/// The reset of every site (or `site`), or of one `node`.
pub fn reset_plan<'a>(
    inv: &'a Inventory,
    site: Option<&str>,
    node: Option<&str>,
) -> Result<Vec<ResetTask<'a>>, ResetError> {
    let sites: Vec<&Site> = match site {
        Some(name) => vec![
            inv.sites
                .iter()
                .find(|s| s.name.as_str() == name)
                .ok_or_else(|| ResetError::NoSite(name.to_string()))?,
        ],
        None => inv.sites.iter().collect(),
    };
    let mut tasks = Vec::new();
    if let Some(name) = node {
        let (s, n) = sites
            .iter()
            .find_map(|s| {
                s.nodes
                    .iter()
                    .find(|n| n.name.as_str() == name)
                    .map(|n| (*s, n))
            })
            .ok_or_else(|| ResetError::NoNode {
                node: name.to_string(),
                site: site.map(str::to_string),
            })?;
        tasks.push(ResetTask {
            site: s,
            node: Some(n),
            action: ResetAction::ResetNode,
            deps: Vec::new(),
        });
        return Ok(tasks);
    }
    for s in sites {
        let start = tasks.len();
        tasks.extend(federation_unjoin(inv, s));
        let unjoin: Vec<usize> = (start..tasks.len()).collect();
        let first = Inventory::first_server(s);
        let agents: Vec<usize> = s
            .nodes
            .iter()
            .filter(|n| n.role == Role::Agent)
            .map(|n| {
                tasks.push(ResetTask {
                    site: s,
                    node: Some(n),
                    action: ResetAction::ResetNode,
                    deps: unjoin.clone(),
                });
                tasks.len() - 1
            })
            .collect();
        let mut before = if agents.is_empty() {
            unjoin.clone()
        } else {
            agents
        };
        let others = s
            .nodes
            .iter()
            .rev()
            .filter(|n| n.role == Role::Server && !first.is_some_and(|f| std::ptr::eq(f, *n)));
        for n in others.chain(first) {
            tasks.push(ResetTask {
                site: s,
                node: Some(n),
                action: ResetAction::ResetNode,
                deps: before,
            });
            before = vec![tasks.len() - 1];
        }
    }
    Ok(tasks)
}

/// Hook of the federation layer: the tasks that unjoin `site`'s cluster
/// from the federation host before its nodes are reset, for a federation
/// other than `none`. None yet: the federation layer adds them
/// ([`ResetAction::FederationUnjoin`]).
pub fn federation_unjoin<'a>(inv: &'a Inventory, _site: &'a Site) -> Vec<ResetTask<'a>> {
    match inv.federation.kind {
        FederationKind::None => Vec::new(),
        FederationKind::Karmada | FederationKind::Kubefed => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "apiVersion: edgeforge/v1
sites:
  - name: ha
    nodes:
      - { name: s1, role: server, address: 10.0.0.1 }
      - { name: a1, role: agent, address: 10.0.0.2 }
      - { name: s2, role: server, address: 10.0.0.3 }
      - { name: s3, role: server, address: 10.0.0.4 }
      - { name: a2, role: agent, address: 10.0.0.5 }
  - name: solo
    nodes:
      - { name: x1, role: server, address: 10.0.1.1 }
";

    fn plan(site: Option<&str>, node: Option<&str>) -> Vec<(String, Vec<String>)> {
        let inv = crate::inventory::load_str("t.yaml", INV).unwrap().inventory;
        let tasks = reset_plan(&inv, site, node).unwrap();
        tasks
            .iter()
            .map(|t| (t.key(), t.deps.iter().map(|d| tasks[*d].key()).collect()))
            .collect()
    }

    #[test]
    fn agents_first_then_servers_one_at_a_time_the_first_server_last() {
        let ha = plan(Some("ha"), None);
        let owned = |list: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
            list.iter()
                .map(|(k, d)| (k.to_string(), d.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        assert_eq!(
            ha,
            owned(&[
                ("a1/reset", &[]),
                ("a2/reset", &[]),
                ("s3/reset", &["a1/reset", "a2/reset"]),
                ("s2/reset", &["s3/reset"]),
                ("s1/reset", &["s2/reset"]),
            ])
        );
        assert_eq!(plan(None, None).len(), 6);
        assert_eq!(plan(None, Some("s2")), owned(&[("s2/reset", &[])]));
    }

    #[test]
    fn unknown_sites_and_nodes_are_named() {
        let inv = crate::inventory::load_str("t.yaml", INV).unwrap().inventory;
        let err = reset_plan(&inv, Some("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no site `nope`"), "{err}");
        let err = reset_plan(&inv, Some("solo"), Some("s1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no node `s1` in site `solo`"), "{err}");
    }
}
