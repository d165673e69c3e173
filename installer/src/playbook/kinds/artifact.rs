//! The `artifact` kind: a verified file from the controller's artifact cache
//! (the k3s binary, air-gap image tarballs) placed on a host, skipped when the
//! host already has the same sha256. The cache is `$EDGEFORGE_CACHE`, else the
//! XDG cache directory, as for `edgeforge images pull`; a missing artifact is
//! an error that names it and the command that fetches or imports it.
//!
//! Artifacts are large (a k3s binary is ~70 MB, its images tarball ~200 MB),
//! so hashing them on every run would cost more than everything else a warm
//! run does. After placing or confirming one, the step remembers (in the
//! node's journal) the file's size, mtime, ctime and inode; a later run whose
//! `stat` shows the same four trusts the file without hashing it. Anything
//! that touched the file changes its ctime, and `--force` hashes again.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Content, Mode, Params, StepEnv, StepError, StepReport};

use crate::facts::Facts;

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

impl Params for ArtifactParams {
    const KEY: &'static str = "artifact";
    // It checks the host itself, cheaply: see the module docs.
    const JOURNALED: bool = false;

    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        Ok(Some(cached_artifact(self, env.facts()?)?))
    }

    // No bulk probe either: that would hash the file.

    async fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let sha = match content {
            Some(Content::File { sha256, .. }) => sha256.clone(),
            _ => return Err(StepError::Invalid("an artifact is a cached file".into())),
        };
        let key = format!("artifact-stat {} {sha}", self.dest);
        let stat = format!(
            "stat -c '%s %y %z %i %a %U:%G' -- {} 2>/dev/null",
            crate::sh::quote(&self.dest)
        );
        if let Some(recorded) = env.reach.recall(&key) {
            let now = env.exec(&stat, None, None).await?;
            if now.status == 0 && String::from_utf8_lossy(&now.stdout).trim() == recorded {
                return Ok(StepReport {
                    stdout: "as placed before (size, times and inode unchanged)".into(),
                    ..StepReport::default()
                });
            }
        }
        let report =
            super::place::place(content, env, &self.dest, self.mode, self.owner.as_deref()).await?;
        if !env.check {
            let now = env.exec(&stat, None, None).await?;
            if now.status == 0 {
                env.reach
                    .remember(&key, String::from_utf8_lossy(&now.stdout).trim());
            }
        }
        Ok(report)
    }
}

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
