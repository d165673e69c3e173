//! Step kinds: the code behind each playbook step.
//!
//! Every kind is idempotent: it detects the current state, changes only what
//! differs, and in check mode reports what would change without changing it.
//! Most kinds build one shell script (see [`super::shell`]) that checks and
//! changes in a single exec; `template` and `copy` go through
//! [`Transport::put`], which skips unchanged files by sha256; `reboot` polls
//! the host until its boot id changes.
//!
//! A step runs in two phases: [`StepKind::prepare`] renders its parameters
//! and loads its content (this is what the journal hashes), then
//! [`Prepared::apply`] does the remote work.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::shell::{self, quote};
use crate::facts::Facts;
use crate::render::{DataDir, RenderError, Renderer};
use crate::transport::{ExecRequest, PutOutcome, PutRequest, PutSource, Transport, TransportError};

/// Every step kind's YAML key.
pub const KIND_NAMES: &[&str] = &[
    "command",
    "script",
    "template",
    "copy",
    "file",
    "lineinfile",
    "package",
    "service",
    "sysctl",
    "kernel_module",
    "user",
    "hostname",
    "wait_for",
    "reboot",
    "artifact",
];

/// A step kind with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Run a command, guarded by `creates` / `removes` / `unless`.
    Command(CommandParams),
    /// Send a script (a data file or inline) and run it.
    Script(ScriptParams),
    /// Render a tera template into a remote file.
    Template(TemplateParams),
    /// Place a local file (or inline content) on the host.
    Copy(CopyParams),
    /// A directory, file, symlink, or nothing at a path, with mode and owner.
    File(FileParams),
    /// One line present in (or absent from) a file.
    Lineinfile(LineParams),
    /// Packages installed or removed with the host's package manager.
    Package(PackageParams),
    /// A systemd service enabled / started / stopped / restarted / reloaded.
    Service(ServiceParams),
    /// A kernel parameter, applied now and persisted in /etc/sysctl.d.
    Sysctl(SysctlParams),
    /// A kernel module, loaded now and at boot (/etc/modules-load.d).
    KernelModule(ModuleParams),
    /// A local user with groups, shell and an authorized SSH key.
    User(UserParams),
    /// The host name (runtime and /etc/hostname).
    Hostname(HostnameParams),
    /// Wait until a port answers, a file exists or a command succeeds.
    WaitFor(WaitParams),
    /// Reboot and wait until the host is back.
    Reboot(RebootParams),
    /// Place a verified artifact from the controller's cache (k3s binary,
    /// air-gap images), skipped when the host already has the same sha256.
    Artifact(ArtifactParams),
}

/// Reads the parameters of the step kind `name` from the next map value.
pub(crate) fn kind_from_map<'de, A: MapAccess<'de>>(
    name: &str,
    map: &mut A,
) -> Result<StepKind, A::Error> {
    Ok(match name {
        "command" => StepKind::Command(map.next_value()?),
        "script" => StepKind::Script(map.next_value()?),
        "template" => StepKind::Template(map.next_value()?),
        "copy" => StepKind::Copy(map.next_value()?),
        "file" => StepKind::File(map.next_value()?),
        "lineinfile" => StepKind::Lineinfile(map.next_value()?),
        "package" => StepKind::Package(map.next_value()?),
        "service" => StepKind::Service(map.next_value()?),
        "sysctl" => StepKind::Sysctl(map.next_value()?),
        "kernel_module" => StepKind::KernelModule(map.next_value()?),
        "user" => StepKind::User(map.next_value()?),
        "hostname" => StepKind::Hostname(map.next_value()?),
        "wait_for" => StepKind::WaitFor(map.next_value()?),
        "reboot" => StepKind::Reboot(map.next_value()?),
        "artifact" => StepKind::Artifact(map.next_value()?),
        other => {
            return Err(de::Error::custom(format!(
                "unknown step kind `{other}`; the kinds are: {}",
                KIND_NAMES.join(", ")
            )));
        }
    })
}

/// Parameters of `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The command line, run by `sh -c`.
    pub cmd: String,
    /// Skip when this path exists.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip unless this path exists.
    #[serde(default)]
    pub removes: Option<String>,
    /// Skip when this command succeeds.
    #[serde(default)]
    pub unless: Option<String>,
    /// Run in this directory.
    #[serde(default)]
    pub chdir: Option<String>,
}

/// Parameters of `script`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptParams {
    /// A file: relative paths are in the data directory, absolute ones on the controller.
    #[serde(default)]
    pub src: Option<String>,
    /// The script text itself.
    #[serde(default)]
    pub inline: Option<String>,
    /// The interpreter (default `sh`); it reads the script on standard input.
    #[serde(default = "default_sh")]
    pub interpreter: String,
    /// Skip when this path exists.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip when this command succeeds.
    #[serde(default)]
    pub unless: Option<String>,
}

/// Parameters of `template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateParams {
    /// Template path below templates/.
    pub src: String,
    /// Absolute destination path.
    pub dest: String,
    /// Permission bits (default 0644).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `user` or `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Parameters of `copy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyParams {
    /// A file: relative paths are in the data directory, absolute ones on the controller.
    #[serde(default)]
    pub src: Option<String>,
    /// The content itself (instead of `src`).
    #[serde(default)]
    pub content: Option<String>,
    /// Absolute destination path.
    pub dest: String,
    /// Permission bits (default 0644).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `user` or `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

