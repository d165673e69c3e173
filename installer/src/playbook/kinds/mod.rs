//! Step kinds: the code behind each playbook step, one module per family.
//!
//! Every kind is a parameter struct implementing [`Params`]: its YAML key,
//! the [`TargetKind`]s it can run against, the content it loads on the
//! controller and what it does on its target. The executor only ever sees
//! `dyn` [`Kind`], which every `Params` type gets for free, so adding a kind
//! is one new struct in a family module plus one line in [`kinds!`]'s list.
//!
//! Every kind is idempotent: it detects the current state, changes only what
//! differs, and in check mode reports what would change without changing it.
//! A step runs in two phases: [`Kind::render`] renders its parameters and
//! [`Kind::content`] loads its content (together, what the journal hashes);
//! then [`Prepared::apply`] does the work on the target.
//!
//! Families: [`place`] (template, copy), [`artifact`], [`system`] (the
//! shell-backed kinds: command, probe, script, file, lineinfile, package,
//! service, sysctl, kernel_module, user, hostname), [`wait`] (wait_for,
//! reboot, wait_cloud_init), [`output`] (secret), [`flow`]
//! (flush_handlers), [`kube`] (Nodes through the Kubernetes API: wait,
//! cordon, drain, uncordon, delete, the upgrade's version skew), [`k3s`]
//! (the kubeconfig fetched from a server, registry TLS files), [`vm`] (the
//! libvirt machine layer), [`bmc`] (the bare-metal machine layer: power,
//! media, boot, install), [`federation`] (joins into Karmada or KubeFed, one
//! kind per task of the chain).

pub mod artifact;
pub mod bmc;
pub mod federation;
pub mod flow;
pub mod k3s;
pub mod kube;
pub mod output;
pub mod place;
pub mod system;
pub mod vm;
pub mod wait;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::{self, DeserializeOwned, MapAccess};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::shell;
use crate::data::{DataDir, DataError};
use crate::facts::Facts;
use crate::render::{RenderError, Renderer};
use crate::transport::{ExecOutput, ExecRequest, Transport, TransportError};

/// What a step talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A node over SSH: transport and facts.
    Host,
    /// A site's cluster: a Kubernetes API client from its kubeconfig.
    Cluster,
    /// The federation host: a Kubernetes API client from the inventory's kubeconfig.
    Federation,
    /// A node's BMC (Redfish).
    Bmc,
    /// A libvirt hypervisor.
    Hypervisor,
}

impl TargetKind {
    /// Every kind, for kinds that run anywhere (they use no target).
    pub const ALL: &'static [TargetKind] = &[
        TargetKind::Host,
        TargetKind::Cluster,
        TargetKind::Federation,
        TargetKind::Bmc,
        TargetKind::Hypervisor,
    ];

    /// The lowercase name, as in playbooks' `target:`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Host => "host",
            TargetKind::Cluster => "cluster",
            TargetKind::Federation => "federation",
            TargetKind::Bmc => "bmc",
            TargetKind::Hypervisor => "hypervisor",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The connected target a step runs against.
