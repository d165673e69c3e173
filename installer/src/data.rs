//! The project's data files (images/, playbooks/, templates/) and the one
//! reader of them.
//!
//! The files are embedded into the binary as defaults so an installed
//! `edgeforge` works without the source tree; `--data-dir` points at a
//! directory that overrides them. Everything that reads a playbook, a
//! template, the artifact manifest or the base-image recipe goes through
//! [`DataDir`], so both sources behave the same.

use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

/// playbooks/ as it was at build time.
pub static PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../playbooks");
/// templates/ as it was at build time.
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");
/// images/ as it was at build time.
pub static IMAGES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../images");
/// inventory/lab.yaml: the lab `edgeforge apply` and `edgeforge lab up` bring up by default.
pub static LAB_INVENTORY: &str = include_str!("../../inventory/lab.yaml");

/// Where data files (playbooks/, templates/, images/) are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// The copy embedded in the binary at build time.
    Embedded,
    /// A directory given with `--data-dir`.
    Dir(PathBuf),
}

/// Errors of reading data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A data file is not in the data directory.
    #[error(
        "data file {path} not found in {where_}; check the name or pass --data-dir with a directory that has it"
    )]
    NotFound {
        /// Path relative to the data directory, e.g. `templates/os/hosts.j2`.
        path: String,
        /// Which data directory was searched.
        where_: String,
    },
    /// A data file could not be read.
    #[error("reading data file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file is not UTF-8.
    #[error("data file {0} is not UTF-8 text")]
    NotUtf8(String),
}

impl DataDir {
    /// The override directory when given, else the embedded data.
    pub fn new(dir: Option<&Path>) -> DataDir {
        dir.map_or(DataDir::Embedded, |d| DataDir::Dir(d.to_path_buf()))
    }

    /// Reads `rel` (e.g. `playbooks/os.yaml`) as text.
    pub fn read_text(&self, rel: &str) -> Result<String, DataError> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes).map_err(|_| DataError::NotUtf8(rel.to_string()))
    }

    /// Reads `rel` (e.g. `templates/os/hosts.j2`) as bytes.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, DataError> {
        match self {
            DataDir::Embedded => embedded_file(rel)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| self.not_found(rel)),
            DataDir::Dir(dir) => {
                let path = dir.join(rel);
                match std::fs::read(&path) {
                    Ok(b) => Ok(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(rel)),
                    Err(source) => Err(DataError::Read { path, source }),
                }
            }
        }
    }

    /// Whether `rel` exists in this data directory.
    pub fn exists(&self, rel: &str) -> bool {
        match self {
            DataDir::Embedded => embedded_file(rel).is_some(),
            DataDir::Dir(dir) => dir.join(rel).is_file(),
        }
    }

    /// The on-disk path of `rel` when the data is a directory (for streaming uploads).
    pub fn path_of(&self, rel: &str) -> Option<PathBuf> {
        match self {
            DataDir::Embedded => None,
            DataDir::Dir(dir) => Some(dir.join(rel)),
        }
    }

    /// Every file under `sub` (e.g. `templates`, `images/base`), as paths
    /// relative to the data directory.
    pub fn list(&self, sub: &str) -> Result<Vec<String>, DataError> {
        let mut out = Vec::new();
        match self {
            DataDir::Embedded => {
                let (top, rest) = sub.split_once('/').unwrap_or((sub, ""));
                let dir = match embedded_root(top) {
                    Some(root) if rest.is_empty() => Some(root),
                    Some(root) => root.get_dir(rest),
                    None => None,
                };
                if let Some(dir) = dir {
                    collect_embedded(dir, top, &mut out);
                }
            }
            DataDir::Dir(dir) => collect_dir(dir, &dir.join(sub), &mut out)?,
        }
        out.sort();
        Ok(out)
    }

    /// Names the data directory in messages.
    pub fn describe(&self) -> String {
        match self {
            DataDir::Embedded => "the data built into edgeforge".to_string(),
            DataDir::Dir(d) => d.display().to_string(),
        }
    }

    fn not_found(&self, rel: &str) -> DataError {
        DataError::NotFound {
            path: rel.to_string(),
            where_: self.describe(),
        }
    }
}

fn embedded_root(top: &str) -> Option<&'static Dir<'static>> {
    match top {
        "playbooks" => Some(&PLAYBOOKS),
        "templates" => Some(&TEMPLATES),
        "images" => Some(&IMAGES),
        _ => None,
    }
}

fn embedded_file(rel: &str) -> Option<&'static include_dir::File<'static>> {
    let (top, rest) = rel.split_once('/')?;
    embedded_root(top)?.get_file(rest)
}

fn collect_embedded(dir: &include_dir::Dir<'static>, prefix: &str, out: &mut Vec<String>) {
    for f in dir.files() {
        out.push(format!("{prefix}/{}", f.path().display()));
    }
    for d in dir.dirs() {
        collect_embedded(d, prefix, out);
    }
}

fn collect_dir(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), DataError> {
    let read_err = |source| DataError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(read_err(source)),
    };
    for entry in entries {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_dir(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_file_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDir::new(Some(dir.path()))
            .read("playbooks/nope.yaml")
            .unwrap_err();
        assert!(
            err.to_string().contains("playbooks/nope.yaml not found in"),
            "{err}"
        );
    }

    #[test]
    fn embedded_and_directory_data_list_the_same_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let on_disk = DataDir::new(Some(&root)).list("playbooks").unwrap();
        let embedded = DataDir::Embedded.list("playbooks").unwrap();
        assert_eq!(on_disk, embedded);
        assert!(
            embedded.iter().any(|p| p == "playbooks/os.yaml"),
            "{embedded:?}"
        );
        assert!(DataDir::Embedded.exists("playbooks/os.yaml"));
        assert!(!DataDir::Embedded.exists("playbooks/nope.yaml"));
        let base = DataDir::Embedded.list("images/base").unwrap();
        assert_eq!(base, DataDir::new(Some(&root)).list("images/base").unwrap());
        assert!(
            base.iter().any(|p| p == "images/base/packages.txt"),
            "{base:?}"
        );
    }
}