/// What `file` makes of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// A directory (created with parents).
    #[default]
    Directory,
    /// An existing regular file (only mode and owner are set).
    File,
    /// A symlink to `src`.
    Symlink,
    /// Nothing: removed if present.
    Absent,
    /// A file, created empty if missing.
    Touch,
}

/// Parameters of `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// Absolute path.
    pub path: String,
    /// What to make of it (default `directory`).
    #[serde(default)]
    pub state: FileState,
    /// Symlink target (for `state: symlink`).
    #[serde(default)]
    pub src: Option<String>,
    /// Permission bits.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `user` or `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

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

/// Parameters of `lineinfile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineParams {
    /// The file.
    pub path: String,
    /// The line (required for `present`).
    #[serde(default)]
    pub line: Option<String>,
    /// An extended regex: the last matching line is replaced (or, for `absent`, all are removed).
    #[serde(default)]
    pub regexp: Option<String>,
    /// Present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Insert after the last line matching this regex (default: at the end).
    #[serde(default)]
    pub insertafter: Option<String>,
    /// Create the file when missing (default true).
    #[serde(default = "yes")]
    pub create: bool,
}

/// Parameters of `package`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageParams {
    /// One name or a list, installed or removed in one call.
    pub name: super::OneOrMany,
    /// Present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Refresh the package index before installing (apt: also when it was never fetched).
    #[serde(default)]
    pub update_cache: bool,
}

/// What `service` does to a unit's running state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Running.
    Started,
    /// Not running.
    Stopped,
    /// Restarted now (always a change).
    Restarted,
    /// Reloaded now (always a change).
    Reloaded,
}

/// Parameters of `service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    /// Unit name, e.g. `chrony` or `k3s.service`.
    pub name: String,
    /// Enabled at boot (unchanged when absent).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Running state (unchanged when absent).
    #[serde(default)]
    pub state: Option<ServiceState>,
    /// Run `systemctl daemon-reload` first.
    #[serde(default)]
    pub daemon_reload: bool,
}

/// Parameters of `sysctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlParams {
    /// Key, e.g. `net.ipv4.ip_forward`.
    pub name: String,
    /// Value, e.g. `1`.
    pub value: ScalarString,
    /// Where it is persisted (default /etc/sysctl.d/99-edgeforge.conf).
    #[serde(default = "default_sysctl_file")]
    pub file: String,
}

/// Parameters of `kernel_module`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleParams {
    /// Module name, e.g. `br_netfilter`.
    pub name: String,
    /// Where it is persisted (default /etc/modules-load.d/edgeforge.conf).
    #[serde(default = "default_modules_file")]
    pub file: String,
}

/// Parameters of `user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    /// Login name.
    pub name: String,
    /// Supplementary groups (created when missing).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Login shell.
    #[serde(default)]
    pub shell: Option<String>,
    /// A system account.
    #[serde(default)]
    pub system: bool,
    /// An SSH public key for ~/.ssh/authorized_keys.
    #[serde(default)]
    pub authorized_key: Option<String>,
}

/// Parameters of `hostname`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameParams {
    /// The host name.
    pub name: String,
}

/// Parameters of `wait_for` (exactly one of port, path, command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// A TCP port that must accept connections.
    #[serde(default)]
    pub port: Option<u16>,
    /// The address for `port` (default 127.0.0.1).
    #[serde(default = "default_localhost")]
    pub host: String,
    /// A path that must exist (or, with `state: absent`, not exist).
    #[serde(default)]
    pub path: Option<String>,
    /// A command that must succeed.
    #[serde(default)]
    pub command: Option<String>,
    /// Present (default) or absent (port closed, path gone).
    #[serde(default)]
    pub state: Presence,
    /// Seconds before giving up (default 300).
    #[serde(default = "default_wait")]
    pub timeout: u64,
}

/// Parameters of `reboot`.
/// Parameters of `artifact`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactParams {
    /// Manifest name, e.g. `k3s`.
    pub name: String,
    /// Release, e.g. `{{ versions.k3s }}`.
    pub version: String,
    /// `amd64` or `arm64` (default: from the host's facts).
    #[serde(default)]
    pub arch: Option<String>,
    /// Destination path on the host.
    pub dest: String,
    /// Permission bits (default 0644).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `user:group`.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootParams {
    /// Seconds to wait for the host to come back (default 600).
    #[serde(default = "default_reboot")]
    pub timeout: u64,
}

/// Permission bits; YAML `0644`, `644` and `"0644"` all mean octal 644.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

/// A string that YAML may have written as a number or boolean (`value: 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarString(pub String);

/// Errors of a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A parameter did not render.
    #[error("rendering the step")]
    Render(#[from] RenderError),
    /// The transport failed.
    #[error("talking to the host")]
    Transport(#[from] TransportError),
    /// The rendered parameters make no sense.
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
    /// The host did not come back after a reboot.
    #[error("the host did not come back within {0:?} after the reboot")]
    RebootTimeout(Duration),
}

/// What a step needs to run on one host.
pub struct StepEnv<'a> {
    /// The host's transport.
    pub transport: &'a dyn Transport,
    /// The tera environment.
    pub renderer: &'a Renderer,
    /// Where data files come from.
    pub data: &'a DataDir,
    /// The host's facts.
    pub facts: &'a Facts,
    /// The template context (inventory, facts, vars).
    pub ctx: &'a Value,
    /// Report what would change, change nothing.
    pub check: bool,
    /// Produce unified diffs of changed files.
    pub diff: bool,
    /// Run as root.
    pub privileged: bool,
    /// Names the step in errors: `playbooks/os.yaml step 'hostname'`.
    pub origin: String,
}

