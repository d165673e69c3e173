//! A fleet of real OpenSSH sshd processes on 127.0.0.x loopback addresses.
//!
//! [`SshdFleet::start`] gives every node its own address (127.0.0.2 and up),
//! a free port, its own ed25519 (optionally rsa) host key, its own
//! sshd_config (`UsePAM no`, `StrictModes no`, an `AuthorizedKeysFile` shared
//! by the fleet) and its own `root()` directory that tests write under, since
//! all nodes share this machine's filesystem. One client key pair and one
//! known_hosts file serve the whole fleet. Dropping the fleet kills every sshd
//! it started, including the per-connection children.
//!
//! sshd must run as root (privilege separation); the harness is meant for
//! the throwaway CI machine, where tests run as root.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgeforge::transport::{HostKeyCheck, SshTarget, SudoMode};

/// How one node of a fleet is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSpec {
    /// The node only forwards (a bastion): every command is refused by a
    /// `ForceCommand /bin/false`, direct-tcpip works.
    pub jump_only: bool,
    /// Serve an RSA host key instead of ed25519.
    pub rsa_host_key: bool,
}

/// Running sshd processes and the client credentials that reach them.
pub struct SshdFleet {
    dir: tempfile::TempDir,
    nodes: Vec<SshdNode>,
    client_key: PathBuf,
    known_hosts: PathBuf,
    authorized_keys: PathBuf,
}

/// One sshd of a fleet.
pub struct SshdNode {
    addr: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    root: PathBuf,
    host_key_line: String,
    spec: NodeSpec,
    child: Option<Child>,
}

impl SshdFleet {
    /// Starts `n` default nodes concurrently and waits until each accepts TCP.
    pub fn start(n: usize) -> Result<SshdFleet> {
        Self::start_with(&vec![NodeSpec::default(); n])
    }

