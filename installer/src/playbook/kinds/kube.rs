//! Kubernetes kinds: Nodes through the API of the task's cluster, from a
//! `target: cluster` task (`env.kube()`) or from a node's host task (the
//! site's cluster through `env.cluster()`, opened once per run).
//!
//! `node_ready` waits for a Node to be Ready with labels, conditions and a
//! kubelet version; `nodes_ready` for every node of the task's cluster;
//! `node_cordon` takes one slot of the task's rolling group, then cordons;
//! `node_drain` evicts through the Eviction API; `node_uncordon` undoes
//! edgeforge's cordon only; `node_delete` removes a Node (before a reset);
//! `version_skew` refuses an upgrade that goes backwards, skips a minor
//! release, or puts an agent ahead of a server. They query the cluster
//! every time (none is journaled) and waits say what they saw last.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Content, Params, StepEnv, StepError, StepReport, TargetKind};
use crate::kube::KubeError;
use crate::kube::nodes::{self, NodeWant};

/// Where the Kubernetes kinds run: a host task reaches its site's cluster.
const KUBE_TARGETS: &[TargetKind] = &[TargetKind::Host, TargetKind::Cluster];

/// The label k3s puts on servers.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Parameters of `node_ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReadyParams {
    /// The Node's name.
    pub name: String,
    /// Labels it must carry (value `true` for k3s's role labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Conditions besides Ready that must have this status (`EtcdIsVoter: "True"`).
    #[serde(default)]
    pub conditions: BTreeMap<String, String>,
    /// The kubelet version it must report (empty: any).
    #[serde(default)]
    pub kubelet_version: Option<String>,
    /// Seconds to wait (default 600).
    #[serde(default = "default_ready_timeout")]
    pub timeout: u64,
}

/// Parameters of `nodes_ready`: every node of the task's cluster (`cluster.nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesReadyParams {
    /// Seconds to wait for all of them (default 600).
    #[serde(default = "default_ready_timeout")]
    pub timeout: u64,
}

/// Parameters of `node_cordon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCordonParams {
    /// The Node's name.
    pub name: String,
}

/// Parameters of `node_uncordon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeUncordonParams {
    /// The Node's name.
    pub name: String,
}

/// Parameters of `node_drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDrainParams {
    /// The Node's name.
    pub name: String,
    /// Seconds for evictions and for the pods to leave (default 300).
    #[serde(default = "default_drain_timeout")]
    pub timeout: u64,
}

/// Parameters of `node_delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDeleteParams {
    /// The Node's name.
    pub name: String,
    /// When the cluster cannot be reached at all (no kubeconfig, API down),
    /// warn and go on instead of failing (a reset of a broken cluster).
    #[serde(default)]
    pub skip_unreachable: bool,
}

/// Parameters of `version_skew`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSkewParams {
    /// The node.
    pub node: String,
    /// `server` or `agent`.
    pub role: String,
    /// The release it runs (empty: not installed, nothing to check).
    pub from: String,
    /// The release it goes to.
    pub to: String,
}

impl Params for NodeReadyParams {
    const KEY: &'static str = "node_ready";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if env.check {
            return Ok(StepReport::default());
        }
        let conn = env.cluster().await?;
        let want = NodeWant {
            labels: self.labels.clone(),
            conditions: self.conditions.clone(),
            kubelet_version: self.kubelet_version.clone().filter(|v| !v.is_empty()),
        };
        let progress = |m: &str| env.reach.progress(m);
        nodes::wait_node(
            &conn.client,
            &self.name,
            &want,
            Duration::from_secs(self.timeout),
            &progress,
        )
        .await
        .map_err(step_error)?;
        Ok(StepReport {
            stdout: format!("Node {} is ready", self.name),
            ..StepReport::default()
        })
    }
}

impl Params for NodesReadyParams {
    const KEY: &'static str = "nodes_ready";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let names: Vec<String> = env.ctx["cluster"]["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect();
        if env.check || names.is_empty() {
            return Ok(StepReport::default());
        }
        let conn = env.cluster().await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(self.timeout);
        let progress = |m: &str| env.reach.progress(m);
        for name in &names {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            nodes::wait_node(&conn.client, name, &NodeWant::default(), left, &progress)
                .await
                .map_err(step_error)?;
        }
        Ok(StepReport {
            stdout: format!("{} node(s) Ready: {}", names.len(), names.join(", ")),
            ..StepReport::default()
        })
    }
}