#[derive(Clone, Copy)]
pub enum Conn<'a> {
    /// A host: its transport and facts.
    Host {
        /// The host's one connection of the run.
        transport: &'a dyn Transport,
        /// Its facts, gathered once per run.
        facts: &'a Facts,
    },
    /// A Kubernetes API: a site's cluster or the federation host.
    Kube(&'a crate::kube::KubeConn),
    /// A libvirt hypervisor.
    Hypervisor(&'a crate::virt::Session),
    /// A node's BMC, logged in (Redfish).
    Bmc(&'a crate::bmc::RedfishClient),
}

/// What a step can reach beyond its own target; the executor implements it.
pub trait Reach: Send + Sync {
    /// The SSH connection of the node the task is about (opened on first
    /// use, one for the whole run), e.g. for a VM task to wait for
    /// cloud-init inside the VM it just booted.
    fn node_host(&self) -> BoxFuture<'_, Result<Arc<dyn Transport>, StepError>>;

    /// Drops the node's SSH connection and opens a new one, which later steps
    /// use too (after a reboot, or when sshd restarted under it).
    fn reconnect_host(&self) -> BoxFuture<'_, Result<(), StepError>>;

    /// The Kubernetes API of the task's site cluster (opened on first use, one
    /// for the run), e.g. for a node's task to wait until its Node is Ready,
    /// or to cordon and drain it before an upgrade.
    fn site_cluster(&self) -> BoxFuture<'_, Result<crate::kube::KubeConn, StepError>>;

    /// Takes one slot of the task's rolling group before the step takes its
    /// node out of service (cordon): waits for a free slot, and fails when the
    /// rollout stopped at an earlier failure. Held until the task ends; a task
    /// in no group always gets one at once.
    fn rollout_slot(&self) -> BoxFuture<'_, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }

    /// What a step of this subject remembered under `key` on an earlier run
    /// (kept in the subject's journal; `None` with `--force`, in check mode
    /// nothing new is kept).
    fn recall(&self, key: &str) -> Option<String>;

    /// Remembers `value` under `key` for later runs.
    fn remember(&self, key: &str, value: &str);

    /// Reports progress inside a long step (shown in its progress row and, with
    /// `-v`, as a line).
    fn progress(&self, message: &str);
}

/// Data a task carries beyond its template context, from the plan.
#[derive(Debug, Clone, Default)]
pub enum TaskData {
    /// Nothing: the context and parameters say it all.
    #[default]
    None,
    /// A VM the machine layer defines and boots.
    Vm(Arc<vm::VmTask>),
    /// A site's registration on the federation host.
    Federation(Arc<crate::federation::SiteSpec>),
    /// A bare-metal machine the machine layer powers on (and installs).
    Metal(Arc<crate::metal::MetalTask>),
}

/// What a step needs to run.
pub struct StepEnv<'a> {
    /// The task's target, connected.
    pub conn: Conn<'a>,
    /// Other targets the step may need.
    pub reach: &'a dyn Reach,
    /// Per-task data from the plan.
    pub task_data: &'a TaskData,
    /// The task's key (`<node>/<layer>`, `site/<site>/<action>`).
    pub task: &'a str,
    /// The tera environment.
    pub renderer: &'a Renderer,
    /// Where data files come from.
    pub data: &'a DataDir,
    /// The template context (inventory, facts, vars, secrets, outputs).
    pub ctx: &'a Value,
    /// Report what would change, change nothing.
    pub check: bool,
    /// Produce unified diffs of changed files.
    pub diff: bool,
    /// Rebuild machines whose spec drifted.
    pub recreate: bool,
    /// Replace a registration on the federation host that holds another cluster's id.
    pub reregister: bool,
    /// The inventory's state directory (kubeconfigs go to `kubeconfig/<site>.yaml`);
    /// `None` in check mode and when the run keeps no state.
    pub state_dir: Option<&'a std::path::Path>,
    /// Run as root.
    pub privileged: bool,
    /// Names the step in errors: `playbooks/os.yaml step 'hostname'`.
    pub origin: String,
}

impl<'a> StepEnv<'a> {
    /// The host transport, for kinds that run on hosts.
    pub fn transport(&self) -> Result<&'a dyn Transport, StepError> {
        match self.conn {
            Conn::Host { transport, .. } => Ok(transport),
            _ => Err(self.wrong_target(TargetKind::Host)),
        }
    }

    /// The host's facts.
    pub fn facts(&self) -> Result<&'a Facts, StepError> {
        match self.conn {
            Conn::Host { facts, .. } => Ok(facts),
            _ => Err(self.wrong_target(TargetKind::Host)),
        }
    }

    /// The Kubernetes API of a cluster or federation target.
    pub fn kube(&self) -> Result<&'a crate::kube::KubeConn, StepError> {
        match self.conn {
            Conn::Kube(c) => Ok(c),
            _ => Err(self.wrong_target(TargetKind::Cluster)),
        }
    }

    /// The Kubernetes API of the task's own cluster or federation target, or
    /// else of its site's cluster (reached from a host task).
    pub async fn cluster(&self) -> Result<crate::kube::KubeConn, StepError> {
        match self.conn {
            Conn::Kube(c) => Ok(c.clone()),
            _ => self.reach.site_cluster().await,
        }
    }

    /// The hypervisor session of a hypervisor target.
    pub fn hypervisor(&self) -> Result<&'a crate::virt::Session, StepError> {
        match self.conn {
            Conn::Hypervisor(h) => Ok(h),
            _ => Err(self.wrong_target(TargetKind::Hypervisor)),
        }
    }

    /// The Redfish client of a BMC target.
    pub fn bmc(&self) -> Result<&'a crate::bmc::RedfishClient, StepError> {
        match self.conn {
            Conn::Bmc(c) => Ok(c),
            _ => Err(self.wrong_target(TargetKind::Bmc)),
        }
    }

    /// Runs a script on the host with the step's privilege.
    pub async fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, StepError> {
        Ok(self
            .transport()?
            .exec(ExecRequest {
                script,
                stdin,
                privileged: self.privileged,
                timeout,
            })
            .await?)
    }

    /// Runs a framed step script (see [`shell::frame`]) and reads its status token.
    pub async fn run_framed(
        &self,
        body: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<StepReport, StepError> {
        let script = shell::frame(body, self.check);
        let out = self.exec(&script, stdin, timeout).await?;
        match (out.status, shell::parse_status(&out.stdout)) {
            (0, Some((changed, stdout))) => Ok(StepReport {
                changed,
                stdout,
                ..StepReport::default()
            }),
            (status, _) => Err(StepError::Remote {
                status,
                stderr: tail(&String::from_utf8_lossy(&out.stderr), 10),
            }),
        }
    }

    fn wrong_target(&self, wanted: TargetKind) -> StepError {
        StepError::Invalid(format!(
            "{}: this step needs a {wanted} target, but its playbook runs against another kind of target",
            self.origin
        ))
    }
}

