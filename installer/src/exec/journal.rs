//! The journal: what was applied to each subject, with which input hash.
//!
//! One append-only file of JSON lines per subject (a node, or `site/<name>`
//! for a site's cluster tasks) under `<state dir>/journal/` (0700, files
//! 0600). Records name the playbook and step; a node's tasks of different
//! layers share its file.
//! A step's line records the hash of its resolved inputs (rendered
//! parameters and content, the host's machine id, and its boot id for kinds
//! whose effect a reboot undoes) and its result. A later run skips a step
//! whose hash is recorded as applied: a speed-up, not a source of truth —
//! `--force` ignores it. Handler notifications are journalled too, so a run
//! interrupted between a change and its handler still runs the handler when
//! resumed. Lines are written as they happen and the file is fsynced when the
//! host finishes; a truncated last line (a crash mid-write) is ignored.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of a host's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A step ran successfully.
    Step {
        /// Playbook name.
        playbook: String,
        /// Step name.
        step: String,
        /// Hash of its resolved inputs.
        hash: String,
        /// `ok` or `changed`.
        status: String,
        /// When (RFC 3339 UTC).
        ts: String,
    },
    /// A changed step notified a handler.
    Notify {
        /// Playbook name.
        playbook: String,
        /// Handler name.
        handler: String,
    },
    /// A notified handler ran successfully.
    Handled {
        /// Playbook name.
        playbook: String,
        /// Handler name.
        handler: String,
    },
    /// Something a step remembers about its subject for later runs (the
    /// last record of a key wins), e.g. the size and times of a file it placed.
    Memo {
        /// What is remembered.
        key: String,
        /// Its value.
        value: String,
    },
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file could not be opened, read or written.
    #[error("journal {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The journal of one subject: what it says, and the open file to append to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    applied: HashMap<(String, String), String>,
    pending: BTreeSet<(String, String)>,
    memos: HashMap<String, String>,
}

impl Journal {
    /// Opens (creating) `<dir>/<subject>.jsonl` and reads what it holds.
    pub fn open(dir: &Path, subject: &str) -> Result<Journal, JournalError> {
        let path = dir.join(format!("{}.jsonl", super::outputs::file_name(subject)));
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        crate::state::private_dir(dir).map_err(io)?;
        let mut applied = HashMap::new();
        let mut pending = BTreeSet::new();
        let mut memos = HashMap::new();
        let mut needs_newline = false;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).split(b'\n') {
                let line = line.map_err(io)?;
                // A line cut by a crash does not parse: ignore it.
                needs_newline = false;
                match serde_json::from_slice::<Record>(&line) {
                    Ok(Record::Step {
                        playbook,
                        step,
                        hash,
                        ..
                    }) => {
                        applied.insert((playbook, step), hash);
                    }
                    Ok(Record::Notify { playbook, handler }) => {
                        pending.insert((playbook, handler));
                    }
                    Ok(Record::Handled { playbook, handler }) => {
                        pending.remove(&(playbook, handler));
                    }
                    Ok(Record::Memo { key, value }) => {
                        memos.insert(key, value);
                    }
                    Err(_) => needs_newline = !line.is_empty(),
                }
            }
        }
        let mut file = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if needs_newline {
            // Keep the torn line on its own so the next record parses.
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Journal {
            path,
            file,
            applied,
            pending,
            memos,
        })
    }

    /// What a step remembered under `key` on an earlier run.
    pub fn memo(&self, key: &str) -> Option<&str> {
        self.memos.get(key).map(String::as_str)
    }

    /// Whether `step` of `playbook` was applied with exactly this input hash.
    pub fn is_applied(&self, playbook: &str, step: &str, hash: &str) -> bool {
        self.applied
            .get(&(playbook.to_string(), step.to_string()))
            .is_some_and(|h| h == hash)
    }

    /// Handlers of `playbook` notified by an earlier run and not yet run.
    pub fn pending_handlers(&self, playbook: &str) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(p, _)| p == playbook)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Appends one record (written at once; fsynced by [`Journal::sync`]).
    pub fn append(&mut self, record: Record) -> Result<(), JournalError> {
        match &record {
            Record::Step {
                playbook,
                step,
                hash,
                ..
            } => {
                self.applied
                    .insert((playbook.clone(), step.clone()), hash.clone());
            }
            Record::Notify { playbook, handler } => {
                self.pending.insert((playbook.clone(), handler.clone()));
            }
            Record::Handled { playbook, handler } => {
                self.pending.remove(&(playbook.clone(), handler.clone()));
            }
            Record::Memo { key, value } => {
                self.memos.insert(key.clone(), value.clone());
            }
        }
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Forces the journal to disk.
    pub fn sync(&self) -> Result<(), JournalError> {
        self.file.sync_all().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(s: &str, hash: &str) -> Record {
        Record::Step {
            playbook: "os".into(),
            step: s.into(),
            hash: hash.into(),
            status: "changed".into(),
            ts: "t".into(),
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path(), "edge-1").unwrap();
            j.append(step("a", "h1")).unwrap();
            j.append(Record::Notify {
                playbook: "os".into(),
                handler: "restart".into(),
            })
            .unwrap();
            j.sync().unwrap();
        }
        // A crash in the middle of writing the next line.
        let path = dir.path().join("edge-1.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"t":"step","playbook":"os","step":"b","ha"#)
            .unwrap();
        drop(f);
        let mut j = Journal::open(dir.path(), "edge-1").unwrap();
        assert!(j.is_applied("os", "a", "h1"));
        assert!(!j.is_applied("os", "a", "other"));
        assert!(!j.is_applied("os", "b", "h2"));
        assert_eq!(j.pending_handlers("os"), vec!["restart"]);
        j.append(step("b", "h2")).unwrap();
        j.append(Record::Handled {
            playbook: "os".into(),
            handler: "restart".into(),
        })
        .unwrap();
        drop(j);
        let j = Journal::open(dir.path(), "edge-1").unwrap();
        assert!(
            j.is_applied("os", "b", "h2"),
            "a record after a torn line parses"
        );
        assert!(j.pending_handlers("os").is_empty());
    }

    #[test]
    fn host_names_become_safe_file_names() {
        assert_eq!(crate::exec::outputs::file_name("../etc/x y"), ".._etc_x_y");
    }
}
