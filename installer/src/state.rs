//! The state directory: what edgeforge keeps between runs (run lock,
//! journals, published outputs, fetched kubeconfigs, lab keys).
//!
//! The one place that resolves it: `$XDG_STATE_HOME/edgeforge`, else
//! `~/.local/state/edgeforge`. Everything under it may hold secrets, so
//! directories are created 0700 and files written 0600, atomically (a
//! temporary name, then a rename).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The root of edgeforge's state: `$XDG_STATE_HOME/edgeforge`, else `~/.local/state/edgeforge`.
pub fn root() -> PathBuf {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".local/state"))
        .join("edgeforge")
}

/// The state of one inventory (by its `name`, else its file stem).
pub fn for_inventory(name: &str) -> PathBuf {
    root().join(name)
}

/// The keys and known_hosts of a VM lab.
pub fn lab_dir(lab: &str) -> PathBuf {
    root().join("lab").join(lab)
}

/// Creates `dir` (and missing parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode through `create`: set it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` as a 0600 file, atomically; the parent is made private.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_private(&dir.join("token"), b"s").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("token")), 0o600);
        write_private(&dir.join("token"), b"t").unwrap();
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"t");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