/// The parameters of one step kind: what a family module implements.
pub trait Params:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The YAML key, e.g. `template`.
    const KEY: &'static str;
    /// The targets it can run against.
    const TARGETS: &'static [TargetKind] = &[TargetKind::Host];
    /// Whether the state it sets is lost at reboot (sysctl, modules,
    /// services, commands): its journal entry is then tied to the boot.
    const RUNTIME_STATE: bool = false;
    /// Whether a journal entry may skip it on a later run (false for kinds
    /// whose check is a query of the target itself, like a VM's state).
    const JOURNALED: bool = true;
    /// Whether the step may run again from its start when the host's
    /// connection was lost in the middle of it: its effect converges (a file
    /// placed through a temporary name, a setting written), unlike a command
    /// that may have finished on the host before the connection went.
    const RERUNNABLE: bool = false;

    /// Content to place or run, loaded on the controller (part of the journal hash).
    fn content(&self, _env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        Ok(None)
    }

    /// For kinds that place a file: destination, mode and owner (probed in bulk).
    fn placement(&self) -> Option<(&str, Option<Mode>, Option<&str>)> {
        None
    }

    /// Does the work (or, in check mode, finds what would change).
    fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> impl Future<Output = Result<StepReport, StepError>> + Send + 'a;
}

/// A step kind with its parameters, as the executor sees it.
pub trait Kind: fmt::Debug + Send + Sync {
    /// The YAML key.
    fn key(&self) -> &'static str;
    /// The targets it can run against.
    fn targets(&self) -> &'static [TargetKind];
    /// Whether its journal entry is tied to the boot.
    fn runtime_state(&self) -> bool;
    /// Whether a journal entry may skip it.
    fn journaled(&self) -> bool;
    /// Whether it may run again after its host's connection was lost mid-step.
    fn rerunnable(&self) -> bool;
    /// Its parameters as JSON (for rendering, checking and hashing).
    fn params(&self) -> Value;
    /// The same kind with every string parameter passed through `render`.
    fn render(
        &self,
        render: &mut dyn FnMut(&Value) -> Result<Value, RenderError>,
        origin: &str,
    ) -> Result<Arc<dyn Kind>, StepError>;
    /// Content it loads on the controller.
    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError>;
    /// Destination, mode and owner of a placed file.
    fn placement(&self) -> Option<(&str, Option<Mode>, Option<&str>)>;
    /// Does the work.
    fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> BoxFuture<'a, Result<StepReport, StepError>>;
    /// The parameters as their own type (tests, and kinds that look at other steps).
    fn as_any(&self) -> &dyn Any;
}

/// The `dyn Kind` of a [`Params`] type.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed<P>(pub P);

impl<P: Params> Kind for Typed<P> {
    fn key(&self) -> &'static str {
        P::KEY
    }
    fn targets(&self) -> &'static [TargetKind] {
        P::TARGETS
    }
    fn runtime_state(&self) -> bool {
        P::RUNTIME_STATE
    }
    fn journaled(&self) -> bool {
        P::JOURNALED
    }
    fn rerunnable(&self) -> bool {
        P::RERUNNABLE
    }
    fn params(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
    fn render(
        &self,
        render: &mut dyn FnMut(&Value) -> Result<Value, RenderError>,
        origin: &str,
    ) -> Result<Arc<dyn Kind>, StepError> {
        let rendered = render(&self.params())?;
        let p: P = serde_json::from_value(rendered)
            .map_err(|e| StepError::Invalid(format!("{origin}: after rendering, {e}")))?;
        Ok(Arc::new(Typed(p)))
    }
    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        self.0.content(env)
    }
    fn placement(&self) -> Option<(&str, Option<Mode>, Option<&str>)> {
        self.0.placement()
    }
    fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> BoxFuture<'a, Result<StepReport, StepError>> {
        Box::pin(self.0.apply(content, env))
    }
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
}

