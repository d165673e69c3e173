//! The run lock: one apply per inventory at a time.
//!
//! `<state dir>/lock` is held with an exclusive advisory lock (fs4) for the
//! whole run and records its holder (pid, host, start time, command). A
//! second apply is refused with a message naming the holder. The lock dies
//! with its process, so a crashed run never blocks the next one; the holder
//! record it left behind is reported. A lock held by a pid that no longer
//! exists (a child inherited it) is reported as stale, with what to do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

/// Who holds (or held) the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name of the machine running it.
    pub host: String,
    /// Start time, UTC (RFC 3339).
    pub started: String,
    /// The command line.
    pub command: String,
}

/// Errors of taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the lock.
    #[error(
        "another apply is running on this inventory: {}; wait for it to finish, or stop it (kill {}) and run again",
        describe(holder.as_ref()),
        holder.as_ref().map_or("its process".to_string(), |h| h.pid.to_string())
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Its recorded holder, when readable.
        holder: Option<LockHolder>,
    },
    /// The lock is held, but the recorded holder process is gone.
    #[error(
        "the lock {path} is held, but its recorded holder ({}) no longer runs; a child process probably inherited it: find it with `fuser {path}` and stop it",
        describe(Some(holder)),
        path = path.display()
    )]
    Stale {
        /// The lock file.
        path: PathBuf,
        /// The recorded holder.
        holder: LockHolder,
    },
    /// The lock file could not be created or written.
    #[error("using the lock file {path}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released (and its record cleared) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The record a previous run left without releasing (it crashed or was killed).
    pub previous: Option<LockHolder>,
}

impl RunLock {
    /// Takes the lock in `state_dir` for `command`, or says who holds it.
    pub fn acquire(state_dir: &Path, command: &str) -> Result<RunLock, LockError> {
        let path = state_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        crate::state::private_dir(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut recorded = String::new();
        let locked = file.try_lock_exclusive().map_err(io)?;
        file.read_to_string(&mut recorded).map_err(io)?;
        let holder: Option<LockHolder> = serde_json::from_str(recorded.trim()).ok();
        if !locked {
            return Err(match holder {
                Some(h) if h.host == this_host() && !pid_alive(h.pid) => {
                    LockError::Stale { path, holder: h }
                }
                holder => LockError::Held { path, holder },
            });
        }
        let me = LockHolder {
            pid: std::process::id(),
            host: this_host(),
            started: super::events::utc_now(),
            command: command.to_string(),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        let line = serde_json::to_string(&me).unwrap_or_default();
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(RunLock {
            file,
            path: path.clone(),
            previous: holder,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty record means "released cleanly"; the flock goes with the file.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
        let _ = FileExt::unlock(&self.file);
    }
}

fn describe(holder: Option<&LockHolder>) -> String {
    match holder {
        Some(h) => format!(
            "pid {} on {} since {} (`{}`)",
            h.pid, h.host, h.started, h.command
        ),
        None => "holder unknown".to_string(),
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_apply_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "edgeforge apply -i a.yaml").unwrap();
        let err = RunLock::acquire(dir.path(), "edgeforge apply -i a.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("`edgeforge apply -i a.yaml`"), "{msg}");
        drop(first);
        let again = RunLock::acquire(dir.path(), "x").unwrap();
        assert_eq!(again.previous, None, "a clean release leaves no record");
    }

    #[test]
    fn a_crashed_run_is_reported_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockHolder {
            pid: 999_999,
            host: this_host(),
            started: "2026-01-01T00:00:00Z".into(),
            command: "old".into(),
        };
        std::fs::write(
            dir.path().join("lock"),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let lock = RunLock::acquire(dir.path(), "new").unwrap();
        assert_eq!(lock.previous, Some(dead));
    }

    #[test]
    fn a_lock_held_for_a_dead_pid_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder_fd = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        assert!(holder_fd.try_lock_exclusive().unwrap());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = LockHolder {
            pid: dead_pid,
            host: this_host(),
            started: "t".into(),
            command: "c".into(),
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let err = RunLock::acquire(dir.path(), "x").unwrap_err();
        assert!(matches!(err, LockError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("fuser"), "{err}");
    }
}
