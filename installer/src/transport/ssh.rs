//! [`SshTransport`]: the [`Transport`] trait over one russh connection per host.
//!
//! [`SshTransport::connect`] dials the host (through its jump chain of
//! direct-tcpip channels), verifies every host key with
//! [`HostKeyCheck`](super::HostKeyCheck), and authenticates with key files
//! and/or the ssh-agent. Commands then go to up to two long-lived framed `sh`
//! sessions for the user and two for root (`sudo -S`/`sudo -n sh`, password
//! fed once on stdin), so a command costs a write, not a channel. Files go
//! through one SFTP session. Channels per connection stay at most 8 (2 + 2
//! shells, 1 SFTP, 3 one-off exec channels), under OpenSSH's MaxSessions 10.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use russh::client::{self, Handle, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, Sig};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

use super::frame::{
    Chunk, FrameError, FramedShell, PoolError, ShellIo, ShellPool, sudo_handshake,
    sudo_shell_command,
};
use super::known_hosts::{HostKeyCheck, HostKeyError};
use super::put::{self, FileBackend};
use super::target::{SshTarget, SudoMode};
use super::{
    ExecOutput, ExecRequest, PutOutcome, PutRequest, PutSource, Transport, TransportError,
};

/// Framed shells kept per kind (user, root) on one connection.
const SHELLS_PER_KIND: usize = 2;
/// One-off exec channels (fallback path) open at once on one connection.
const ONE_OFF_CHANNELS: usize = 3;
/// How long one SFTP request (session start, open, write, close) may take.
const SFTP_REQUEST_TIMEOUT_SECS: u64 = 120;

/// One SSH connection to a host, kept for the whole run.
pub struct SshTransport {
    label: String,
    is_root: bool,
    sudo: SudoMode,
    handle: Handle<Client>,
    /// Connections to the jump hosts, kept open while the tunnel is in use.
    _hops: Vec<Handle<Client>>,
    user_shells: ShellPool<SshIo>,
    root_shells: ShellPool<SshIo>,
    one_off: Semaphore,
    sftp: Mutex<Option<SftpSession>>,
    shell_worked: AtomicBool,
    no_shell: AtomicBool,
}

