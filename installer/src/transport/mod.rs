//! Transport: how edgeforge runs commands and places files on a host.
//!
//! [`Transport`] is the seam between the step engine and the outside world.
//! `ssh` (russh + russh-sftp) is the real implementation for remote hosts;
//! `local` runs on this machine (the controller, and unit tests of steps).
//! Both keep a few long-lived shells per host (at most two for the user and
//! two for root) and send framed commands to them, so a step costs a write to
//! a running shell, not a new channel. Files are compared by sha256 first and
//! written to a temporary name, then renamed into place.

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;

mod frame;
pub mod known_hosts;
pub mod local;
mod put;
pub mod ssh;
pub mod target;

pub use frame::FrameError as ShellError;
pub use known_hosts::{HostKeyCheck, HostKeyError};
pub use local::LocalTransport;
pub use put::{FileProbe, probe_files};
pub use ssh::SshTransport;
pub use target::{Secret, SshTarget, SudoMode, TargetError};

/// What to run on a host.
#[derive(Debug, Clone, Copy)]
pub struct ExecRequest<'a> {
    /// A POSIX shell script (run by `sh`), e.g. `test -f /etc/foo`.
    pub script: &'a str,
    /// Bytes fed to the script's standard input (closed after them).
    pub stdin: Option<&'a [u8]>,
    /// Run as root (directly when the user is root, else through sudo).
    pub privileged: bool,
    /// Give up (and fail the step) after this long.
    pub timeout: Option<Duration>,
}

/// What a command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; 128 + N when killed by signal N.
    pub status: i32,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
}

/// Where the bytes of a file to place come from.
#[derive(Debug, Clone, Copy)]
pub enum PutSource<'a> {
    /// Bytes in memory (rendered templates, small files).
    Bytes(&'a [u8]),
    /// A file on the controller, streamed (artifacts, large uploads).
    File(&'a Path),
}

/// A file to place on a host.
#[derive(Debug, Clone, Copy)]
pub struct PutRequest<'a> {
    /// Absolute destination path.
    pub path: &'a str,
    /// The content.
    pub source: PutSource<'a>,
    /// Hex sha256 of the content, if the caller already knows it.
    pub sha256: Option<&'a str>,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    /// Owner and group (`user:group`), if not the connecting user.
    pub owner: Option<&'a str>,
    /// Write as root.
    pub privileged: bool,
}

/// Whether a put changed the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The file already had this content, mode and owner: nothing was sent.
    Unchanged,
    /// The file was written (to a temporary name, then renamed into place).
    Written,
}

/// Errors of a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not be reached or the session died.
    #[error("connection to {host} failed: {reason}")]
    Connect {
        /// user@host:port as dialled.
        host: String,
        /// What went wrong, for a person.
        reason: String,
    },
    /// The host presented a key that is not trusted.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// No configured identity was accepted.
    #[error(
        "authentication to {host} failed (tried: {tried}); check that one of these keys is in the user's authorized_keys"
    )]
    Auth {
        /// user@host:port as dialled.
        host: String,
        /// The identities offered, e.g. `key ~/.ssh/id_ed25519, agent (2 keys)`.
        tried: String,
    },
    /// The command did not finish in time.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    /// The command shell on the host failed or ended.
    #[error("the command shell on {host} failed")]
    Shell {
        /// user@host:port.
        host: String,
        /// What the shell reported.
        #[source]
        source: ShellError,
    },
    /// A helper command of the transport itself (file check, rename) failed.
    #[error("{context} on {host} failed (exit status {status}){}", stderr_suffix(.stderr))]
    Command {
        /// user@host:port.
        host: String,
        /// What was being done, e.g. `placing /etc/hosts`.
        context: String,
        /// Its exit status.
        status: i32,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A local or remote I/O error outside a command.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else the transport reports, already phrased for a person.
    #[error("{0}")]
    Other(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

/// Runs commands and places files on one host. One instance per host, kept
/// for the whole run; safe to share between tasks.
pub trait Transport: Send + Sync {
    /// Runs a shell script and returns its status and output.
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>>;
    /// Places a file atomically, skipping it when content, mode and owner already match.
    fn put<'a>(&'a self, req: PutRequest<'a>) -> BoxFuture<'a, Result<PutOutcome, TransportError>>;
    /// Reads a file; `None` when it does not exist.
    fn get<'a>(
        &'a self,
        path: &'a str,
        privileged: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>>;
    /// Closes the connection cleanly.
    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>>;
}