/// A step with rendered parameters and loaded content: what the journal hashes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The rendered kind.
    pub kind: StepKind,
    /// Content to place (template output, copy content, script text).
    pub content: Option<Content>,
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

/// The result of a step that did not fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Something changed (or, in check mode, would change).
    pub changed: bool,
    /// A unified diff of a changed file (with `--diff` or `--check`).
    pub diff: Option<String>,
    /// The step's standard output (commands and scripts).
    pub stdout: String,
}

impl StepKind {
    /// The YAML key of this kind.
    pub fn key(&self) -> &'static str {
        match self {
            StepKind::Command(_) => "command",
            StepKind::Script(_) => "script",
            StepKind::Template(_) => "template",
            StepKind::Copy(_) => "copy",
            StepKind::Artifact(_) => "artifact",
            StepKind::File(_) => "file",
            StepKind::Lineinfile(_) => "lineinfile",
            StepKind::Package(_) => "package",
            StepKind::Service(_) => "service",
            StepKind::Sysctl(_) => "sysctl",
            StepKind::KernelModule(_) => "kernel_module",
            StepKind::User(_) => "user",
            StepKind::Hostname(_) => "hostname",
            StepKind::WaitFor(_) => "wait_for",
            StepKind::Reboot(_) => "reboot",
        }
    }

    /// Whether the state this kind sets is lost at reboot (sysctl, modules, services).
    pub fn runtime_state(&self) -> bool {
        matches!(
            self,
            StepKind::Sysctl(_)
                | StepKind::KernelModule(_)
                | StepKind::Service(_)
                | StepKind::Hostname(_)
                | StepKind::WaitFor(_)
                | StepKind::Command(_)
                | StepKind::Script(_)
        )
    }

    /// Renders every parameter with the host's context and loads the content.
    pub fn prepare(&self, env: &StepEnv<'_>) -> Result<Prepared, StepError> {
        let raw = serde_json::to_value(self).map_err(|e| StepError::Invalid(e.to_string()))?;
        let rendered = env.renderer.render_value(&env.origin, &raw, env.ctx)?;
        let kind: StepKind = serde_json::from_value(rendered)
            .map_err(|e| StepError::Invalid(format!("{}: after rendering, {e}", env.origin)))?;
        let content = match &kind {
            StepKind::Template(p) => Some(Content::Bytes(
                env.renderer.render(&p.src, env.ctx)?.into_bytes(),
            )),
            StepKind::Copy(p) => Some(match (&p.src, &p.content) {
                (None, Some(c)) => Content::Bytes(c.clone().into_bytes()),
                (Some(src), None) => local_content(env.data, src)?,
                _ => {
                    return Err(StepError::Invalid(
                        "copy needs exactly one of `src` and `content`".into(),
                    ));
                }
            }),
            StepKind::Script(p) => Some(match (&p.src, &p.inline) {
                (None, Some(c)) => Content::Bytes(c.clone().into_bytes()),
                (Some(src), None) => match local_content(env.data, src)? {
                    Content::File { path, .. } => Content::Bytes(
                        std::fs::read(&path).map_err(|source| StepError::Local { path, source })?,
                    ),
                    bytes => bytes,
                },
                _ => {
                    return Err(StepError::Invalid(
                        "script needs exactly one of `src` and `inline`".into(),
                    ));
                }
            }),
            StepKind::Artifact(p) => Some(cached_artifact(p, env.facts)?),
            _ => None,
        };
        Ok(Prepared { kind, content })
    }
}