impl SshTransport {
    /// Connects and authenticates, through the jump chain if any, within the
    /// target's connect timeout (which covers the whole chain).
    pub async fn connect(target: &SshTarget) -> Result<SshTransport, TransportError> {
        let label = target.label();
        let chain = async {
            let mut hops: Vec<Handle<Client>> = Vec::new();
            for hop in target.jump.iter().chain(std::iter::once(target)) {
                let handle = match hops.last() {
                    None => {
                        let tcp = tokio::net::TcpStream::connect((hop.host.as_str(), hop.port))
                            .await
                            .map_err(|e| TransportError::Connect {
                                host: hop.label(),
                                reason: format!("TCP connection failed: {e}"),
                            })?;
                        let _ = tcp.set_nodelay(true);
                        open_hop(hop, tcp).await?
                    }
                    Some(prev) => {
                        let tunnel = prev
                            .channel_open_direct_tcpip(
                                hop.host.as_str(),
                                u32::from(hop.port),
                                "127.0.0.1",
                                0,
                            )
                            .await
                            .map_err(|e| TransportError::Connect {
                                host: hop.label(),
                                reason: format!("the jump host could not open a tunnel: {e}"),
                            })?;
                        open_hop(hop, tunnel.into_stream()).await?
                    }
                };
                hops.push(handle);
            }
            Ok::<_, TransportError>(hops)
        };
        let mut hops = match tokio::time::timeout(target.connect_timeout, chain).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(TransportError::Connect {
                    host: label,
                    reason: format!(
                        "no SSH session within the connect timeout of {}s; check that the host is up \
                         and that port {} (and any jump host) is reachable",
                        target.connect_timeout.as_secs(),
                        target.port
                    ),
                });
            }
        };
        let handle = hops
            .pop()
            .ok_or_else(|| TransportError::Other("empty SSH chain".into()))?;
        Ok(SshTransport {
            label,
            is_root: target.user == "root",
            sudo: target.sudo.clone(),
            handle,
            _hops: hops,
            user_shells: ShellPool::new(SHELLS_PER_KIND),
            root_shells: ShellPool::new(SHELLS_PER_KIND),
            one_off: Semaphore::new(ONE_OFF_CHANNELS),
            sftp: Mutex::new(None),
            shell_worked: AtomicBool::new(false),
            no_shell: AtomicBool::new(false),
        })
    }

    /// Opens a channel to the Unix socket `path` on the host
    /// (`direct-streamlocal`, what `ssh -L local.sock:remote.sock` uses):
    /// how edgeforge reaches a remote libvirtd over this verified connection.
    pub async fn open_unix_socket(
        &self,
        path: &str,
    ) -> Result<russh::ChannelStream<russh::client::Msg>, TransportError> {
        match self.handle.channel_open_direct_streamlocal(path).await {
            Ok(channel) => Ok(channel.into_stream()),
            Err(_) if self.handle.is_closed() => Err(self.connection_lost()),
            Err(e) => Err(TransportError::Connect {
                host: self.label.clone(),
                reason: format!(
                    "sshd did not open the socket {path} ({e}); check that the service behind it \
                     runs and that sshd allows stream-local forwarding (AllowStreamLocalForwarding)"
                ),
            }),
        }
    }

    /// Runs a command on its own exec channel (the slow path: ~0.1 s of
    /// channel setup each); used when the host has no usable `sh`.
    pub async fn exec_channel(&self, req: ExecRequest<'_>) -> Result<ExecOutput, TransportError> {
        let _slot = self
            .one_off
            .acquire()
            .await
            .map_err(|_| TransportError::Other("transport closed".into()))?;
        let run = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost(e))?;
            let mut input = Vec::new();
            let command = if req.privileged && !self.is_root {
                match &self.sudo {
                    SudoMode::Password(pw) => {
                        input.extend_from_slice(pw.expose().as_bytes());
                        input.push(b'\n');
                        format!("sudo -S -p '' sh -c {}", crate::sh::quote(req.script))
                    }
                    SudoMode::Passwordless => {
                        format!("sudo -n sh -c {}", crate::sh::quote(req.script))
                    }
                    SudoMode::None => return Err(self.no_privilege()),
                }
            } else {
                req.script.to_string()
            };
            input.extend_from_slice(req.stdin.unwrap_or_default());
            channel
                .exec(true, command)
                .await
                .map_err(|e| self.lost(e))?;
            if !input.is_empty() {
                channel.data(&input[..]).await.map_err(|e| self.lost(e))?;
            }
            channel.eof().await.map_err(|e| self.lost(e))?;
            let mut out = ExecOutput::default();
            let mut status = None;
            while let Some(msg) = channel.wait().await {
                if collect(msg, &mut out, &mut status) {
                    break;
                }
            }
            out.status = status.ok_or_else(|| TransportError::Connect {
                host: self.label.clone(),
                reason: "the command's channel closed without an exit status (connection lost?)"
                    .into(),
            })?;
            Ok(out)
        };
        match req.timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .map_err(|_| TransportError::Timeout(t))?,
            None => run.await,
        }
    }

    /// Runs `script` (as the connecting user) on its own exec channel with
    /// `input` streamed to its standard input until EOF: bulk data that goes
    /// into a command rather than a file, like a disk image into `zstd -d`.
    /// Its output is collected meanwhile; the whole run is bounded by `timeout`.
    pub async fn exec_streamed(
        &self,
        script: &str,
        input: impl AsyncRead + Unpin + Send,
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, TransportError> {
        let _slot = self
            .one_off
            .acquire()
            .await
            .map_err(|_| TransportError::Other("transport closed".into()))?;
        let run = async {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost(e))?;
            channel
                .exec(true, script.to_string())
                .await
                .map_err(|e| self.lost(e))?;
            let (mut read, write) = channel.split();
            let send = async {
                write.data(input).await.map_err(|e| self.lost(e))?;
                write.eof().await.map_err(|e| self.lost(e))
            };
            let receive = async {
                let mut out = ExecOutput::default();
                let mut status = None;
                while let Some(msg) = read.wait().await {
                    if collect(msg, &mut out, &mut status) {
                        break;
                    }
                }
                (out, status)
            };
            let (sent, (mut out, status)) = tokio::join!(send, receive);
            // A command that exits early stops reading: its status says why,
            // better than the broken send.
            match status {
                Some(status) => {
                    out.status = status;
                    Ok(out)
                }
                None => Err(sent.err().unwrap_or_else(|| TransportError::Connect {
                    host: self.label.clone(),
                    reason:
                        "the command's channel closed without an exit status (connection lost?)"
                            .into(),
                })),
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    /// `user@host:port` of this connection.
    pub fn label(&self) -> &str {
        &self.label
    }

    async fn open_shell(&self, privileged: bool) -> Result<FramedShell<SshIo>, PoolError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| PoolError::Open(self.lost(e)))?;
        let (command, tokens, password) = if privileged && !self.is_root {
            match &self.sudo {
                SudoMode::Password(pw) => {
                    let (c, t) = sudo_shell_command(true);
                    (c, Some(t), Some(pw))
                }
                SudoMode::Passwordless => {
                    let (c, t) = sudo_shell_command(false);
                    (c, Some(t), None)
                }
                SudoMode::None => return Err(PoolError::Open(self.no_privilege())),
            }
        } else {
            ("exec sh".to_string(), None, None)
        };
        channel
            .exec(true, command)
            .await
            .map_err(|e| PoolError::Open(self.lost(e)))?;
        let mut io = SshIo {
            channel,
            status: None,
        };
        if let Some(tokens) = tokens {
            sudo_handshake(&mut io, &tokens, password)
                .await
                .map_err(PoolError::Frame)?;
        }
        FramedShell::start(io).await.map_err(PoolError::Frame)
    }

    async fn exec_framed(&self, req: ExecRequest<'_>) -> Result<ExecOutput, TransportError> {
        if self.no_shell.load(Ordering::Relaxed) {
            return self.exec_channel(req).await;
        }
        let privileged = req.privileged && !self.is_root;
        let pool = if privileged {
            &self.root_shells
        } else {
            &self.user_shells
        };
        let result = pool
            .run(
                || self.open_shell(privileged),
                req.script,
                req.stdin,
                req.timeout,
            )
            .await;
        match result {
            Ok(out) => {
                self.shell_worked.store(true, Ordering::Relaxed);
                Ok(out)
            }
            // A user shell that never answered one framed command: the host
            // has no usable `sh` (or a restricted one). Use exec channels.
            Err(PoolError::Frame(FrameError::Closed { .. }))
                if !privileged
                    && !self.shell_worked.load(Ordering::Relaxed)
                    && !self.handle.is_closed() =>
            {
                self.no_shell.store(true, Ordering::Relaxed);
                self.exec_channel(req).await
            }
            Err(e) => Err(self.map(e)),
        }
    }

    fn map(&self, e: PoolError) -> TransportError {
        match e {
            PoolError::Timeout(t) => TransportError::Timeout(t),
            PoolError::Frame(FrameError::Closed { .. }) if self.handle.is_closed() => {
                self.connection_lost()
            }
            PoolError::Frame(source) => TransportError::Shell {
                host: self.label.clone(),
                source,
            },
            PoolError::Open(e) => e,
        }
    }

    fn lost(&self, e: russh::Error) -> TransportError {
        if self.handle.is_closed() {
            return self.connection_lost();
        }
        TransportError::Connect {
            host: self.label.clone(),
            reason: format!("the SSH session refused a channel: {e}"),
        }
    }

    fn connection_lost(&self) -> TransportError {
        TransportError::Connect {
            host: self.label.clone(),
            reason: "the SSH connection was lost (host down, network cut, or sshd killed)".into(),
        }
    }

    fn no_privilege(&self) -> TransportError {
        TransportError::Other(format!(
            "a privileged command on {} needs root: connect as root or enable `ssh.sudo`",
            self.label
        ))
    }

    /// Writes `source` to `remote` over the connection's SFTP session; with
    /// `hash`, returns the sha256 of the bytes sent.
    async fn sftp_upload(
        &self,
        source: PutSource<'_>,
        remote: &str,
        hash: bool,
    ) -> Result<Option<String>, TransportError> {
        let mut guard = self.sftp.lock().await;
        if guard.is_none() {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost(e))?;
            channel
                .request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.lost(e))?;
            // russh-sftp gives each request 10 s by default; a fleet of 50+ hosts
            // on a busy controller starts sftp-server slower than that.
            let config = russh_sftp::client::Config {
                request_timeout_secs: SFTP_REQUEST_TIMEOUT_SECS,
                ..Default::default()
            };
            let session = SftpSession::new_with_config(channel.into_stream(), config)
                .await
                .map_err(|e| self.sftp_error("starting SFTP", remote, e))?;
            *guard = Some(session);
        }
        let Some(sftp) = guard.as_ref() else {
            return Err(TransportError::Other("SFTP session missing".into()));
        };
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..FileAttributes::empty()
        };
        let mut file = sftp
            .open_with_flags_and_attributes(
                remote,
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                attrs,
            )
            .await
            .map_err(|e| self.sftp_error("creating", remote, e))?;
        let io_err = |source| TransportError::Io {
            context: format!("uploading to {remote} on {}", self.label),
            source,
        };
        let mut hasher = hash.then(Sha256::new);
        match source {
            PutSource::Bytes(b) => {
                if let Some(h) = &mut hasher {
                    h.update(b);
                }
                file.write_all(b).await.map_err(io_err)?;
            }
            PutSource::File(path) => {
                let mut local =
                    tokio::fs::File::open(path)
                        .await
                        .map_err(|source| TransportError::Io {
                            context: format!("cannot read {}", path.display()),
                            source,
                        })?;
                // Not tokio::io::copy: it flushes at the end, and an SFTP flush
                // is an fsync@openssh.com round trip that syncs the file to disk
                // (the shell path does not sync either). 64 KiB reads mean
                // fewer, fuller SFTP write packets than copy's 8 KiB buffer, and
                // keep each connection's send buffer small: a 200 MB upload on
                // loopback runs as fast as scp, and 200 hosts uploading at once
                // stay near 110 MB on the controller (256 KiB: 140 MB).
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = local
                        .read(&mut buf)
                        .await
                        .map_err(|source| TransportError::Io {
                            context: format!("cannot read {}", path.display()),
                            source,
                        })?;
                    let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                        break;
                    };
                    if let Some(h) = &mut hasher {
                        h.update(chunk);
                    }
                    file.write_all(chunk).await.map_err(io_err)?;
                }
            }
        }
        file.shutdown().await.map_err(io_err)?;
        Ok(hasher.map(|h| hex::encode(h.finalize())))
    }

    fn sftp_error(
        &self,
        verb: &str,
        path: &str,
        e: russh_sftp::client::error::Error,
    ) -> TransportError {
        TransportError::Other(format!("SFTP {verb} {path} on {} failed: {e}", self.label))
    }
}