/// The registry: every kind's parameter type, once.
macro_rules! kinds {
    ($($p:ty),* $(,)?) => {
        /// Every step kind's YAML key.
        pub const KIND_NAMES: &[&str] = &[$(<$p as Params>::KEY),*];

        /// Reads the parameters of the step kind `name` from the next map value.
        pub(crate) fn kind_from_map<'de, A: MapAccess<'de>>(
            name: &str,
            map: &mut A,
        ) -> Result<Arc<dyn Kind>, A::Error> {
            $(
                if name == <$p as Params>::KEY {
                    return Ok(Arc::new(Typed(map.next_value::<$p>()?)));
                }
            )*
            Err(de::Error::custom(format!(
                "unknown step kind `{name}`; the kinds are: {}",
                KIND_NAMES.join(", ")
            )))
        }
    };
}

kinds!(
    system::CommandParams,
    system::ProbeParams,
    system::ScriptParams,
    place::TemplateParams,
    place::CopyParams,
    system::FileParams,
    system::LineParams,
    system::PackageParams,
    system::ServiceParams,
    system::SysctlParams,
    system::ModuleParams,
    system::UserParams,
    system::HostnameParams,
    wait::WaitParams,
    wait::RebootParams,
    wait::CloudInitParams,
    artifact::ArtifactParams,
    output::SecretParams,
    flow::FlushHandlersParams,
    kube::NodeReadyParams,
    kube::NodesReadyParams,
    kube::NodeCordonParams,
    kube::NodeDrainParams,
    kube::NodeUncordonParams,
    kube::NodeDeleteParams,
    kube::VersionSkewParams,
    k3s::KubeconfigFetchParams,
    k3s::RegistryTlsParams,
    vm::VmImageParams,
    vm::VmDefineParams,
    vm::VmBootParams,
    federation::IdentifyParams,
    federation::KarmadaCheckParams,
    federation::KarmadaPushCredentialsParams,
    federation::KarmadaPushRegisterParams,
    federation::KarmadaPullAgentAccessParams,
    federation::KarmadaPullAgentParams,
    federation::KarmadaPullRegisterParams,
    federation::KubefedCheckParams,
    federation::KubefedCredentialsParams,
    federation::KubefedRegisterParams,
    federation::UnregisterParams,
    federation::CleanupParams,
    bmc::BmcInstallParams,
    bmc::BmcPowerParams,
    bmc::BmcEjectParams,
    bmc::BmcInsertLiveParams,
    bmc::BmcBootParams,
    bmc::BmcWaitSshParams,
    bmc::BmcWriteImageParams,
);

/// A step with rendered parameters and loaded content: what the journal hashes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The rendered kind.
    pub kind: Arc<dyn Kind>,
    /// Content to place (template output, copy content, script text, artifact).
    pub content: Option<Content>,
}

impl Prepared {
    /// Renders `kind`'s parameters with the step's context and loads its content.
    pub fn new(kind: &dyn Kind, env: &StepEnv<'_>) -> Result<Prepared, StepError> {
        let origin = env.origin.clone();
        let kind = kind.render(
            &mut |v| env.renderer.render_value(&origin, v, env.ctx),
            &env.origin,
        )?;
        let content = kind.content(env)?;
        Ok(Prepared { kind, content })
    }

    /// A stable hash of the rendered parameters and content (plus `salt`: facts the result depends on).
    pub fn input_hash(&self, salt: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.kind.key().as_bytes());
        h.update(serde_json::to_vec(&self.kind.params()).unwrap_or_default());
        match &self.content {
            Some(Content::Bytes(b)) => h.update(b),
            Some(Content::File { sha256, .. }) => h.update(sha256.as_bytes()),
            None => {}
        }
        h.update(salt.as_bytes());
        hex::encode(h.finalize())
    }

    /// For a step that places a file: its destination, mode, owner and the sha256 of the content.
    pub fn placement(&self) -> Option<(&str, u32, Option<&str>, String)> {
        let (dest, mode, owner) = self.kind.placement()?;
        let sha = match self.content.as_ref()? {
            Content::Bytes(b) => hex::encode(Sha256::digest(b)),
            Content::File { sha256, .. } => sha256.clone(),
        };
        Some((dest, mode.map_or(0o644, |m| m.0), owner, sha))
    }

    /// Does the work on the target.
    pub async fn apply(&self, env: &StepEnv<'_>) -> Result<StepReport, StepError> {
        self.kind.apply(self.content.as_ref(), env).await
    }
}

