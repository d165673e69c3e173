//! [`LocalTransport`]: the [`Transport`] trait on the controller itself.
//!
//! It spawns `sh` as a child process and speaks the same framed protocol as
//! the SSH transport (see `frame`), so steps that run on the controller, and
//! unit tests of steps, exercise the same code path as remote hosts. Bulk
//! uploads are a local file copy.

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::frame::{
    Chunk, FramedShell, PoolError, ShellIo, ShellPool, sudo_handshake, sudo_shell_command,
};
use super::put::{self, FileBackend};
use super::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, PutSource, Transport, TransportError,
};

/// Runs commands on this machine through long-lived framed `sh` processes.
pub struct LocalTransport {
    label: String,
    is_root: bool,
    /// Directories put in front of `PATH` for its shells (stand-in commands in tests).
    path_prefix: Option<std::ffi::OsString>,
    user: ShellPool<LocalIo>,
    root: ShellPool<LocalIo>,
}

impl LocalTransport {
    /// A transport for this machine; privileged commands use `sudo -n` unless already root.
    pub fn new() -> Self {
        // /proc/self is owned by the effective uid of the process.
        let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        LocalTransport {
            label: "localhost".into(),
            is_root,
            path_prefix: None,
            user: ShellPool::new(2),
            root: ShellPool::new(2),
        }
    }

    /// A transport whose shells find commands in `dir` before the rest of `PATH`.
    pub fn with_path_prefix(dir: &std::path::Path) -> Self {
        let mut path = dir.as_os_str().to_owned();
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(":");
            path.push(rest);
        }
        LocalTransport {
            path_prefix: Some(path),
            ..LocalTransport::new()
        }
    }

    async fn open(&self, privileged: bool) -> Result<FramedShell<LocalIo>, PoolError> {
        let sudo = privileged && !self.is_root;
        let (program, args, tokens) = if sudo {
            let (cmd, tokens) = sudo_shell_command(false);
            ("sh", vec!["-c".to_string(), cmd], Some(tokens))
        } else {
            ("sh", Vec::new(), None)
        };
        let mut io =
            LocalIo::spawn(program, &args, self.path_prefix.as_deref()).map_err(|source| {
                PoolError::Open(TransportError::Io {
                    context: "cannot start a local `sh`".into(),
                    source,
                })
            })?;
        if let Some(tokens) = tokens {
            sudo_handshake(&mut io, &tokens, None)
                .await
                .map_err(PoolError::Frame)?;
        }
        FramedShell::start(io).await.map_err(PoolError::Frame)
    }

    fn map(&self, e: PoolError) -> TransportError {
        match e {
            PoolError::Timeout(t) => TransportError::Timeout(t),
            PoolError::Frame(source) => TransportError::Shell {
                host: self.label.clone(),
                source,
            },
            PoolError::Open(e) => e,
        }
    }
}

impl Default for LocalTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport for LocalTransport {
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        async move {
            let pool = if req.privileged && !self.is_root {
                &self.root
            } else {
                &self.user
            };
            pool.run(
                || self.open(req.privileged),
                req.script,
                req.stdin,
                req.timeout,
            )
            .await
            .map_err(|e| self.map(e))
        }
        .boxed()
    }

    fn put<'a>(&'a self, req: PutRequest<'a>) -> BoxFuture<'a, Result<PutOutcome, TransportError>> {
        put::put(self, req).boxed()
    }

    fn get<'a>(
        &'a self,
        path: &'a str,
        privileged: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        put::get(self, path, privileged).boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move {
            self.user.clear().await;
            self.root.clear().await;
            Ok(())
        }
        .boxed()
    }
}

impl FileBackend for LocalTransport {
    fn label(&self) -> &str {
        &self.label
    }

    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
        privileged: bool,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        self.exec(ExecRequest {
            script,
            stdin,
            privileged,
            timeout: None,
        })
    }

    fn upload<'a>(
        &'a self,
        source: PutSource<'a>,
        remote: &'a str,
        hash: bool,
    ) -> BoxFuture<'a, Result<Option<String>, TransportError>> {
        async move {
            let io_err = |source| TransportError::Io {
                context: format!("cannot write {remote}"),
                source,
            };
            if !hash && let PutSource::File(p) = source {
                tokio::fs::copy(p, remote).await.map_err(io_err)?;
                return Ok(None);
            }
            // Hashed content is small (see put::LARGE_FILE): read it whole.
            let read;
            let bytes = match source {
                PutSource::Bytes(b) => b,
                PutSource::File(p) => {
                    read = tokio::fs::read(p)
                        .await
                        .map_err(|source| TransportError::Io {
                            context: format!("cannot read {}", p.display()),
                            source,
                        })?;
                    &read
                }
            };
            tokio::fs::write(remote, bytes).await.map_err(io_err)?;
            Ok(hash.then(|| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))))
        }
        .boxed()
    }

    fn stages_privileged(&self) -> bool {
        !self.is_root
    }
}

/// The pipes of a local `sh` child process.
pub(crate) struct LocalIo {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out_buf: Vec<u8>,
    err_buf: Vec<u8>,
}

impl LocalIo {
    fn spawn(
        program: &str,
        args: &[String],
        path: Option<&std::ffi::OsStr>,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(program);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timed-out command's group can be
            // killed without touching this process.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        Ok(LocalIo {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            out_buf: vec![0; 64 * 1024],
            err_buf: vec![0; 16 * 1024],
            child,
        })
    }
}

impl ShellIo for LocalIo {
    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => {
                stdin.write_all(data).await?;
                stdin.flush().await
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
    }

    async fn recv(&mut self) -> std::io::Result<Chunk> {
        let (out_buf, err_buf) = (&mut self.out_buf, &mut self.err_buf);
        loop {
            let (out, err) = (self.stdout.as_mut(), self.stderr.as_mut());
            let (is_out, n) = match (out, err) {
                (None, None) => {
                    let status = self.child.wait().await?;
                    let code = status.code().or_else(|| {
                        std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s)
                    });
                    return Ok(Chunk::Closed(code));
                }
                (Some(o), None) => (true, o.read(out_buf).await?),
                (None, Some(e)) => (false, e.read(err_buf).await?),
                (Some(o), Some(e)) => tokio::select! {
                    r = o.read(out_buf) => (true, r?),
                    r = e.read(err_buf) => (false, r?),
                },
            };
            match (is_out, n) {
                (true, 0) => self.stdout = None,
                (false, 0) => self.stderr = None,
                (true, n) => {
                    return Ok(Chunk::Stdout(out_buf.get(..n).unwrap_or_default().to_vec()));
                }
                (false, n) => {
                    return Ok(Chunk::Stderr(err_buf.get(..n).unwrap_or_default().to_vec()));
                }
            }
        }
    }

    async fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
