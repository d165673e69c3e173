//! Placement kinds: `template` (a tera template rendered on the controller)
//! and `copy` (a data file, a controller file or inline content), both put
//! atomically through [`Transport::put`](crate::transport::Transport::put),
//! which skips a file whose sha256, mode and owner already match.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Content, Mode, Params, StepEnv, StepError, StepReport};
use crate::data::DataDir;
use crate::sh::quote;
use crate::transport::{PutOutcome, PutRequest, PutSource};

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

impl Params for TemplateParams {
    const KEY: &'static str = "template";
    const RERUNNABLE: bool = true;

    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        Ok(Some(Content::Bytes(
            env.renderer.render(&self.src, env.ctx)?.into_bytes(),
        )))
    }

    fn placement(&self) -> Option<(&str, Option<Mode>, Option<&str>)> {
        Some((&self.dest, self.mode, self.owner.as_deref()))
    }

    async fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        place(content, env, &self.dest, self.mode, self.owner.as_deref()).await
    }
}

impl Params for CopyParams {
    const KEY: &'static str = "copy";
    const RERUNNABLE: bool = true;

    fn content(&self, env: &StepEnv<'_>) -> Result<Option<Content>, StepError> {
        Ok(Some(match (&self.src, &self.content) {
            (None, Some(c)) => Content::Bytes(c.clone().into_bytes()),
            (Some(src), None) => local_content(env.data, src)?,
            _ => {
                return Err(StepError::Invalid(
                    "copy needs exactly one of `src` and `content`".into(),
                ));
            }
        }))
    }

    fn placement(&self) -> Option<(&str, Option<Mode>, Option<&str>)> {
        Some((&self.dest, self.mode, self.owner.as_deref()))
    }

    async fn apply<'a>(
        &'a self,
        content: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        place(content, env, &self.dest, self.mode, self.owner.as_deref()).await
    }
}

/// Compares, diffs and puts `content` at `dest` (template, copy, artifact).
pub(crate) async fn place(
    content: Option<&Content>,
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
    let content = content.ok_or_else(|| StepError::Invalid("nothing to place".into()))?;
    let new_bytes = match content {
        Content::Bytes(b) => Some(b.as_slice()),
        Content::File { .. } => None,
    };
    let want_diff = (env.diff || env.check) && new_bytes.is_some();
    let old = if want_diff {
        env.transport()?.get(dest, env.privileged).await?
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
        let out = env.exec(&script, None, None).await?;
        let current = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let content_changed = match (content, &old) {
            (Content::Bytes(b), Some(o)) => o != b,
            (Content::File { sha256, .. }, _) => {
                let sum = env
                    .exec(
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
            ..StepReport::default()
        });
    }
    let (source, sha) = match content {
        Content::Bytes(b) => (PutSource::Bytes(b), None),
        Content::File { path, sha256 } => (PutSource::File(path), Some(sha256.as_str())),
    };
    let outcome = env
        .transport()?
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
        ..StepReport::default()
    })
}

/// Reads a `src` for copy/script: relative → data directory, absolute → controller file.
pub(crate) fn local_content(data: &DataDir, src: &str) -> Result<Content, StepError> {
    let path = if src.starts_with('/') {
        Some(PathBuf::from(src))
    } else {
        data.path_of(src)
    };
    match path {
        Some(path) => {
            let sha256 = file_sha256(&path).map_err(|source| StepError::Local {
                path: path.clone(),
                source,
            })?;
            Ok(Content::File { path, sha256 })
        }
        None => Ok(Content::Bytes(data.read(src)?)),
    }
}

/// The sha256 of a controller file, hashed once per process while its
/// size, mtime and inode stay the same: a file copied to 200 hosts is read
/// once, not 200 times. (What is sent is hashed again as it is sent, or on
/// the host, so a file changed under the same stat is still caught.)
fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    type Stamp = (u64, i64, i64, u64, u64);
    static HASHED: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, (Stamp, String)>>> =
        std::sync::Mutex::new(None);
    let m = std::fs::metadata(path)?;
    let stamp = (m.len(), m.mtime(), m.mtime_nsec(), m.ino(), m.dev());
    let lock = || HASHED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((s, sha)) = lock().as_ref().and_then(|h| h.get(path))
        && *s == stamp
    {
        return Ok(sha.clone());
    }
    let (sha, _) = crate::artifacts::hash_file(path)?;
    lock()
        .get_or_insert_with(Default::default)
        .insert(path.to_path_buf(), (stamp, sha.clone()));
    Ok(sha)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_controller_file_is_hashed_again_once_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        let sha = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
        std::fs::write(&f, b"one").unwrap();
        assert_eq!(super::file_sha256(&f).unwrap(), sha(b"one"));
        assert_eq!(super::file_sha256(&f).unwrap(), sha(b"one"));
        // Same size, new content: the mtime (or inode) differs.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&f, b"two").unwrap();
        assert_eq!(super::file_sha256(&f).unwrap(), sha(b"two"));
        let g = dir.path().join("blob.new");
        std::fs::write(&g, b"three").unwrap();
        std::fs::rename(&g, &f).unwrap();
        assert_eq!(super::file_sha256(&f).unwrap(), sha(b"three"));
    }
}
