//! Task targets: what each task runs against, and the run's connections to them.
//!
//! A [`Target`] names one: a host (a node over SSH), a site's cluster or the
//! federation host (Kubernetes API clients), a BMC, a hypervisor. The
//! [`Connector`] is the seam that opens them (the production one is built
//! from the inventory in [`super::prepare`]; unit tests pass local shells).
//! [`Targets`] opens each target lazily, when the first task that needs it
//! starts, and keeps it for the whole run: one SSH connection and one facts
//! round trip per host, one API client per cluster, one session per
//! hypervisor, one logged-in Redfish client per BMC. A host's connection is
//! closed when its last task ends, so a run over thousands of hosts holds
//! only the connections it is using; BMC sessions are logged out at the end
//! of the run ([`Targets::close_all`]), which the executor reaches on
//! success, failure and Ctrl-C alike.
//! [`HostLink`] is a host's connection as steps see it: a step that reboots
//! the host or waits out an sshd restart reconnects it, and later steps use
//! the new connection without knowing. Facts are not gathered again after a
//! reconnect: within one run a host keeps the facts of its first connection
//! (after a reboot step, `facts.boot_id` is the old boot's).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::bmc::{BmcError, RedfishClient};
use crate::facts::{self, Facts, FactsError};
use crate::kube::KubeConn;
use crate::playbook::TargetKind;
use crate::transport::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, Transport, TransportError,
};
use crate::virt::Session;

/// How long the end of a run waits for one BMC to close its session.
const BMC_LOGOUT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one task runs against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Target {
    /// A node over SSH.
    Host(String),
    /// A site's cluster (by site name).
    Cluster(String),
    /// The federation host.
    Federation,
    /// A node's BMC (by node name).
    Bmc(String),
    /// A libvirt hypervisor (by its inventory name).
    Hypervisor(String),
}

impl Target {
    /// The kind of target.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Host(_) => TargetKind::Host,
            Target::Cluster(_) => TargetKind::Cluster,
            Target::Federation => TargetKind::Federation,
            Target::Bmc(_) => TargetKind::Bmc,
            Target::Hypervisor(_) => TargetKind::Hypervisor,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host(n) => write!(f, "host:{n}"),
            Target::Cluster(s) => write!(f, "cluster:{s}"),
            Target::Federation => f.write_str("federation"),
            Target::Bmc(n) => write!(f, "bmc:{n}"),
            Target::Hypervisor(h) => write!(f, "hypervisor:{h}"),
        }
    }
}

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The SSH connection failed.
    #[error(transparent)]
    Host(#[from] TransportError),
    /// Facts could not be gathered.
    #[error(transparent)]
    Facts(#[from] FactsError),
    /// A Kubernetes API client could not be built.
    #[error("cannot reach the Kubernetes API of {target} through {kubeconfig}")]
    Kube {
        /// The target.
        target: String,
        /// The kubeconfig (path and context) used.
        kubeconfig: String,
        /// The cause.
        #[source]
        source: crate::kube::KubeError,
    },
    /// libvirt could not be reached.
    #[error(transparent)]
    Hypervisor(#[from] crate::virt::VirtError),
    /// The BMC could not be reached or refused the login.
    #[error(transparent)]
    Bmc(#[from] BmcError),
    /// The inventory does not say how to reach this target.
    #[error("{0}")]
    NotConfigured(String),
}

/// Opens targets; the production one reads the inventory, tests pass their own.
pub trait Connector: Send + Sync {
    /// Opens the SSH connection of `node`.
    fn host<'a>(&'a self, node: &'a str)
    -> BoxFuture<'a, Result<Arc<dyn Transport>, ConnectError>>;
    /// Builds the API client of a cluster or federation target.
    fn kube<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<KubeConn, ConnectError>>;
    /// Opens the session of hypervisor `name`.
    fn hypervisor<'a>(&'a self, name: &'a str)
    -> BoxFuture<'a, Result<Arc<Session>, ConnectError>>;
    /// Creates the Redfish client of `node`'s BMC and logs in (by default
    /// there is none: connectors of runs without bare metal need not say so).
    fn bmc<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Arc<RedfishClient>, ConnectError>> {
        Box::pin(async move {
            Err(ConnectError::NotConfigured(format!(
                "node {node}: no BMC can be reached in this run"
            )))
        })
    }
}

/// A host's connection as steps see it; [`HostLink::replace`] swaps in a new one.
pub struct HostLink {
    current: RwLock<Arc<dyn Transport>>,
}

impl HostLink {
    fn new(t: Arc<dyn Transport>) -> HostLink {
        HostLink {
            current: RwLock::new(t),
        }
    }

    fn get(&self) -> Arc<dyn Transport> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `t` the connection later requests use; the old one is closed.
    async fn replace(&self, t: Arc<dyn Transport>) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            t,
        );
        let _ = old.close().await;
    }
}

impl Transport for HostLink {
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        let t = self.get();
        Box::pin(async move { t.exec(req).await })
    }
    fn put<'a>(&'a self, req: PutRequest<'a>) -> BoxFuture<'a, Result<PutOutcome, TransportError>> {
        let t = self.get();
        Box::pin(async move { t.put(req).await })
    }
    fn get<'a>(
        &'a self,
        path: &'a str,
        privileged: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        let t = self.get();
        Box::pin(async move { t.get(path, privileged).await })
    }
    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        let t = self.get();
        Box::pin(async move { t.close().await })
    }
}

