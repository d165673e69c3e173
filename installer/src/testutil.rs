//! Test helpers (compiled only for unit tests), in the style of a recording
//! seam: [`ShellTransport`] wraps the real [`LocalTransport`] (framed shells,
//! the real `put` with its sha256 check and atomic rename), counts and records
//! the requests that reach it, and injects failures. Tests point steps at
//! paths inside their own temp directories.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;

use crate::playbook::kinds::{Reach, StepError};
use crate::transport::{
    ExecOutput, ExecRequest, LocalTransport, PutOutcome, PutRequest, Transport, TransportError,
};

/// The real local transport, with its requests counted and recorded, and a
/// switch that fails every request after the N-th (a host that dies mid-run).
pub struct ShellTransport {
    inner: LocalTransport,
    /// Requests made so far (exec + put + get).
    pub round_trips: AtomicUsize,
    /// Fail every request after this many.
    pub fail_after: Option<usize>,
    /// Scripts seen, for assertions about what was sent.
    pub scripts: Mutex<Vec<String>>,
}

impl Default for ShellTransport {
    fn default() -> Self {
        ShellTransport::wrap(LocalTransport::new())
    }
}

impl ShellTransport {
    /// A transport whose shells find stand-in commands (systemctl, apt-get, ...) in `dir` first.
    pub fn with_fake_bin(dir: PathBuf) -> ShellTransport {
        ShellTransport::wrap(LocalTransport::with_path_prefix(&dir))
    }

    /// A transport that fails every request after the first `n`.
    pub fn failing_after(n: usize) -> ShellTransport {
        ShellTransport {
            fail_after: Some(n),
            ..ShellTransport::default()
        }
    }

    fn wrap(inner: LocalTransport) -> ShellTransport {
        ShellTransport {
            inner,
            round_trips: AtomicUsize::new(0),
            fail_after: None,
            scripts: Mutex::new(Vec::new()),
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
            self.scripts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req.script.to_string());
            self.inner.exec(req).await
        })
    }

    fn put<'a>(&'a self, req: PutRequest<'a>) -> BoxFuture<'a, Result<PutOutcome, TransportError>> {
        Box::pin(async move {
            self.count()?;
            self.inner.put(req).await
        })
    }

    fn get<'a>(
        &'a self,
        path: &'a str,
        privileged: bool,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, TransportError>> {
        Box::pin(async move {
            self.count()?;
            self.inner.get(path, privileged).await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.inner.close()
    }
}

/// A [`Reach`] for steps tested alone: there is nothing beyond their target;
/// what a step remembers is kept in memory.
#[derive(Default)]
pub struct NoReach {
    /// What steps remembered.
    pub memos: Mutex<std::collections::HashMap<String, String>>,
}

impl Reach for NoReach {
    fn node_host(&self) -> BoxFuture<'_, Result<std::sync::Arc<dyn Transport>, StepError>> {
        Box::pin(async { Err(StepError::Invalid("no node host in this test".into())) })
    }

    fn reconnect_host(&self) -> BoxFuture<'_, Result<(), StepError>> {
        Box::pin(async { Err(StepError::Invalid("no node host in this test".into())) })
    }

    fn site_cluster(&self) -> BoxFuture<'_, Result<crate::kube::KubeConn, StepError>> {
        Box::pin(async { Err(StepError::Invalid("no cluster in this test".into())) })
    }

    fn recall(&self, key: &str) -> Option<String> {
        self.memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, value: &str) {
        self.memos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value.to_string());
    }

    fn progress(&self, _message: &str) {}
}

/// Writes an executable stand-in command `name` with the given sh body into `dir`.
pub fn fake_command(dir: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A renderer over a temporary data directory holding `files` under templates/.
pub fn renderer_with(files: &[(&str, &str)]) -> (tempfile::TempDir, crate::render::Renderer) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join("templates").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let r = crate::render::Renderer::new(&crate::data::DataDir::new(Some(dir.path()))).unwrap();
    (dir, r)
}
