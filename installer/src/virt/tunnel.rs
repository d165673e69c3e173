//! libvirt on another host, reached through edgeforge's own SSH connection.
//!
//! libvirt's `qemu+ssh://` transport runs the `ssh` program, which checks the
//! host key against the user's `~/.ssh/known_hosts` (or, with `no_verify`,
//! not at all): not against what edgeforge pinned for that host. So for a
//! remote hypervisor edgeforge opens the SSH connection itself, with the same
//! [`SshTarget`] (host key check, identity, jump hosts, keepalives) as every
//! other connection to that host, and forwards a private Unix socket on this
//! machine to libvirtd's socket there (`direct-streamlocal`, as `ssh -L` does).
//! libvirt then connects to `qemu+unix:///system?socket=<that socket>`.
//!
//! The socket lives in a fresh 0700 directory and goes away with the
//! [`Tunnel`]; each libvirt connection to it gets its own SSH channel.

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;

use super::VirtError;
use crate::transport::{SshTarget, SshTransport};

/// Where libvirtd listens for `qemu:///system` (the monolithic daemon first,
/// then the modular QEMU daemon).
const SYSTEM_SOCKETS: [&str; 2] = [
    "/var/run/libvirt/libvirt-sock",
    "/var/run/libvirt/virtqemud-sock",
];

/// Whether `uri` reaches its hypervisor over SSH (`qemu+ssh`, `qemu+libssh`,
/// `qemu+libssh2`).
pub fn is_ssh_uri(uri: &str) -> bool {
    let scheme = uri.split_once("://").map_or("", |(s, _)| s);
    matches!(
        scheme.split_once('+').map(|(_, t)| t),
        Some("ssh" | "libssh" | "libssh2")
    )
}

/// A forwarded libvirt socket; dropping it closes the forward and the SSH
/// connection.
pub struct Tunnel {
    /// The `qemu+unix` URI libvirt connects to.
    pub local_uri: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tunnel {
    /// Connects to the host of `uri` as `target` says and forwards its
    /// libvirtd socket (the `socket` parameter of `uri`, else the system
    /// daemon's) to a local one.
    pub async fn open(uri: &str, target: &SshTarget) -> Result<Tunnel, VirtError> {
        let fail = |reason: String| VirtError::Remote {
            uri: uri.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(uri).map_err(|e| fail(format!("not a URI: {e}")))?;
        let remote: Vec<String> = match parsed.query_pairs().find(|(k, _)| k == "socket") {
            Some((_, s)) => vec![s.into_owned()],
            None if parsed.path() == "/system" => {
                SYSTEM_SOCKETS.iter().map(|s| (*s).to_owned()).collect()
            }
            None => {
                return Err(fail(format!(
                    "edgeforge drives `/system` on a remote hypervisor, not `{}`; \
                     end the URI in /system or name the daemon's socket with `?socket=`",
                    parsed.path()
                )));
            }
        };
        let ssh = SshTransport::connect(target)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // The first socket that opens is libvirtd's; a clear error when none does.
        let mut socket = None;
        let mut last = String::new();
        for path in &remote {
            match ssh.open_unix_socket(path).await {
                Ok(probe) => {
                    drop(probe);
                    socket = Some(path.clone());
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let socket = socket.ok_or_else(|| {
            fail(format!(
                "libvirtd does not answer there ({last}); apply the virt layer to that host \
                 (`edgeforge apply --layer virt`) or start libvirtd on it"
            ))
        })?;
        let dir = tempfile::Builder::new()
            .prefix("edgeforge-libvirt-")
            .tempdir()
            .map_err(|source| VirtError::Io {
                what: "creating a directory for the libvirt tunnel in",
                path: std::env::temp_dir(),
                source,
            })?;
        let local = dir.path().join("libvirt-sock");
        let listener = UnixListener::bind(&local).map_err(|source| VirtError::Io {
            what: "listening on",
            path: local.clone(),
            source,
        })?;
        let task = tokio::spawn(forward(listener, Arc::new(ssh), socket));
        Ok(Tunnel {
            local_uri: local_uri(&local),
            task,
            _dir: dir,
        })
    }
}

/// The temporary directory's path has no characters a URI query must escape.
fn local_uri(socket: &Path) -> String {
    format!("qemu+unix:///system?socket={}", socket.display())
}

/// Accepts libvirt's connections and gives each its own channel to `socket`.
async fn forward(listener: UnixListener, ssh: Arc<SshTransport>, socket: String) {
    while let Ok((mut local, _)) = listener.accept().await {
        let ssh = Arc::clone(&ssh);
        let socket = socket.clone();
        tokio::spawn(async move {
            // A channel that does not open closes the local end, which libvirt
            // reports as a failed call.
            if let Ok(mut remote) = ssh.open_unix_socket(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_uris_are_told_apart() {
        assert!(is_ssh_uri("qemu+ssh://root@10.0.0.5/system"));
        assert!(is_ssh_uri("qemu+libssh://root@10.0.0.5:2222/system"));
        assert!(!is_ssh_uri("qemu:///system"));
        assert!(!is_ssh_uri("qemu+tls://host/system"));
        assert!(!is_ssh_uri("test:///default"));
    }

    #[test]
    fn the_local_uri_carries_the_socket() {
        assert_eq!(
            local_uri(Path::new("/tmp/edgeforge-libvirt-x/libvirt-sock")),
            "qemu+unix:///system?socket=/tmp/edgeforge-libvirt-x/libvirt-sock"
        );
    }
}