/// One host's connection and facts for the run.
struct HostSlot {
    link: OnceCell<Arc<HostLink>>,
    facts: OnceCell<Facts>,
    /// Tasks of the run that still need this host.
    users: AtomicUsize,
}

/// The run's connections, opened on first use.
pub struct Targets {
    connector: Arc<dyn Connector>,
    hosts: Mutex<HashMap<String, Arc<HostSlot>>>,
    kubes: Mutex<HashMap<Target, Arc<OnceCell<KubeConn>>>>,
    hypervisors: Mutex<HashMap<String, Arc<OnceCell<Arc<Session>>>>>,
    bmcs: Mutex<HashMap<String, Arc<OnceCell<Arc<RedfishClient>>>>>,
    /// Connections opened so far (for the summary, and tests).
    pub opened: AtomicUsize,
}

impl Targets {
    /// Connections through `connector`; `host_users` counts, per node, the
    /// tasks that will use its SSH connection (it closes after the last).
    pub fn new(connector: Arc<dyn Connector>, host_users: HashMap<String, usize>) -> Targets {
        let hosts = host_users
            .into_iter()
            .map(|(n, users)| {
                (
                    n,
                    Arc::new(HostSlot {
                        link: OnceCell::new(),
                        facts: OnceCell::new(),
                        users: AtomicUsize::new(users),
                    }),
                )
            })
            .collect();
        Targets {
            connector,
            hosts: Mutex::new(hosts),
            kubes: Mutex::new(HashMap::new()),
            hypervisors: Mutex::new(HashMap::new()),
            bmcs: Mutex::new(HashMap::new()),
            opened: AtomicUsize::new(0),
        }
    }

    fn slot(&self, node: &str) -> Arc<HostSlot> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_owned())
            .or_insert_with(|| {
                Arc::new(HostSlot {
                    link: OnceCell::new(),
                    facts: OnceCell::new(),
                    users: AtomicUsize::new(usize::MAX),
                })
            })
            .clone()
    }

    /// The SSH connection of `node`, opened on first use.
    pub async fn host(&self, node: &str) -> Result<Arc<HostLink>, ConnectError> {
        let slot = self.slot(node);
        slot.link
            .get_or_try_init(|| async {
                let t = self.connector.host(node).await?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ConnectError>(Arc::new(HostLink::new(t)))
            })
            .await
            .cloned()
    }

    /// The SSH connection and facts of `node` (facts gathered once).
    pub async fn host_with_facts(
        &self,
        node: &str,
    ) -> Result<(Arc<HostLink>, Facts), ConnectError> {
        let link = self.host(node).await?;
        let slot = self.slot(node);
        let facts = slot
            .facts
            .get_or_try_init(|| async { facts::gather(&*link).await })
            .await?
            .clone();
        Ok((link, facts))
    }

    /// Opens a new connection to `node` and makes it the one every later request uses.
    pub async fn reconnect_host(&self, node: &str) -> Result<(), ConnectError> {
        let slot = self.slot(node);
        let fresh = self.connector.host(node).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        match slot.link.get() {
            Some(link) => link.replace(fresh).await,
            None => {
                // Never connected: this one becomes the connection.
                let _ = slot.link.set(Arc::new(HostLink::new(fresh)));
            }
        }
        Ok(())
    }

    /// One task that used `node` ended; the last one closes its connection.
    pub async fn release_host(&self, node: &str) {
        let slot = self.slot(node);
        if slot.users.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(link) = slot.link.get()
        {
            let _ = link.close().await;
        }
    }

    /// The API client of a cluster or federation target.
    pub async fn kube(&self, target: &Target) -> Result<KubeConn, ConnectError> {
        let cell = self
            .kubes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.connector.kube(target))
            .await
            .cloned()
    }

    /// The session of hypervisor `name`.
    pub async fn hypervisor(&self, name: &str) -> Result<Arc<Session>, ConnectError> {
        let cell = self
            .hypervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.connector.hypervisor(name))
            .await
            .cloned()
    }

    /// The logged-in Redfish client of `node`'s BMC.
    pub async fn bmc(&self, node: &str) -> Result<Arc<RedfishClient>, ConnectError> {
        let cell = self
            .bmcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_owned())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let client = self.connector.bmc(node).await?;
            self.opened.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ConnectError>(client)
        })
        .await
        .cloned()
    }

    /// Closes every connection still open and logs out of every BMC (end of
    /// run). Logouts run at once, each bounded, so a BMC that stopped
    /// answering delays the end of the run by seconds, not minutes.
    pub async fn close_all(&self) {
        let bmcs: Vec<Arc<RedfishClient>> = self
            .bmcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect();
        futures_util::future::join_all(bmcs.iter().map(|c| async move {
            let _ = tokio::time::timeout(BMC_LOGOUT_LIMIT, c.logout()).await;
        }))
        .await;
        let slots: Vec<Arc<HostSlot>> = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            if let Some(link) = slot.link.get() {
                let _ = link.close().await;
            }
        }
    }
}
