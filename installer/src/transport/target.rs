//! Where and how to reach one host over SSH, fully resolved.
//!
//! [`SshTarget`] is a plain value: address, user, identities, jump chain,
//! host-key policy, timeouts and privilege mode, with secrets already read.
//! [`SshTarget::from_settings`] builds it from the inventory's layered
//! [`SshSettings`](crate::inventory::model::SshSettings), so the rules for
//! defaults (user root, port 22, `~/.ssh/id_*`, 10 s connect timeout) live here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::inventory::model::{HostKeyMode, SecretRef, SshSettings};

use super::known_hosts::HostKeyCheck;

/// Everything needed to open one SSH connection.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Address (IP or DNS name) as written in the inventory.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// Private key files to offer, in order.
    pub identity_files: Vec<PathBuf>,
    /// Passphrase for encrypted identity files.
    pub passphrase: Option<Secret>,
    /// Also offer the keys of the ssh-agent at `SSH_AUTH_SOCK`.
    pub agent: bool,
    /// Jump hosts, outermost first; their own `jump` lists are empty.
    pub jump: Vec<SshTarget>,
    /// How the host key is verified.
    pub host_key: HostKeyCheck,
    /// Limit for TCP connect, handshake and authentication.
    pub connect_timeout: Duration,
    /// Interval between keepalives; three unanswered ones close the connection.
    pub keepalive: Duration,
    /// How privileged commands become root.
    pub sudo: SudoMode,
}

/// How privileged commands become root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SudoMode {
    /// The user is root, or privilege was not configured.
    None,
    /// `sudo -n`: the user may sudo without a password.
    Passwordless,
    /// `sudo -S`: the password is written once to sudo's stdin.
    Password(Secret),
}

