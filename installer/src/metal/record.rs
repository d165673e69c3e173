//! The install journal of one node: which stages of its bare-metal install
//! are done, for which install spec, how long each took, and where the last
//! attempt stopped. One JSON file per node, `<state>/install/<node>.json`
//! (0600), rewritten atomically after every stage, so an install killed at
//! any point resumes at the stage it was in.
//!
//! The spec is a hash of what the install writes (the OS image, the disk,
//! the node's keys and user): a finished install whose spec still matches is
//! left alone; one whose spec drifted is reported and redone only when the
//! operator asks (`--recreate`), like a VM's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One node's install journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The spec hash of the install the stages belong to.
    pub spec: String,
    /// When this install started (seconds since the Unix epoch).
    pub started: u64,
    /// The stages done, in order.
    pub stages: Vec<StageDone>,
    /// When the installed system first answered SSH: the install is complete.
    #[serde(default)]
    pub completed: Option<u64>,
    /// Where the last attempt failed, if it did.
    #[serde(default)]
    pub failed: Option<StageFailed>,
}

/// A stage that finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDone {
    /// The stage name (`power-off`, `write-image`, ...).
    pub stage: String,
    /// When it finished (seconds since the Unix epoch).
    pub at: u64,
    /// How long it took, in seconds.
    pub secs: f64,
}

/// A stage that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFailed {
    /// The stage name.
    pub stage: String,
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// The error, as printed.
    pub error: String,
}

/// Why the journal cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read or written.
    #[error("{what} the install journal {}", path.display())]
    Io {
        /// Reading or writing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a journal.
    #[error("the install journal {} is damaged; delete it to start the install over", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl InstallRecord {
    /// The journal file of `node` in the state directory `state_dir`.
    pub fn path(state_dir: &Path, node: &str) -> PathBuf {
        state_dir.join("install").join(format!("{node}.json"))
    }

    /// Reads `path`; a missing file is an empty journal.
    pub fn load(path: &Path) -> Result<InstallRecord, RecordError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| RecordError::Damaged {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(InstallRecord::default()),
            Err(source) => Err(RecordError::Io {
                what: "reading",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the journal to `path` (0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::state::write_private(path, &text).map_err(|source| RecordError::Io {
            what: "writing",
            path: path.to_owned(),
            source,
        })
    }

    /// A fresh journal for an install of `spec` starting now.
    pub fn begin(spec: &str) -> InstallRecord {
        InstallRecord {
            spec: spec.to_owned(),
            started: now(),
            ..InstallRecord::default()
        }
    }

    /// The record of `stage`, if it is done.
    pub fn done(&self, stage: &str) -> Option<&StageDone> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// Marks `stage` done after `secs` seconds.
    pub fn finish_stage(&mut self, stage: &str, secs: f64) {
        self.stages.retain(|s| s.stage != stage);
        self.stages.push(StageDone {
            stage: stage.to_owned(),
            at: now(),
            secs,
        });
        self.failed = None;
    }

    /// Notes that `stage` failed with `error`.
    pub fn fail_stage(&mut self, stage: &str, error: &str) {
        self.failed = Some(StageFailed {
            stage: stage.to_owned(),
            at: now(),
            error: error.to_owned(),
        });
    }

    /// `eject 0.3 s, power-off 4.1 s, ...`: the stages done and their times.
    pub fn timings(&self) -> String {
        self.stages
            .iter()
            .map(|s| format!("{} {:.1} s", s.stage, s.secs))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_survive_a_reload_and_a_failure_is_cleared_by_the_next_success() {
        let tmp = tempfile::tempdir().unwrap();
        let path = InstallRecord::path(tmp.path(), "metal-1");
        assert_eq!(
            InstallRecord::load(&path).unwrap(),
            InstallRecord::default()
        );
        let mut r = InstallRecord::begin("spec-1");
        r.finish_stage("eject", 0.3);
        r.fail_stage("power-off", "the BMC did not answer");
        r.save(&path).unwrap();
        let mut back = InstallRecord::load(&path).unwrap();
        assert_eq!(back, r);
        assert!(back.done("eject").is_some() && back.done("power-off").is_none());
        assert_eq!(back.failed.as_ref().unwrap().stage, "power-off");
        back.finish_stage("power-off", 3.0);
        assert!(back.failed.is_none());
        assert_eq!(back.timings(), "eject 0.3 s, power-off 3.0 s");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            InstallRecord::load(&path),
            Err(RecordError::Damaged { .. })
        ));
    }
}
