//! Transport: how edgeforge runs commands and places files on a host.
//!
//! [`Transport`] is the seam between the step engine and the outside world.
//! `ssh` (russh + russh-sftp) is the real implementation for remote hosts;
//! `local` runs on this machine (the controller, and unit tests of steps).
//! Both keep one long-lived shell per host and send framed commands to it, so
//! a step costs a write to a running shell, not a new channel.

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;

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
    /// The command did not finish in time.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
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
