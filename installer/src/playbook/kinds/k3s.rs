//! k3s kinds that a file or a command step cannot express.
//!
//! `kubeconfig_fetch` reads the kubeconfig k3s wrote on a server
//! (`/etc/rancher/k3s/k3s.yaml`) over the host's connection, rewrites it for
//! the operator ([`crate::kube::kubeconfig::rewrite`]: the site's name, the
//! API address the operator reaches) and keeps it 0600 in the state
//! directory as `kubeconfig/<site>.yaml`, where the site's cluster target
//! reads it. `registry_tls` places the CA, client certificate and client
//! key of every `registryConfigs` entry of the node under
//! `/etc/rancher/k3s/tls/<registry>/`, where registries.yaml points.

use serde::{Deserialize, Serialize};

use super::{Content, Params, StepEnv, StepError, StepReport};
use crate::transport::{PutOutcome, PutRequest, PutSource};

use crate::context::REGISTRY_TLS_DIR;

/// Parameters of `kubeconfig_fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigFetchParams {
    /// The kubeconfig k3s writes on the server.
    #[serde(default = "default_k3s_yaml")]
    pub path: String,
    /// The site: names the file and the kubeconfig's cluster, user and context.
    pub site: String,
    /// The API server URL the operator reaches.
    pub server: String,
}

/// Parameters of `registry_tls` (none: the files come from the node's `k3s.registry_tls`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTlsParams {}

impl Params for KubeconfigFetchParams {
    const KEY: &'static str = "kubeconfig_fetch";
    // The server's file can change under the same inputs (a reinstalled cluster).
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if !is_file_name(&self.site) {
            return Err(StepError::Invalid(format!(
                "kubeconfig_fetch: site `{}` cannot name a file",
                self.site
            )));
        }
        let raw = env
            .transport()?
            .get(&self.path, env.privileged)
            .await?
            .ok_or_else(|| {
                StepError::Invalid(format!(
                    "{} does not exist on the server: k3s writes it when it starts; check that \
                     k3s runs there (systemctl status k3s, journalctl -u k3s)",
                    self.path
                ))
            })?;
        let text = String::from_utf8(raw)
            .map_err(|_| StepError::Invalid(format!("{} is not UTF-8 text", self.path)))?;
        let rewritten =
            crate::kube::kubeconfig::rewrite(&text, &self.path, &self.site, &self.server)
                .map_err(|e| StepError::Invalid(e.to_string()))?;
        let Some(state) = env.state_dir else {
            return Ok(StepReport {
                stdout: "check mode: the kubeconfig is read but not kept".into(),
                ..StepReport::default()
            });
        };
        let dest = state.join("kubeconfig").join(format!("{}.yaml", self.site));
        if std::fs::read(&dest).is_ok_and(|old| old == rewritten.as_bytes()) {
            return Ok(StepReport::default());
        }
        crate::state::write_private(&dest, rewritten.as_bytes()).map_err(|source| {
            StepError::Local {
                path: dest.clone(),
                source,
            }
        })?;
        Ok(StepReport {
            changed: true,
            stdout: format!("kubeconfig of {} written to {}", self.site, dest.display()),
            ..StepReport::default()
        })
    }
}

impl Params for RegistryTlsParams {
    const KEY: &'static str = "registry_tls";
    // Reads controller files and secrets when it runs.
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let entries = env.ctx["node"]["k3s"]["registry_tls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let t = env.transport()?;
        let mut changed = false;
        for entry in entries {
            let host = entry["host"].as_str().unwrap_or_default();
            if !is_file_name(host) {
                return Err(StepError::Invalid(format!(
                    "registry `{host}` cannot name a directory"
                )));
            }
            let dir = format!("{REGISTRY_TLS_DIR}/{host}");
            let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
            for (key, name) in [("ca_file", "ca.crt"), ("cert_file", "client.crt")] {
                if let Some(path) = entry[key].as_str() {
                    let bytes = std::fs::read(path).map_err(|source| StepError::Local {
                        path: path.into(),
                        source,
                    })?;
                    files.push((format!("{dir}/{name}"), bytes, 0o644));
                }
            }
            if let Some(key) = env.ctx["secrets"][format!("registry/{host}/key")].as_str() {
                files.push((format!("{dir}/client.key"), key.as_bytes().to_vec(), 0o600));
            }
            if files.is_empty() {
                continue;
            }
            let mkdir = format!(
                "[ -d {d} ] || {{ mkdir -p {d} && chmod 0700 {d} && echo made; }}",
                d = crate::sh::quote(&dir)
            );
            if !env.check {
                let out = env.exec(&mkdir, None, None).await?;
                if out.status != 0 {
                    return Err(StepError::Remote {
                        status: out.status,
                        stderr: super::tail(&String::from_utf8_lossy(&out.stderr), 10),
                    });
                }
                changed |= String::from_utf8_lossy(&out.stdout).contains("made");
            }
            for (path, bytes, mode) in &files {
                if env.check {
                    let same = t.get(path, env.privileged).await?.as_deref() == Some(bytes);
                    changed |= !same;
                    continue;
                }
                let outcome = t
                    .put(PutRequest {
                        path,
                        source: PutSource::Bytes(bytes),
                        sha256: None,
                        mode: *mode,
                        owner: Some("0:0"),
                        privileged: env.privileged,
                    })
                    .await?;
                changed |= outcome == PutOutcome::Written;
            }
        }
        Ok(StepReport {
            changed,
            ..StepReport::default()
        })
    }
}

/// A name that is one path component (a site, a registry host with its port).
fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn default_k3s_yaml() -> String {
    "/etc/rancher/k3s/k3s.yaml".into()
}