/// A secret string (sudo password, key passphrase) that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why SSH settings could not be turned into a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A secret referenced an environment variable that is not set.
    #[error("{field}: environment variable {var} is not set; export it or use a `file:` reference")]
    SecretEnv {
        /// The setting, e.g. `sudo.password`.
        field: String,
        /// The variable name.
        var: String,
    },
    /// A secret file could not be read.
    #[error("{field}: cannot read secret file {}", .path.display())]
    SecretFile {
        /// The setting, e.g. `sudo.password`.
        field: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ssh.jump` names a jump host that `jumpHosts` does not define.
    #[error("ssh.jump (line {line}): no jump host named `{name}`; define it under `jumpHosts`")]
    UnknownJump {
        /// The name.
        name: String,
        /// Line in the inventory (0 if unknown).
        line: u32,
    },
    /// Jump hosts refer to each other in a loop, or nest too deep.
    #[error(
        "ssh.jump: jump hosts nest more than {MAX_JUMPS} deep (is there a loop through `{0}`?)"
    )]
    JumpLoop(String),
    /// No identity file exists and no agent is available.
    #[error(
        "no SSH identity for {0}: set `ssh.identityFile`, create ~/.ssh/id_ed25519, or run an ssh-agent"
    )]
    NoIdentity(String),
}

const MAX_JUMPS: usize = 8;

impl SshTarget {
    /// Resolves inventory SSH settings for `address`: defaults, secrets and
    /// the jump chain. `jumps` maps a jump host name to its address and
    /// settings; `base_dir` is edgeforge's state directory, which holds the
    /// known_hosts file that `accept-new` writes to (and that is always read).
    pub fn from_settings(
        address: &str,
        settings: &SshSettings,
        jumps: &dyn Fn(&str) -> Option<(String, SshSettings)>,
        base_dir: &Path,
    ) -> Result<SshTarget, TargetError> {
        resolve(address, settings, jumps, base_dir, 0)
    }

    /// `user@host:port`, the label used in messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

fn resolve(
    address: &str,
    s: &SshSettings,
    jumps: &dyn Fn(&str) -> Option<(String, SshSettings)>,
    base_dir: &Path,
    depth: usize,
) -> Result<SshTarget, TargetError> {
    if depth > MAX_JUMPS {
        return Err(TargetError::JumpLoop(address.to_string()));
    }
    let user = s.user.as_ref().map_or("root", |u| u.as_str()).to_string();
    let home = dirs::home_dir();
    let agent_available = std::env::var_os("SSH_AUTH_SOCK").is_some();
    let agent = s.agent.unwrap_or(agent_available);
    let identity_files: Vec<PathBuf> = match &s.identity_file {
        Some(p) => vec![expand_tilde(&p.value, home.as_deref())],
        None => home
            .iter()
            .flat_map(|h| {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(move |n| h.join(".ssh").join(n))
            })
            .filter(|p| p.is_file())
            .collect(),
    };
    if identity_files.is_empty() && !agent {
        return Err(TargetError::NoIdentity(format!("{user}@{address}")));
    }
    let passphrase = s
        .identity_passphrase
        .as_ref()
        .map(|r| read_secret("ssh.identityPassphrase", r))
        .transpose()?;

    let own_known_hosts = base_dir.join("known_hosts");
    let policy = s.host_key.as_ref();
    let pinned = policy
        .and_then(|p| p.fingerprint.as_ref())
        .map(|f| f.value.clone());
    let mut known_hosts: Vec<PathBuf> = match policy.and_then(|p| p.known_hosts.as_ref()) {
        Some(p) => vec![expand_tilde(&p.value, home.as_deref())],
        None => home
            .iter()
            .map(|h| h.join(".ssh").join("known_hosts"))
            .collect(),
    };
    known_hosts.push(own_known_hosts.clone());
    let accept_new = policy
        .and_then(|p| p.policy)
        .filter(|m| *m == HostKeyMode::AcceptNew)
        .map(|_| own_known_hosts);

    let sudo = match &s.sudo {
        _ if user == "root" => SudoMode::None,
        Some(sudo) if sudo.enabled == Some(false) => SudoMode::None,
        Some(sudo) => match &sudo.password {
            Some(r) => SudoMode::Password(read_secret("sudo.password", r)?),
            None => SudoMode::Passwordless,
        },
        None => SudoMode::Passwordless,
    };

    let mut chain = Vec::new();
    for name in s.jump.iter().flatten() {
        let (jump_address, jump_settings) =
            jumps(name.as_str()).ok_or_else(|| TargetError::UnknownJump {
                name: name.value.clone(),
                line: name.line,
            })?;
        let mut hop = resolve(&jump_address, &jump_settings, jumps, base_dir, depth + 1)?;
        chain.append(&mut hop.jump);
        chain.push(hop);
        if chain.len() > MAX_JUMPS {
            return Err(TargetError::JumpLoop(name.value.clone()));
        }
    }

    Ok(SshTarget {
        host: address.to_string(),
        port: s.port.unwrap_or(22),
        user,
        identity_files,
        passphrase,
        agent,
        jump: chain,
        host_key: HostKeyCheck {
            pinned,
            known_hosts,
            accept_new,
        },
        connect_timeout: Duration::from_secs(u64::from(s.connect_timeout.unwrap_or(10).max(1))),
        keepalive: Duration::from_secs(u64::from(s.keepalive.unwrap_or(15).max(1))),
        sudo,
    })
}

/// Reads a secret by reference; a file's trailing newline is removed.
pub fn read_secret(field: &str, r: &SecretRef) -> Result<Secret, TargetError> {
    match r {
        SecretRef::Env(var) => std::env::var(var)
            .map(Secret)
            .map_err(|_| TargetError::SecretEnv {
                field: field.into(),
                var: var.clone(),
            }),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| Secret(s.strip_suffix('\n').unwrap_or(&s).to_string()))
            .map_err(|source| TargetError::SecretFile {
                field: field.into(),
                path: path.clone(),
                source,
            }),
    }
}

fn expand_tilde(p: &Path, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~"), home) {
        (Ok(rest), Some(h)) => h.join(rest),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::{HostKeyPolicy, Sp, Sudo};

    fn settings_with_key(dir: &Path) -> SshSettings {
        let key = dir.join("id_test");
        std::fs::write(&key, "x").unwrap();
        SshSettings {
            identity_file: Some(Sp::new(key)),
            agent: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_root_port_22_and_own_known_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let t = SshTarget::from_settings(
            "10.0.0.1",
            &settings_with_key(dir.path()),
            &|_| None,
            dir.path(),
        )
        .unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 22));
        assert_eq!(t.sudo, SudoMode::None);
        assert_eq!(t.connect_timeout, Duration::from_secs(10));
        assert_eq!(
            t.host_key.known_hosts.last(),
            Some(&dir.path().join("known_hosts"))
        );
        assert!(t.host_key.accept_new.is_none());
    }

    #[test]
    fn sudo_password_is_read_from_file_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2-secret\n").unwrap();
        let mut s = settings_with_key(dir.path());
        s.user = Some(Sp::new("deploy".into()));
        s.sudo = Some(Sudo {
            enabled: None,
            password: Some(SecretRef::File(pw)),
        });
        s.host_key = Some(HostKeyPolicy {
            fingerprint: None,
            known_hosts: None,
            policy: Some(HostKeyMode::AcceptNew),
        });
        let t = SshTarget::from_settings("h", &s, &|_| None, dir.path()).unwrap();
        assert_eq!(t.sudo, SudoMode::Password(Secret::new("hunter2-secret")));
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(t.host_key.accept_new, Some(dir.path().join("known_hosts")));
    }

    #[test]
    fn missing_env_secret_names_field_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings_with_key(dir.path());
        s.identity_passphrase = Some(SecretRef::Env("EDGEFORGE_TEST_UNSET_VAR".into()));
        let err = SshTarget::from_settings("h", &s, &|_| None, dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ssh.identityPassphrase: environment variable EDGEFORGE_TEST_UNSET_VAR is not set; export it or use a `file:` reference"
        );
    }

    #[test]
    fn jump_chain_is_flattened_outermost_first() {
        let dir = tempfile::tempdir().unwrap();
        let base = settings_with_key(dir.path());
        let mut node = base.clone();
        node.jump = Some(vec![Sp::new("inner".into())]);
        let resolver = |name: &str| -> Option<(String, SshSettings)> {
            let mut s = base.clone();
            match name {
                "inner" => {
                    s.jump = Some(vec![Sp::new("outer".into())]);
                    Some(("10.0.0.2".into(), s))
                }
                "outer" => Some(("10.0.0.1".into(), s)),
                _ => None,
            }
        };
        let t = SshTarget::from_settings("10.0.0.3", &node, &resolver, dir.path()).unwrap();
        let hosts: Vec<_> = t.jump.iter().map(|j| j.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2"]);
        assert!(t.jump.iter().all(|j| j.jump.is_empty()));

        let mut looping = base.clone();
        looping.jump = Some(vec![Sp::new("self".into())]);
        let l2 = looping.clone();
        let err = SshTarget::from_settings(
            "x",
            &looping,
            &|_| Some(("y".into(), l2.clone())),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, TargetError::JumpLoop(_)));
        let err = SshTarget::from_settings("x", &node, &|_| None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("no jump host named `inner`"));
    }
}