/// Bytes a step places or runs.
#[derive(Debug, Clone)]
pub enum Content {
    /// In memory.
    Bytes(Vec<u8>),
    /// A controller file, streamed, with its sha256.
    File {
        /// The file.
        path: PathBuf,
        /// Hex sha256.
        sha256: String,
    },
}

/// A named value a step publishes for later tasks (`outputs["<task>"].<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The output's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Redacted everywhere but in the files it is rendered into.
    pub secret: bool,
}

/// The result of a step that did not fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Something changed (or, in check mode, would change).
    pub changed: bool,
    /// A unified diff of a changed file (with `--diff` or `--check`).
    pub diff: Option<String>,
    /// The step's standard output (commands and scripts).
    pub stdout: String,
    /// Outputs the step publishes.
    pub outputs: Vec<Published>,
    /// Something the operator should know although the step did not fail.
    pub warning: Option<String>,
}

/// Errors of a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A parameter did not render.
    #[error("rendering the step")]
    Render(#[from] RenderError),
    /// A data file could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The transport failed.
    #[error("talking to the host")]
    Transport(#[from] TransportError),
    /// libvirt failed.
    #[error(transparent)]
    Virt(#[from] crate::virt::VirtError),
    /// The lab's key material could not be made or read.
    #[error(transparent)]
    Lab(#[from] crate::virt::lab::LabError),
    /// A federation API call failed, or the host's state forbids the step.
    #[error(transparent)]
    Federation(Box<crate::federation::FederationError>),
    /// The BMC failed or refused.
    #[error(transparent)]
    Bmc(#[from] crate::bmc::BmcError),
    /// A bare-metal install failed outside the BMC.
    #[error(transparent)]
    Metal(#[from] crate::metal::MetalError),
    /// A stage of a bare-metal install failed (it is journaled: the next run retries it).
    #[error("node {node}: install stage `{stage}` failed")]
    Install {
        /// The stage.
        stage: String,
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: Box<StepError>,
    },
    /// The rendered parameters make no sense, or the step cannot run.
    #[error("{0}")]
    Invalid(String),
    /// A local file could not be read.
    #[error("reading {path}")]
    Local {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The remote work failed.
    #[error("exited with status {status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Remote {
        /// Exit status.
        status: i32,
        /// The last lines of standard error.
        stderr: String,
    },
    /// Waiting for something ran out of time.
    #[error("{what} did not happen within {after:?}{}", last.as_ref().map(|l| format!("; last seen: {l}")).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// What was seen last.
        last: Option<String>,
    },
}

impl From<crate::metal::record::RecordError> for StepError {
    fn from(e: crate::metal::record::RecordError) -> StepError {
        StepError::Metal(e.into())
    }
}

impl From<crate::metal::media::MediaError> for StepError {
    fn from(e: crate::metal::media::MediaError) -> StepError {
        StepError::Metal(e.into())
    }
}

/// Permission bits; YAML `0644`, `644` and `"0644"` all mean octal 644.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

/// A string that YAML may have written as a number or boolean (`value: 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarString(pub String);

/// Present or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Make it be there.
    #[default]
    Present,
    /// Make it not be there.
    Absent,
}

/// The last `lines` lines of `s`.
pub(crate) fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let digits = ScalarString::deserialize(d)?.0;
        u32::from_str_radix(digits.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "mode `{digits}` is not octal permission bits like 0644"
                ))
            })
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0{:o}", self.0))
    }
}

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ScalarString, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarString, E> {
                // YAML reads `0644` as a number; keep its digits.
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(ScalarString(format!("{v:.0}")))
                } else {
                    Ok(ScalarString(v.to_string()))
                }
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(u8::from(v).to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ScalarString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Boxed: the federation errors carry the API's URL, kubeconfig and call.
impl From<crate::federation::FederationError> for StepError {
    fn from(e: crate::federation::FederationError) -> Self {
        StepError::Federation(Box::new(e))
    }
}

#[cfg(test)]
mod tests;