    /// Starts one node per spec (same order), concurrently.
    pub fn start_with(specs: &[NodeSpec]) -> Result<SshdFleet> {
        fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let dir = tempfile::Builder::new()
            .prefix("edgeforge-sshd-")
            .tempdir()
            .context("creating the fleet directory")?;
        // Readable by a non-root test user (sudo tests) who works under node roots.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let client_key = dir.path().join("client_ed25519");
        keygen(&client_key, KeyKind::Ed25519, None)?;
        let authorized_keys = dir.path().join("authorized_keys");
        fs::copy(pub_path(&client_key), &authorized_keys)?;
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))?;

        // Host keys, generated in parallel.
        let mut keygens = Vec::new();
        let mut nodes = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let addr = node_address(i)?;
            let node_dir = dir.path().join(format!("node{i}"));
            let root = node_dir.join("root");
            fs::create_dir_all(&root)?;
            fs::set_permissions(&node_dir, fs::Permissions::from_mode(0o755))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o777))?;
            let kind = if spec.rsa_host_key {
                KeyKind::Rsa
            } else {
                KeyKind::Ed25519
            };
            keygens.push(keygen_spawn(&node_dir.join("host_key"), kind, None)?);
            nodes.push(SshdNode {
                addr,
                port: 0,
                dir: node_dir,
                root,
                host_key_line: String::new(),
                spec: *spec,
                child: None,
            });
        }
        for mut k in keygens {
            let status = k.wait()?;
            if !status.success() {
                bail!("ssh-keygen for a host key failed: {status}");
            }
        }
        let mut fleet = SshdFleet {
            dir,
            nodes,
            client_key,
            known_hosts: PathBuf::new(),
            authorized_keys,
        };
        fleet.known_hosts = fleet.dir.path().join("known_hosts");
        for (node, spec) in fleet.nodes.iter_mut().zip(specs) {
            node.host_key_line = read_key_line(&pub_path(&node.dir.join("host_key")))?;
            node.spawn(&fleet.authorized_keys, *spec)?;
        }
        fleet.wait_ready(specs)?;
        let mut kh = String::new();
        for node in &fleet.nodes {
            kh.push_str(&format!(
                "[{}]:{} {}\n",
                node.addr, node.port, node.host_key_line
            ));
        }
        fs::write(&fleet.known_hosts, kh)?;
        Ok(fleet)
    }

    fn wait_ready(&mut self, specs: &[NodeSpec]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pending: Vec<usize> = (0..self.nodes.len()).collect();
        let mut retries = 0;
        while !pending.is_empty() {
            if Instant::now() > deadline {
                bail!("{} sshd did not start listening within 30 s", pending.len());
            }
            let mut still = Vec::new();
            for i in pending {
                let node = &mut self.nodes[i];
                if let Some(child) = node.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    // Most likely the picked port was taken meanwhile: retry.
                    retries += 1;
                    if retries > 20 {
                        let log = fs::read_to_string(node.dir.join("sshd.log")).unwrap_or_default();
                        bail!("sshd on {} exited ({status}): {log}", node.addr);
                    }
                    node.child = None;
                    node.spawn(&self.authorized_keys, specs[i])?;
                    still.push(i);
                    continue;
                }
                let sock = SocketAddr::from((node.addr, node.port));
                if TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[SshdNode] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &SshdNode {
        &self.nodes[i]
    }

    /// The fleet's working directory (keys, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key every node accepts.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// A known_hosts file with every node's host key as `[127.0.0.x]:port`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Adds a public key (file contents) to the fleet's authorized_keys.
    pub fn authorize(&self, public_key_file: &Path) -> Result<()> {
        let key = fs::read_to_string(public_key_file)?;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)?;
        f.write_all(key.as_bytes())?;
        Ok(())
    }

    /// A target for node `i` as root, with the fleet key and known_hosts.
    pub fn target(&self, i: usize) -> SshTarget {
        let node = &self.nodes[i];
        SshTarget {
            host: node.addr.to_string(),
            port: node.port,
            user: "root".into(),
            identity_files: vec![self.client_key.clone()],
            passphrase: None,
            agent: false,
            jump: Vec::new(),
            host_key: HostKeyCheck {
                pinned: None,
                known_hosts: vec![self.known_hosts.clone()],
                accept_new: None,
            },
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(5),
            sudo: SudoMode::None,
        }
    }

    /// Restarts node `i` on the same address and port, re-reading its host
    /// key (tests replace the key file to simulate a reinstalled host).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let authorized = self.authorized_keys.clone();
        let node = &mut self.nodes[i];
        node.host_key_line = read_key_line(&pub_path(&node.host_key_path()))?;
        node.restart(&authorized)
    }

    /// Stops (SIGSTOP) node `i`'s sshd and its session processes: the TCP
    /// connections stay open but nothing answers, like a host that hung.
    /// Dropping the fleet still kills them.
    pub fn freeze(&self, i: usize) {
        if let Some(child) = self.nodes[i].child.as_ref() {
            let mut pids = descendants(child.id());
            pids.push(child.id());
            for pid in pids {
                let _ = Command::new("kill")
                    .arg("-STOP")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Kills node `i`'s sshd and every session process it forked.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }
}

impl Drop for SshdFleet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

impl SshdNode {
    /// The loopback address the node listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This node's private directory: tests write here, not in `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root()` joined with a relative path, as a string for the transport.
    pub fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// The host key as a known_hosts key field (`ssh-ed25519 AAAA…`).
    pub fn host_key_line(&self) -> &str {
        &self.host_key_line
    }

    /// The host key's `SHA256:…` fingerprint (computed by `ssh-keygen -lf`).
    pub fn host_fingerprint(&self) -> Result<String> {
        fingerprint_of(&pub_path(&self.host_key_path()))
    }

    /// The file holding the host's private key (to swap it in tests).
    pub fn host_key_path(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    /// Whether one of this node's sshd processes holds an established TCP
    /// connection to `port` (shows that a jump host really forwarded).
    pub fn has_connection_to(&self, port: u16) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let inodes = established_inodes_to(port);
        let mut pids = descendants(child.id());
        pids.push(child.id());
        pids.iter().any(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .any(|link| {
                    let l = link.to_string_lossy();
                    inodes.iter().any(|i| l == format!("socket:[{i}]"))
                })
        })
    }

    fn restart(&mut self, authorized_keys: &Path) -> Result<()> {
        self.kill();
        let spec = self.spec;
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.spawn_on(authorized_keys, spec, port)?;
            std::thread::sleep(Duration::from_millis(100));
            let sock = SocketAddr::from((self.addr, self.port));
            if TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            self.kill();
            if Instant::now() > deadline {
                bail!("sshd did not come back on {sock}");
            }
        }
    }

    fn spawn(&mut self, authorized_keys: &Path, spec: NodeSpec) -> Result<()> {
        let port = TcpListener::bind((self.addr, 0))?.local_addr()?.port();
        self.spawn_on(authorized_keys, spec, port)
    }

    fn spawn_on(&mut self, authorized_keys: &Path, spec: NodeSpec, port: u16) -> Result<()> {
        self.port = port;
        let mut cfg = format!(
            "ListenAddress {}:{port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AllowTcpForwarding yes\nMaxStartups 100:30:300\nLogLevel ERROR\n\
             Subsystem sftp internal-sftp\n",
            self.addr,
            self.dir.join("host_key").display(),
            self.dir.join("sshd.pid").display(),
            authorized_keys.display(),
        );
        if spec.jump_only {
            cfg.push_str("PermitTTY no\nForceCommand /bin/false\n");
        }
        let cfg_path = self.dir.join("sshd_config");
        fs::write(&cfg_path, cfg)?;
        let log = fs::File::create(self.dir.join("sshd.log"))?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting /usr/sbin/sshd (is openssh-server installed?)")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            for desc in descendants(pid) {
                // Only processes this harness started (sshd and its session children).
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(desc.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every process below `pid` (children, grandchildren…), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // Fields after the `(comm)`: state ppid …
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for (p, pp) in &parent_of {
            if *pp == cur && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

/// Inodes of established IPv4 TCP sockets whose remote port is `port`.
fn established_inodes_to(port: u16) -> Vec<String> {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = f.get(2)?.rsplit_once(':')?.1;
            let established = *f.get(3)? == "01";
            (established && u16::from_str_radix(remote_port, 16).ok()? == port)
                .then(|| f.get(9).map(|s| s.to_string()))
                .flatten()
        })
        .collect()
}

fn node_address(i: usize) -> Result<Ipv4Addr> {
    let third = u8::try_from(i / 250).context("too many nodes")?;
    let fourth = u8::try_from(2 + i % 250).context("too many nodes")?;
    Ok(Ipv4Addr::new(127, 0, third, fourth))
}

/// Key types the harness generates.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// ed25519.
    Ed25519,
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 3072.
    Rsa,
}

/// Generates a key pair with ssh-keygen (`path` and `path.pub`).
pub fn keygen(path: &Path, kind: KeyKind, passphrase: Option<&str>) -> Result<()> {
    let status = keygen_spawn(path, kind, passphrase)?.wait()?;
    if !status.success() {
        bail!("ssh-keygen {} failed: {status}", path.display());
    }
    Ok(())
}

fn keygen_spawn(path: &Path, kind: KeyKind, passphrase: Option<&str>) -> Result<Child> {
    let (t, bits) = match kind {
        KeyKind::Ed25519 => ("ed25519", None),
        KeyKind::Ecdsa => ("ecdsa", Some("256")),
        KeyKind::Rsa => ("rsa", Some("3072")),
    };
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(pub_path(path));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        t,
        "-C",
        "edgeforge-test",
        "-N",
        passphrase.unwrap_or(""),
    ]);
    if let Some(b) = bits {
        cmd.args(["-b", b]);
    }
    cmd.arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("running ssh-keygen")
}

/// The `type base64` part of a public key file.
fn read_key_line(public_key_file: &Path) -> Result<String> {
    Ok(fs::read_to_string(public_key_file)?
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// `path` with `.pub` appended.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The `SHA256:…` fingerprint of a public key file, as OpenSSH computes it.
pub fn fingerprint_of(public_key_file: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key_file)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| {
            format!(
                "ssh-keygen -lf {} printed no fingerprint",
                public_key_file.display()
            )
        })
}