impl Transport for SshTransport {
    fn exec<'a>(
        &'a self,
        req: ExecRequest<'a>,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        self.exec_framed(req).boxed()
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
            self.user_shells.clear().await;
            self.root_shells.clear().await;
            if let Some(sftp) = self.sftp.lock().await.take() {
                let _ = sftp.close().await;
            }
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await
                .map_err(|e| TransportError::Connect {
                    host: self.label.clone(),
                    reason: format!("disconnect failed: {e}"),
                })
        }
        .boxed()
    }
}

impl FileBackend for SshTransport {
    fn label(&self) -> &str {
        &self.label
    }

    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
        privileged: bool,
    ) -> BoxFuture<'a, Result<ExecOutput, TransportError>> {
        self.exec_framed(ExecRequest {
            script,
            stdin,
            privileged,
            timeout: None,
        })
        .boxed()
    }

    fn upload<'a>(
        &'a self,
        source: PutSource<'a>,
        remote: &'a str,
        hash: bool,
    ) -> BoxFuture<'a, Result<Option<String>, TransportError>> {
        self.sftp_upload(source, remote, hash).boxed()
    }

    fn stages_privileged(&self) -> bool {
        !self.is_root
    }
}

/// Adds a channel message to a command's output and exit status; true
/// once the channel closed.
fn collect(msg: ChannelMsg, out: &mut ExecOutput, status: &mut Option<i32>) -> bool {
    match msg {
        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
        ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
        ChannelMsg::ExitStatus { exit_status } => {
            *status = Some(i32::try_from(exit_status).unwrap_or(255));
        }
        ChannelMsg::ExitSignal { signal_name, .. } => {
            *status = Some(128 + signal_number(&signal_name));
        }
        ChannelMsg::Close => return true,
        _ => {}
    }
    false
}