impl Prepared {
    /// A stable hash of the rendered parameters and content (plus `salt`: facts the result depends on).
    pub fn input_hash(&self, salt: &str) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&self.kind).unwrap_or_default());
        match &self.content {
            Some(Content::Bytes(b)) => h.update(b),
            Some(Content::File { sha256, .. }) => h.update(sha256.as_bytes()),
            None => {}
        }
        h.update(salt.as_bytes());
        hex::encode(h.finalize())
    }

    /// For a step that places a file (template, copy, artifact): its
    /// destination, mode, owner and the sha256 of the content.
    pub fn placement(&self) -> Option<(&str, u32, Option<&str>, String)> {
        let (dest, mode, owner) = match &self.kind {
            StepKind::Template(p) => (&p.dest, p.mode, p.owner.as_deref()),
            StepKind::Copy(p) => (&p.dest, p.mode, p.owner.as_deref()),
            StepKind::Artifact(p) => (&p.dest, p.mode, p.owner.as_deref()),
            _ => return None,
        };
        let sha = match self.content.as_ref()? {
            Content::Bytes(b) => hex::encode(Sha256::digest(b)),
            Content::File { sha256, .. } => sha256.clone(),
        };
        Some((dest, mode.map_or(0o644, |m| m.0), owner, sha))
    }

    /// Does the remote work (or, in check mode, finds what would change).
    pub async fn apply(&self, env: &StepEnv<'_>) -> Result<StepReport, StepError> {
        match &self.kind {
            StepKind::Template(p) => self.place(env, &p.dest, p.mode, p.owner.as_deref()).await,
            StepKind::Copy(p) => self.place(env, &p.dest, p.mode, p.owner.as_deref()).await,
            StepKind::Artifact(p) => self.place(env, &p.dest, p.mode, p.owner.as_deref()).await,
            StepKind::Reboot(p) => reboot(env, Duration::from_secs(p.timeout)).await,
            kind => {
                let body = shell_body(kind, env.facts)?;
                let stdin = match (&self.content, kind) {
                    (Some(Content::Bytes(b)), StepKind::Script(_)) => Some(b.as_slice()),
                    _ => None,
                };
                let timeout = match kind {
                    StepKind::WaitFor(w) => Some(Duration::from_secs(w.timeout + 30)),
                    _ => None,
                };
                run_framed(env, &body, stdin, timeout).await
            }
        }
    }

    /// template / copy: compare, diff, put.
    async fn place(
        &self,
        env: &StepEnv<'_>,
        dest: &str,
        mode: Option<Mode>,
        owner: Option<&str>,
    ) -> Result<StepReport, StepError> {
        if !dest.starts_with('/') {
            return Err(StepError::Invalid(format!(
                "dest `{dest}` must be an absolute path"
            )));
        }
        let mode = mode.map_or(0o644, |m| m.0);
        let content = self
            .content
            .as_ref()
            .ok_or_else(|| StepError::Invalid("nothing to place".into()))?;
        let new_bytes = match content {
            Content::Bytes(b) => Some(b.as_slice()),
            Content::File { .. } => None,
        };
        let want_diff = (env.diff || env.check) && new_bytes.is_some();
        let old = if want_diff {
            env.transport.get(dest, env.privileged).await?
        } else {
            None
        };
        let diff_of = |old: Option<&[u8]>| -> Option<String> {
            let new = new_bytes?;
            let old_text = String::from_utf8_lossy(old.unwrap_or_default());
            let new_text = String::from_utf8_lossy(new);
            if old_text == new_text {
                return None;
            }
            Some(
                similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
                    .unified_diff()
                    .header(if old.is_some() { dest } else { "/dev/null" }, dest)
                    .to_string(),
            )
        };
        if env.check {
            let meta = format!("{:o} {}", mode, owner.unwrap_or(""));
            let script = format!(
                "p={p}\nif [ -e \"$p\" ]; then printf '%s' \"$(stat -c %a \"$p\") \"; {own}; fi\n",
                p = quote(dest),
                own = if owner.is_some_and(|o| o.contains(':')) {
                    "stat -c %U:%G \"$p\""
                } else if owner.is_some() {
                    "stat -c %U \"$p\""
                } else {
                    "echo"
                },
            );
            let out = exec(env, &script, None, None).await?;
            let current = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let content_changed = match (content, &old) {
                (Content::Bytes(b), Some(o)) => o != b,
                (Content::File { sha256, .. }, _) => {
                    let sum = exec(
                        env,
                        &format!("sha256sum {} 2>/dev/null", quote(dest)),
                        None,
                        None,
                    )
                    .await?;
                    !String::from_utf8_lossy(&sum.stdout).starts_with(sha256.as_str())
                }
                (_, None) => true,
            };
            return Ok(StepReport {
                changed: content_changed || current != meta.trim(),
                diff: diff_of(old.as_deref()),
                stdout: String::new(),
            });
        }
        let (source, sha) = match content {
            Content::Bytes(b) => (PutSource::Bytes(b), None),
            Content::File { path, sha256 } => (PutSource::File(path), Some(sha256.as_str())),
        };
        let outcome = env
            .transport
            .put(PutRequest {
                path: dest,
                source,
                sha256: sha,
                mode,
                owner,
                privileged: env.privileged,
            })
            .await?;
        let changed = outcome == PutOutcome::Written;
        Ok(StepReport {
            changed,
            diff: if changed && env.diff {
                diff_of(old.as_deref())
            } else {
                None
            },
            stdout: String::new(),
        })
    }
}

/// Reads a `src` for copy/script: relative → data directory, absolute → controller file.
/// The cached, verified file of an `artifact` step (the cache is
/// `$EDGEFORGE_CACHE`, else the XDG cache directory, as for `images pull`).
fn cached_artifact(p: &ArtifactParams, facts: &Facts) -> Result<Content, StepError> {
    use crate::artifacts::cache::ArtifactCache;
    let dir = std::env::var_os("EDGEFORGE_CACHE")
        .map(PathBuf::from)
        .or_else(ArtifactCache::default_dir)
        .ok_or_else(|| {
            StepError::Invalid("no artifact cache directory: set EDGEFORGE_CACHE".into())
        })?;
    cached_artifact_in(&dir, p, facts)
}

/// [`cached_artifact`] from the cache at `dir`.
pub(crate) fn cached_artifact_in(
    dir: &std::path::Path,
    p: &ArtifactParams,
    facts: &Facts,
) -> Result<Content, StepError> {
    use crate::artifacts::{Arch, ArtifactRef, cache::ArtifactCache};
    let arch_name = p.arch.clone().unwrap_or_else(|| match facts.arch.as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    });
    let arch = Arch::ALL
        .into_iter()
        .find(|a| a.as_str() == arch_name)
        .ok_or_else(|| {
            StepError::Invalid(format!(
                "artifact {}: no artifacts for architecture `{arch_name}` (amd64 or arm64)",
                p.name
            ))
        })?;
    let cache = ArtifactCache::open(dir).map_err(|e| StepError::Invalid(e.to_string()))?;
    let wanted = ArtifactRef {
        name: p.name.clone(),
        version: p.version.clone(),
        arch,
    };
    let cached = cache
        .require(&wanted)
        .map_err(|e| StepError::Invalid(e.to_string()))?;
    Ok(Content::File {
        path: cached.path,
        sha256: cached.sha256,
    })
}

