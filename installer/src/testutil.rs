//! Test helpers (compiled only for unit tests): a transport that runs every
//! request on this machine with `sh`, one process per request. Tests point
//! steps at paths inside their own temp directories.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::transport::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, PutSource, Transport, TransportError,
};

/// Runs requests locally through `sh -c`; counts round trips; can be told to
/// fail every request after the N-th (a host that dies mid-run).
#[derive(Default)]
pub struct ShellTransport {
    /// Prepended to PATH: a directory of stand-in commands (systemctl, apt-get, ...).
    pub fake_bin: Option<PathBuf>,
    /// Requests made so far (exec + put + get).
    pub round_trips: AtomicUsize,
    /// Fail every request after this many.
    pub fail_after: Option<usize>,
    /// Scripts seen, for assertions about what was sent.
    pub scripts: Mutex<Vec<String>>,
}

impl ShellTransport {
    /// A transport with stand-in commands from `fake_bin`.
    pub fn with_fake_bin(dir: PathBuf) -> ShellTransport {
        ShellTransport {
            fake_bin: Some(dir),
            ..ShellTransport::default()
        }
    }

    fn count(&self) -> Result<(), TransportError> {
        let n = self.round_trips.fetch_add(1, Ordering::SeqCst);
        match self.fail_after {
            Some(limit) if n >= limit => Err(TransportError::Connect {
                host: "test".into(),
                reason: "connection lost (simulated)".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Transport for ShellTransport {
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            self.count()?;
            self.scripts.lock().unwrap().push(req.script.to_string());
            // Like a real remote shell reading its commands, the script is not
            // on the command line: it is read from a file.
            let script_file = tempfile::NamedTempFile::new().map_err(|e| TransportError::Io {
                context: "writing the script".into(),
                source: e,
            })?;
            std::fs::write(script_file.path(), req.script).map_err(|e| TransportError::Io {
                context: "writing the script".into(),
                source: e,
            })?;
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg(script_file.path());
            if let Some(bin) = &self.fake_bin {
                let path = std::env::var("PATH").unwrap_or_default();
                cmd.env("PATH", format!("{}:{path}", bin.display()));
            }
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let io = |e| TransportError::Io {
                context: "running sh".into(),
                source: e,
            };
            let mut child = cmd.spawn().map_err(io)?;
            if let Some(mut stdin) = child.stdin.take() {
                use tokio::io::AsyncWriteExt;
                if let Some(bytes) = req.stdin {
                    // A script that exits without reading its input is fine.
                    match stdin.write_all(bytes).await {
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(io(e)),
                        _ => {}
                    }
                }
            }
            let out = child.wait_with_output().await.map_err(io)?;
            Ok(ExecOutput {
                status: out.status.code().unwrap_or(128),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }

    fn put<'a>(&'a self, req: PutRequest<'a>) -> BoxFuture<'a, Result<PutOutcome, TransportError>> {
        Box::pin(async move {
            use std::os::unix::fs::PermissionsExt;
            self.count()?;
            let io = |e| TransportError::Io {
                context: format!("writing {}", req.path),
                source: e,
            };
            let bytes = match req.source {
                PutSource::Bytes(b) => b.to_vec(),
                PutSource::File(p) => std::fs::read(p).map_err(io)?,
            };
            let same_content = std::fs::read(req.path)
                .map(|old| Sha256::digest(&old) == Sha256::digest(&bytes))
                .unwrap_or(false);
            let same_mode = std::fs::metadata(req.path)
                .map(|m| m.permissions().mode() & 0o7777 == req.mode)
                .unwrap_or(false);
            if same_content && same_mode {
                return Ok(PutOutcome::Unchanged);
            }
            let tmp = format!("{}.ef-tmp", req.path);
            std::fs::write(&tmp, &bytes).map_err(io)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(req.mode))
                .map_err(io)?;
            std::fs::rename(&tmp, req.path).map_err(io)?;
            Ok(PutOutcome::Written)
        })
    }

    fn get<'a>(
        &'a self,
        path: &'a str,
        _privileged: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        Box::pin(async move {
            self.count()?;
            match std::fs::read(path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(TransportError::Io {
                    context: format!("reading {path}"),
                    source: e,
                }),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Writes an executable stand-in command `name` with the given sh body into `dir`.
pub fn fake_command(dir: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
