//! The reset plan: the order in which `edgeforge reset` takes k3s off a
//! site's nodes (or one node), as an ordinary [`Plan`] the executor walks
//! like any other. Pure, like the plan.
//!
//! For a whole site on a federation host (`federation.type` other than
//! `none`) the site is first unjoined from the federation (the federation
//! layer's [`unjoin_chain`], the same tasks as `edgeforge federation
//! unjoin`). Then its agents are reset (all at once), then its other
//! servers one at a time in reverse file order, and the first server last,
//! so the cluster's API answers for as long as a Node must be deleted
//! through it and etcd loses one member at a time. A single node (`--node`)
//! is reset on its own.

use super::federation::unjoin_chain;
use super::{Action, Generated, Layer, Plan, PlanError, Selection, Task, TaskId};
use crate::inventory::{Inventory, Node, Role, Site};

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
    /// The tasks do not form a plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// The reset of every site (or `site`), or of one `node`.
pub fn reset_plan<'a>(
    inv: &'a Inventory,
    site: Option<&str>,
    node: Option<&str>,
) -> Result<Plan<'a>, ResetError> {
    let sites: Vec<(usize, &Site)> = match site {
        Some(name) => vec![
            inv.sites
                .iter()
                .enumerate()
                .find(|(_, s)| s.name.as_str() == name)
                .ok_or_else(|| ResetError::NoSite(name.to_string()))?,
        ],
        None => inv.sites.iter().enumerate().collect(),
    };
    let mut tasks = Vec::new();
    if let Some(name) = node {
        let (i, s, n) = sites
            .iter()
            .find_map(|(i, s)| {
                s.nodes
                    .iter()
                    .find(|n| n.name.as_str() == name)
                    .map(|n| (*i, *s, n))
            })
            .ok_or_else(|| ResetError::NoNode {
                node: name.to_string(),
                site: site.map(str::to_string),
            })?;
        push_reset(&mut tasks, s, i, n, Vec::new());
    } else {
        for (i, s) in sites {
            let unjoined = unjoin_chain(&mut tasks, inv, s, i, Vec::new());
            let first = Inventory::first_server(s);
            let agents: Vec<TaskId> = s
                .nodes
                .iter()
                .filter(|n| n.role == Role::Agent)
                .map(|n| push_reset(&mut tasks, s, i, n, unjoined.clone()))
                .collect();
            let mut before = if agents.is_empty() { unjoined } else { agents };
            let others =
                s.nodes.iter().rev().filter(|n| {
                    n.role == Role::Server && !first.is_some_and(|f| std::ptr::eq(f, *n))
                });
            for n in others.chain(first) {
                before = vec![push_reset(&mut tasks, s, i, n, before)];
            }
        }
    }
    let full = Generated { tasks };
    let order = super::topological_order(&full)?;
    Ok(super::select(full, &order, inv, &Selection::default())?)
}

/// Appends the reset of `node` after `deps`; returns its id.
fn push_reset<'a>(
    tasks: &mut Vec<Task<'a>>,
    site: &'a Site,
    site_index: usize,
    node: &'a Node,
    deps: Vec<TaskId>,
) -> TaskId {
    let id = TaskId(tasks.len() as u32);
    tasks.push(Task {
        id,
        site,
        site_index,
        node: Some(node),
        node_index: site.nodes.iter().position(|n| std::ptr::eq(n, node)),
        layer: Layer::K3s,
        action: Action::ResetNode,
        deps,
        external_deps: Vec::new(),
        wave: 0,
    });
    id
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
        let plan = reset_plan(&inv, site, node).unwrap();
        plan.tasks()
            .iter()
            .map(|t| {
                let deps = t.deps.iter().map(|d| plan.tasks()[d.index()].key());
                (t.key(), deps.collect())
            })
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