fn local_content(data: &DataDir, src: &str) -> Result<Content, StepError> {
    let path = if src.starts_with('/') {
        Some(PathBuf::from(src))
    } else {
        data.path_of(src)
    };
    match path {
        Some(path) => {
            let mut file = std::fs::File::open(&path).map_err(|source| StepError::Local {
                path: path.clone(),
                source,
            })?;
            let mut h = Sha256::new();
            std::io::copy(&mut file, &mut h).map_err(|source| StepError::Local {
                path: path.clone(),
                source,
            })?;
            Ok(Content::File {
                path,
                sha256: hex::encode(h.finalize()),
            })
        }
        None => Ok(Content::Bytes(data.read(src)?)),
    }
}

async fn exec(
    env: &StepEnv<'_>,
    script: &str,
    stdin: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<crate::transport::ExecOutput, StepError> {
    Ok(env
        .transport
        .exec(ExecRequest {
            script,
            stdin,
            privileged: env.privileged,
            timeout,
        })
        .await?)
}

/// Runs a framed step script and reads its status token.
async fn run_framed(
    env: &StepEnv<'_>,
    body: &str,
    stdin: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<StepReport, StepError> {
    let script = shell::frame(body, env.check);
    let out = exec(env, &script, stdin, timeout).await?;
    match (out.status, shell::parse_status(&out.stdout)) {
        (0, Some((changed, stdout))) => Ok(StepReport {
            changed,
            diff: None,
            stdout,
        }),
        (status, _) => Err(StepError::Remote {
            status,
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 10),
        }),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The shell body (check and change in one script) of a shell-backed kind.
fn shell_body(kind: &StepKind, facts: &Facts) -> Result<String, StepError> {
    Ok(match kind {
        StepKind::Command(p) => {
            let mut guards = Vec::new();
            if let Some(c) = &p.creates {
                guards.push(format!("[ -e {} ]", quote(c)));
            }
            if let Some(r) = &p.removes {
                guards.push(format!("[ ! -e {} ]", quote(r)));
            }
            if let Some(u) = &p.unless {
                guards.push(format!("( {} ) >/dev/null 2>&1", u));
            }
            // The command runs in a subshell through `eval`: a fork, not an exec, so
            // its text (which may hold a rendered secret) never shows in a process list.
            let cmd = match &p.chdir {
                Some(d) => format!("cd {} && {}", quote(d), p.cmd),
                None => p.cmd.clone(),
            };
            let run = format!(
                "ef_cmd={}\nef_run() {{ ( eval \"$ef_cmd\" ); }}\nef_do ef_run",
                quote(&cmd)
            );
            guarded(&guards, &run)
        }
        StepKind::Script(p) => {
            let mut guards = Vec::new();
            if let Some(c) = &p.creates {
                guards.push(format!("[ -e {} ]", quote(c)));
            }
            if let Some(u) = &p.unless {
                guards.push(format!("( {} ) </dev/null >/dev/null 2>&1", u));
            }
            let flag = if matches!(p.interpreter.as_str(), "sh" | "bash" | "dash" | "ash") {
                "-s"
            } else {
                "-"
            };
            guarded(&guards, &format!("ef_do {} {flag}", quote(&p.interpreter)))
        }
        StepKind::File(p) => file_body(p)?,
        StepKind::Lineinfile(p) => {
            let line = p.line.as_deref();
            if p.state == Presence::Present && line.is_none() {
                return Err(StepError::Invalid(
                    "lineinfile with state present needs `line`".into(),
                ));
            }
            if p.state == Presence::Absent && line.is_none() && p.regexp.is_none() {
                return Err(StepError::Invalid(
                    "lineinfile with state absent needs `line` or `regexp`".into(),
                ));
            }
            line_body(
                &p.path,
                line.unwrap_or(""),
                p.regexp.as_deref(),
                p.insertafter.as_deref(),
                p.state,
                p.create,
            )
        }
        StepKind::Package(p) => package_body(p, facts)?,
        StepKind::Service(p) => service_body(p)?,
        StepKind::Sysctl(p) => {
            check_word("sysctl name", &p.name, |c| {
                c.is_ascii_alphanumeric() || "._-/".contains(c)
            })?;
            let value = &p.value.0;
            let re = format!("^[[:space:]]*{}[[:space:]]*=", p.name.replace('.', "[.]"));
            format!(
                "n={n}; v={v}\n\
                 cur=$(sysctl -n \"$n\" 2>/dev/null | tr -s ' \\t' ' ')\n\
                 want=$(printf '%s' \"$v\" | tr -s ' \\t' ' ')\n\
                 [ \"$cur\" = \"$want\" ] || ef_do sysctl -q -w \"$n=$v\"\n{dir}\n{persist}",
                n = quote(&p.name),
                v = quote(value),
                dir = mkdir_parent(&p.file),
                persist = line_body(
                    &p.file,
                    &format!("{} = {}", p.name, value),
                    Some(&re),
                    None,
                    Presence::Present,
                    true
                ),
            )
        }
        StepKind::KernelModule(p) => {
            check_word("module name", &p.name, |c| {
                c.is_ascii_alphanumeric() || "_-".contains(c)
            })?;
            let sys = p.name.replace('-', "_");
            format!(
                "[ -d /sys/module/{sys} ] || ef_do modprobe {n}\n{dir}\n{persist}",
                sys = quote(&sys),
                n = quote(&p.name),
                dir = mkdir_parent(&p.file),
                persist = line_body(&p.file, &p.name, None, None, Presence::Present, true),
            )
        }
        StepKind::User(p) => user_body(p)?,
        StepKind::Hostname(p) => {
            check_word("hostname", &p.name, |c| {
                c.is_ascii_alphanumeric() || "-.".contains(c)
            })?;
            format!(
                "h={h}\n\
                 if [ \"$(hostname)\" != \"$h\" ]; then\n\
                 \x20 if command -v hostnamectl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then ef_do hostnamectl set-hostname \"$h\"; else ef_do hostname \"$h\"; fi\n\
                 fi\n\
                 [ \"$(cat /etc/hostname 2>/dev/null)\" = \"$h\" ] || ef_do sh -c 'printf \"%s\\n\" \"$1\" > /etc/hostname.ef-tmp && mv -f /etc/hostname.ef-tmp /etc/hostname' sh \"$h\"",
                h = quote(&p.name)
            )
        }
        StepKind::WaitFor(p) => wait_body(p)?,
        StepKind::Template(_) | StepKind::Copy(_) | StepKind::Artifact(_) | StepKind::Reboot(_) => {
            return Err(StepError::Invalid(format!(
                "{} is not a shell step",
                kind.key()
            )));
        }
    })
}

/// `if guard1 || guard2; then :; else change; fi`
fn guarded(guards: &[String], change: &str) -> String {
    if guards.is_empty() {
        change.to_string()
    } else {
        format!("if {}; then :; else {change}; fi", guards.join(" || "))
    }
}

fn mkdir_parent(file: &str) -> String {
    let dir = file
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    format!("[ -d {d} ] || ef_do mkdir -p {d}", d = quote(dir))
}

fn check_word(what: &str, s: &str, ok: impl Fn(char) -> bool) -> Result<(), StepError> {
    if s.is_empty() || s.starts_with('-') || !s.chars().all(ok) {
        return Err(StepError::Invalid(format!(
            "{what} `{s}` has characters that are not allowed"
        )));
    }
    Ok(())
}

fn mode_owner(path_var: &str, mode: Option<Mode>, owner: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(m) = mode {
        out.push_str(&format!(
            "[ -e \"{path_var}\" ] && [ \"$(stat -c %a \"{path_var}\")\" = {m:o} ] || ef_do chmod {m:o} \"{path_var}\"\n",
            m = m.0
        ));
    }
    if let Some(o) = owner {
        let fmt = if o.contains(':') { "%U:%G" } else { "%U" };
        out.push_str(&format!(
            "[ -e \"{path_var}\" ] && [ \"$(stat -c {fmt} \"{path_var}\")\" = {o} ] || ef_do chown {o} \"{path_var}\"\n",
            o = quote(o)
        ));
    }
    out
}

fn file_body(p: &FileParams) -> Result<String, StepError> {
    if !p.path.starts_with('/') {
        return Err(StepError::Invalid(format!(
            "path `{}` must be absolute",
            p.path
        )));
    }
    let mut s = format!("p={}\n", quote(&p.path));
    match p.state {
        FileState::Directory => s.push_str("[ -d \"$p\" ] || ef_do mkdir -p \"$p\"\n"),
        FileState::File => s.push_str(
            "[ -f \"$p\" ] || { echo \"$p does not exist; use state: touch to create it\" >&2; exit 1; }\n",
        ),
        FileState::Touch => s.push_str("[ -e \"$p\" ] || ef_do touch \"$p\"\n"),
        FileState::Absent => {
            s.push_str("if [ -e \"$p\" ] || [ -L \"$p\" ]; then ef_do rm -rf \"$p\"; fi\n");
            return Ok(s);
        }
        FileState::Symlink => {
            let src = p
                .src
                .as_deref()
                .ok_or_else(|| StepError::Invalid("file with state symlink needs `src` (the target)".into()))?;
            s.push_str(&format!(
                "[ -L \"$p\" ] && [ \"$(readlink \"$p\")\" = {t} ] || ef_do ln -sfn {t} \"$p\"\n",
                t = quote(src)
            ));
            return Ok(s);
        }
    }
    s.push_str(&mode_owner("$p", p.mode, p.owner.as_deref()));
    Ok(s)
}

/// Ensures one line in a file; the file is rewritten to a temp name and renamed.
fn line_body(
    path: &str,
    line: &str,
    regexp: Option<&str>,
    insertafter: Option<&str>,
    state: Presence,
    create: bool,
) -> String {
    let mut s = format!(
        "f={f}; export EF_LINE={l} EF_RE={r} EF_IA={ia}\n\
         ef_rewrite() {{ t=\"$f.ef-tmp.$$\"; if cp -p \"$f\" \"$t\" && awk \"$1\" \"$f\" \"$f\" > \"$t\" && mv -f \"$t\" \"$f\"; then :; else rm -f \"$t\"; exit 1; fi; }}\n",
        f = quote(path),
        l = quote(line),
        r = quote(regexp.unwrap_or("")),
        ia = quote(insertafter.unwrap_or("")),
    );
    match state {
        Presence::Present => {
            if create {
                s.push_str("[ -e \"$f\" ] || ef_do touch \"$f\"\n");
            } else {
                s.push_str("[ -e \"$f\" ] || { echo \"$f does not exist\" >&2; exit 1; }\n");
            }
            s.push_str(
                "if [ -e \"$f\" ] && grep -Fxq -e \"$EF_LINE\" \"$f\"; then :\n\
                 elif [ -n \"$EF_RE\" ] && [ -e \"$f\" ] && grep -Eq -e \"$EF_RE\" \"$f\"; then\n\
                 \x20 ef_do ef_rewrite 'NR==FNR { if ($0 ~ ENVIRON[\"EF_RE\"]) last=FNR; next } FNR==last { print ENVIRON[\"EF_LINE\"]; next } { print }'\n\
                 else\n\
                 \x20 ef_do ef_rewrite 'NR==FNR { if (ENVIRON[\"EF_IA\"] != \"\" && $0 ~ ENVIRON[\"EF_IA\"]) last=FNR; next } { print } FNR==last { print ENVIRON[\"EF_LINE\"] } END { if (last==0) print ENVIRON[\"EF_LINE\"] }'\n\
                 fi\n",
            );
        }
        Presence::Absent => s.push_str(
            "if [ -n \"$EF_RE\" ]; then m='$0 ~ ENVIRON[\"EF_RE\"]'; else m='$0 == ENVIRON[\"EF_LINE\"]'; fi\n\
             if [ -e \"$f\" ] && { if [ -n \"$EF_RE\" ]; then grep -Eq -e \"$EF_RE\" \"$f\"; else grep -Fxq -e \"$EF_LINE\" \"$f\"; fi; }; then\n\
             \x20 ef_do ef_rewrite \"NR==FNR { next } !($m) { print }\"\n\
             fi\n",
        ),
    }
    s
}

fn package_body(p: &PackageParams, facts: &Facts) -> Result<String, StepError> {
    for n in &p.name.0 {
        check_word("package name", n, |c| {
            c.is_ascii_alphanumeric() || "+._:=-~".contains(c)
        })?;
    }
    let names = p
        .name
        .0
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let (query, install, remove, refresh) = match facts.pkg_mgr.as_str() {
        "apt" => (
            "dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed'",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends",
            "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q",
            "apt-get update -q",
        ),
        "dnf" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "dnf install -y -q",
            "dnf remove -y -q",
            "dnf makecache -q",
        ),
        "yum" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "yum install -y -q",
            "yum remove -y -q",
            "yum makecache -q",
        ),
        "zypper" => (
            "rpm -q \"$p\" >/dev/null 2>&1",
            "zypper -n -q install",
            "zypper -n -q remove",
            "zypper -n -q refresh",
        ),
        "apk" => (
            "apk info -e \"$p\" >/dev/null 2>&1",
            "apk add -q",
            "apk del -q",
            "apk update -q",
        ),
        other => {
            return Err(StepError::Invalid(format!(
                "no supported package manager on this host (found `{other}`); supported: apt, dnf, yum, zypper, apk"
            )));
        }
    };
    let apt_never_updated = facts.pkg_mgr == "apt";
    Ok(match p.state {
        Presence::Present => format!(
            "todo=''\nfor p in {names}; do if {query}; then :; else todo=\"$todo $p\"; fi; done\n\
             if [ -n \"$todo\" ]; then\n\
             \x20 if [ {upd} = 1 ] || {{ [ {aptfresh} = 1 ] && [ -z \"$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)\" ]; }}; then ef_do sh -c {refresh}; fi\n\
             \x20 ef_do sh -c {install_q}' \"$@\"' sh $todo\n\
             fi",
            upd = u8::from(p.update_cache),
            aptfresh = u8::from(apt_never_updated),
            refresh = quote(refresh),
            install_q = quote(install),
        ),
        Presence::Absent => format!(
            "todo=''\nfor p in {names}; do if {query}; then todo=\"$todo $p\"; fi; done\n\
             if [ -n \"$todo\" ]; then ef_do sh -c {remove_q}' \"$@\"' sh $todo; fi",
            remove_q = quote(remove),
        ),
    })
}

fn service_body(p: &ServiceParams) -> Result<String, StepError> {
    check_word("service name", &p.name, |c| {
        c.is_ascii_alphanumeric() || "@._:-".contains(c)
    })?;
    let mut s = format!("s={}\n", quote(&p.name));
    if p.daemon_reload {
        s.push_str("[ \"$ef_check\" = 1 ] || systemctl daemon-reload\n");
    }
    match p.enabled {
        Some(true) => s.push_str("systemctl is-enabled --quiet \"$s\" 2>/dev/null || ef_do systemctl enable --quiet \"$s\"\n"),
        Some(false) => s.push_str("if systemctl is-enabled --quiet \"$s\" 2>/dev/null; then ef_do systemctl disable --quiet \"$s\"; fi\n"),
        None => {}
    }
    match p.state {
        Some(ServiceState::Started) => {
            s.push_str("systemctl is-active --quiet \"$s\" || ef_do systemctl start \"$s\"\n")
        }
        Some(ServiceState::Stopped) => s.push_str(
            "if systemctl is-active --quiet \"$s\"; then ef_do systemctl stop \"$s\"; fi\n",
        ),
        Some(ServiceState::Restarted) => s.push_str("ef_do systemctl restart \"$s\"\n"),
        Some(ServiceState::Reloaded) => s.push_str("ef_do systemctl reload-or-restart \"$s\"\n"),
        None => {}
    }
    Ok(s)
}

fn user_body(p: &UserParams) -> Result<String, StepError> {
    check_word("user name", &p.name, |c| {
        c.is_ascii_alphanumeric() || "._-".contains(c)
    })?;
    for g in &p.groups {
        check_word("group name", g, |c| {
            c.is_ascii_alphanumeric() || "._-".contains(c)
        })?;
    }
    let mut s = format!("u={}\n", quote(&p.name));
    for g in &p.groups {
        s.push_str(&format!(
            "getent group {g} >/dev/null || ef_do groupadd {g}\n",
            g = quote(g)
        ));
    }
    let mut add = String::from("useradd -m");
    if p.system {
        add.push_str(" -r");
    }
    if let Some(sh) = &p.shell {
        add.push_str(&format!(" -s {}", quote(sh)));
    }
    if !p.groups.is_empty() {
        add.push_str(&format!(" -G {}", quote(&p.groups.join(","))));
    }
    s.push_str(&format!(
        "if ! id -u \"$u\" >/dev/null 2>&1; then ef_do {add} \"$u\"; fi\n"
    ));
    // `:` keeps the block valid when the user has no shell, groups or key to set.
    s.push_str("if id -u \"$u\" >/dev/null 2>&1; then\n  :\n");
    if let Some(sh) = &p.shell {
        s.push_str(&format!(
            "  [ \"$(getent passwd \"$u\" | cut -d: -f7)\" = {sh} ] || ef_do usermod -s {sh} \"$u\"\n",
            sh = quote(sh)
        ));
    }
    for g in &p.groups {
        s.push_str(&format!(
            "  id -nG \"$u\" | tr ' ' '\\n' | grep -Fxq -e {g} || ef_do usermod -aG {g} \"$u\"\n",
            g = quote(g)
        ));
    }
    if let Some(key) = p.authorized_key.as_ref().filter(|k| !k.trim().is_empty()) {
        s.push_str(&format!(
            "  home=$(getent passwd \"$u\" | cut -d: -f6); k={k}\n\
             \x20 grep -Fxq -e \"$k\" \"$home/.ssh/authorized_keys\" 2>/dev/null || ef_do sh -c 'mkdir -p \"$1/.ssh\" && chmod 700 \"$1/.ssh\" && printf \"%s\\n\" \"$2\" >> \"$1/.ssh/authorized_keys\" && chmod 600 \"$1/.ssh/authorized_keys\" && chown -R \"$3\" \"$1/.ssh\"' sh \"$home\" \"$k\" \"$u\"\n",
            k = quote(key.trim())
        ));
    }
    s.push_str("fi\n");
    Ok(s)
}

fn wait_body(p: &WaitParams) -> Result<String, StepError> {
    let cond = match (p.port, &p.path, &p.command) {
        (Some(port), None, None) => format!(
            "ef_probe() {{ if command -v nc >/dev/null 2>&1; then nc -z -w 2 {h} {port} >/dev/null 2>&1; \
             else bash -c 'exec 3<>/dev/tcp/$1/$2' sh {h} {port} 2>/dev/null; fi; }}",
            h = quote(&p.host)
        ),
        (None, Some(path), None) => format!("ef_probe() {{ [ -e {} ]; }}", quote(path)),
        (None, None, Some(cmd)) => format!("ef_probe() {{ ( {cmd} ) >/dev/null 2>&1; }}"),
        _ => {
            return Err(StepError::Invalid(
                "wait_for needs exactly one of `port`, `path`, `command`".into(),
            ));
        }
    };
    let test = match p.state {
        Presence::Present => "ef_probe",
        Presence::Absent => "! ef_probe",
    };
    Ok(format!(
        "{cond}\nif [ \"$ef_check\" != 1 ]; then\n\
         \x20 end=$(( $(date +%s) + {t} ))\n\
         \x20 until {test}; do\n\
         \x20   if [ \"$(date +%s)\" -ge \"$end\" ]; then echo 'gave up after {t} s' >&2; exit 1; fi\n\
         \x20   sleep 1\n\
         \x20 done\n\
         fi",
        t = p.timeout
    ))
}

/// Reboots and waits until the boot id changes (the transport reconnects on its own).
async fn reboot(env: &StepEnv<'_>, timeout: Duration) -> Result<StepReport, StepError> {
    let changed = StepReport {
        changed: true,
        diff: None,
        stdout: String::new(),
    };
    if env.check {
        return Ok(changed);
    }
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let before = exec(env, boot_id, None, Some(Duration::from_secs(30)))
        .await?
        .stdout;
    exec(
        env,
        "nohup sh -c 'sleep 2; reboot' >/dev/null 2>&1 &",
        None,
        Some(Duration::from_secs(30)),
    )
    .await?;
    let start = Instant::now();
    while start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Ok(out) = exec(env, boot_id, None, Some(Duration::from_secs(10))).await
            && out.status == 0
            && !out.stdout.is_empty()
            && out.stdout != before
        {
            return Ok(changed);
        }
    }
    Err(StepError::RebootTimeout(timeout))
}

fn default_sh() -> String {
    "sh".into()
}
fn yes() -> bool {
    true
}
fn default_sysctl_file() -> String {
    "/etc/sysctl.d/99-edgeforge.conf".into()
}
fn default_modules_file() -> String {
    "/etc/modules-load.d/edgeforge.conf".into()
}
fn default_localhost() -> String {
    "127.0.0.1".into()
}
fn default_wait() -> u64 {
    300
}
fn default_reboot() -> u64 {
    600
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

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