impl Params for NodeCordonParams {
    const KEY: &'static str = "node_cordon";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        // The node leaves service only with a slot of its rolling group.
        env.reach.rollout_slot().await?;
        if env.check {
            return Ok(StepReport {
                changed: true,
                ..StepReport::default()
            });
        }
        let conn = env.cluster().await?;
        let changed = nodes::cordon(&conn.client, &self.name)
            .await
            .map_err(step_error)?;
        Ok(StepReport {
            changed,
            ..StepReport::default()
        })
    }
}

impl Params for NodeDrainParams {
    const KEY: &'static str = "node_drain";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if env.check {
            return Ok(StepReport::default());
        }
        let conn = env.cluster().await?;
        let progress = |m: &str| env.reach.progress(m);
        let evicted = nodes::drain(
            &conn.client,
            &self.name,
            Duration::from_secs(self.timeout),
            &progress,
        )
        .await
        .map_err(step_error)?;
        Ok(StepReport {
            changed: evicted > 0,
            stdout: format!("{evicted} pod(s) evicted"),
            ..StepReport::default()
        })
    }
}

impl Params for NodeUncordonParams {
    const KEY: &'static str = "node_uncordon";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if env.check {
            return Ok(StepReport::default());
        }
        let conn = env.cluster().await?;
        let changed = nodes::uncordon(&conn.client, &self.name)
            .await
            .map_err(step_error)?;
        Ok(StepReport {
            changed,
            ..StepReport::default()
        })
    }
}

impl Params for NodeDeleteParams {
    const KEY: &'static str = "node_delete";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let unreachable = |why: String| StepReport {
            warning: Some(format!(
                "the Node {} was not deleted: the cluster cannot be reached ({why}); if the \
                 cluster still runs, delete it there (`kubectl delete node {}`)",
                self.name, self.name
            )),
            ..StepReport::default()
        };
        let conn = match env.cluster().await {
            Ok(c) => c,
            Err(e) if self.skip_unreachable => return Ok(unreachable(crate::error::chain(&e))),
            Err(e) => return Err(e),
        };
        if env.check {
            return Ok(StepReport::default());
        }
        match nodes::delete_node(&conn.client, &self.name).await {
            Ok(changed) => Ok(StepReport {
                changed,
                ..StepReport::default()
            }),
            // The API answered: a refusal is a failure. No answer at all: unreachable.
            Err(KubeError::Api(e))
                if self.skip_unreachable && !matches!(e, kube::Error::Api(_)) =>
            {
                Ok(unreachable(crate::error::chain(&e)))
            }
            Err(e) => Err(step_error(e)),
        }
    }
}

impl Params for VersionSkewParams {
    const KEY: &'static str = "version_skew";
    const TARGETS: &'static [TargetKind] = KUBE_TARGETS;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if self.from.is_empty() || self.from == self.to {
            return Ok(StepReport::default());
        }
        let agent = match self.role.as_str() {
            "agent" => true,
            "server" => false,
            other => {
                return Err(StepError::Invalid(format!(
                    "version_skew: role `{other}` is neither `server` nor `agent`"
                )));
            }
        };
        let servers: Vec<(String, String)> = if agent {
            let conn = env.cluster().await?;
            nodes::kubelet_versions(&conn.client, &format!("{CONTROL_PLANE_LABEL}=true"))
                .await
                .map_err(step_error)?
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        crate::kube::skew::check_upgrade(&self.node, agent, &self.from, &self.to, &servers)
            .map_err(|e| StepError::Invalid(e.to_string()))?;
        Ok(StepReport {
            stdout: format!("{}: {} → {} allowed", self.node, self.from, self.to),
            ..StepReport::default()
        })
    }
}

/// A failed API call or wait as a step error (a wait's timeout keeps its shape).
fn step_error(e: KubeError) -> StepError {
    match e {
        KubeError::Wait { what, after, last } => StepError::Timeout {
            what,
            after,
            last: Some(last),
        },
        other => StepError::Invalid(crate::error::chain(&other)),
    }
}

fn default_ready_timeout() -> u64 {
    600
}

fn default_drain_timeout() -> u64 {
    300
}