/// Handshake and authentication of one hop of the chain.
async fn open_hop<S>(hop: &SshTarget, stream: S) -> Result<Handle<Client>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let verdict = Arc::new(std::sync::Mutex::new(None));
    let handler = Client {
        check: hop.host_key.clone(),
        host: hop.host.clone(),
        port: hop.port,
        verdict: verdict.clone(),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(hop.keepalive),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let take_verdict = || verdict.lock().ok().and_then(|mut v| v.take());
    let mut handle = match client::connect_stream(config, stream, handler).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(refused) = take_verdict() {
                return Err(refused.into());
            }
            return Err(TransportError::Connect {
                host: hop.label(),
                reason: format!("SSH handshake failed: {e}"),
            });
        }
    };
    match authenticate(hop, &mut handle).await {
        Err(e) => Err(take_verdict().map(Into::into).unwrap_or(e)),
        Ok(()) => Ok(handle),
    }
}

/// The signature hash an RSA key must use with this server (`None` for other keys).
async fn rsa_hash(
    handle: &mut Handle<Client>,
    algorithm: russh::keys::Algorithm,
) -> Result<Option<russh::keys::HashAlg>, russh::Error> {
    if !algorithm.is_rsa() {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}

async fn authenticate(hop: &SshTarget, handle: &mut Handle<Client>) -> Result<(), TransportError> {
    let conn_err = |e: russh::Error| TransportError::Connect {
        host: hop.label(),
        reason: format!("authentication was interrupted: {e}"),
    };
    let mut tried = Vec::new();
    for path in &hop.identity_files {
        let key =
            match russh::keys::load_secret_key(path, hop.passphrase.as_ref().map(|p| p.expose())) {
                Ok(k) => k,
                Err(e) => {
                    tried.push(format!("key {} (not loaded: {e})", path.display()));
                    continue;
                }
            };
        let hash = rsa_hash(handle, key.algorithm()).await.map_err(conn_err)?;
        let result = handle
            .authenticate_publickey(
                hop.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(conn_err)?;
        if result.success() {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
    }
    if hop.agent {
        match AgentClient::connect_env().await {
            Ok(mut agent) => {
                let identities = agent.request_identities().await.unwrap_or_default();
                let count = identities.len();
                for identity in identities {
                    let key = identity.public_key().into_owned();
                    let hash = rsa_hash(handle, key.algorithm()).await.map_err(conn_err)?;
                    let result = handle
                        .authenticate_publickey_with(hop.user.clone(), key, hash, &mut agent)
                        .await;
                    if result.is_ok_and(|r| r.success()) {
                        return Ok(());
                    }
                }
                tried.push(format!("ssh-agent ({count} keys)"));
            }
            Err(e) => tried.push(format!("ssh-agent (unavailable: {e})")),
        }
    }
    if tried.is_empty() {
        tried.push("no identities".into());
    }
    Err(TransportError::Auth {
        host: hop.label(),
        tried: tried.join(", "),
    })
}

/// russh callbacks: host key verification.
pub(crate) struct Client {
    check: HostKeyCheck,
    host: String,
    port: u16,
    verdict: Arc<std::sync::Mutex<Option<HostKeyError>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.check.verify(&self.host, self.port, key)
            }
            PublicKeyOrCertificate::Certificate(_) => Err(HostKeyError::Certificate {
                host: super::known_hosts::host_name(&self.host, self.port),
            }),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut v) = self.verdict.lock() {
                    *v = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// An exec channel running `sh`, as the pipes of a framed shell.
pub(crate) struct SshIo {
    channel: Channel<Msg>,
    status: Option<i32>,
}

impl ShellIo for SshIo {
    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.channel
            .data(data)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))
    }

    async fn recv(&mut self) -> std::io::Result<Chunk> {
        loop {
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => return Ok(Chunk::Stdout(data.to_vec())),
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    return Ok(Chunk::Stderr(data.to_vec()));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    self.status = Some(i32::try_from(exit_status).unwrap_or(255));
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    self.status = Some(128 + signal_number(&signal_name));
                }
                Some(ChannelMsg::Close) | None => return Ok(Chunk::Closed(self.status)),
                Some(_) => {}
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.channel.signal(Sig::KILL).await;
        let _ = self.channel.close().await;
    }
}

/// The Linux number of a signal named in an SSH exit-signal message.
fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}
