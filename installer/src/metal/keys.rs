//! SSH material of bare-metal installs, kept in the inventory's state
//! directory (`<state>/baremetal/`): the login key (unless the inventory
//! names its own identity file), and per node two ed25519 host keys, one for
//! the live installer system and one for the installed system, with a
//! known_hosts file for each. edgeforge generates both host keys before the
//! machine ever boots, so both connections are verified strictly: there is
//! never a first sight to trust.

use std::path::{Path, PathBuf};

use crate::virt::lab::{LabError, ensure_keypair, pub_path, read_key};

/// One node's entry: its name and where its SSH server is reached (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedNode {
    /// Node name.
    pub node: String,
    /// `address:port` edgeforge connects to.
    pub ssh_addr: String,
}

/// The key material of the installs of one inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetalKeys {
    /// The directory (`<state>/baremetal`).
    pub dir: PathBuf,
    /// The login private key (its `.pub` beside it).
    pub identity: PathBuf,
    /// known_hosts with every node's installed-system host key.
    pub known_hosts: PathBuf,
    /// known_hosts with every node's live-system host key.
    pub live_known_hosts: PathBuf,
}

/// Which system of a node a host key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The live installer booted from the ISO.
    Live,
    /// The OS written to the disk.
    Installed,
}

impl System {
    /// `live` or `installed`.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Live => "live",
            System::Installed => "installed",
        }
    }
}

impl MetalKeys {
    /// Creates (once) the login key at `identity` (default `<dir>/id_ed25519`)
    /// and both host keys of every node, and writes the two known_hosts files.
    pub fn ensure(
        dir: &Path,
        identity: Option<&Path>,
        nodes: &[KeyedNode],
    ) -> Result<MetalKeys, LabError> {
        crate::state::private_dir(dir).map_err(|source| LabError::Keys {
            what: "creating the key directory".into(),
            path: dir.to_owned(),
            source,
        })?;
        let identity = identity.map_or_else(|| dir.join("id_ed25519"), Path::to_owned);
        ensure_keypair(&identity, "edgeforge-baremetal")?;
        let keys = MetalKeys {
            dir: dir.to_owned(),
            identity,
            known_hosts: dir.join("known_hosts"),
            live_known_hosts: dir.join("known_hosts.live"),
        };
        let mut installed = String::new();
        let mut live = String::new();
        for n in nodes {
            let host = match n.ssh_addr.rsplit_once(':') {
                Some((h, "22")) => h.to_owned(),
                Some((h, p)) => format!("[{h}]:{p}"),
                None => n.ssh_addr.clone(),
            };
            for (system, lines) in [
                (System::Installed, &mut installed),
                (System::Live, &mut live),
            ] {
                let key = keys.host_key(&n.node, system);
                ensure_keypair(&key, &format!("edgeforge-{}-{}", system.as_str(), n.node))?;
                let public = read_key(&pub_path(&key))?;
                lines.push_str(&format!("{host} {}\n", public.trim()));
            }
        }
        for (path, text) in [
            (&keys.known_hosts, installed),
            (&keys.live_known_hosts, live),
        ] {
            crate::state::write_private(path, text.as_bytes()).map_err(|source| {
                LabError::Keys {
                    what: "writing".into(),
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(keys)
    }

    /// The private host key file of `node`'s `system` (its `.pub` beside it).
    pub fn host_key(&self, node: &str, system: System) -> PathBuf {
        self.dir
            .join("hostkeys")
            .join(format!("{node}_{}_ed25519", system.as_str()))
    }

    /// The private and public host key of `node`'s `system`.
    pub fn read_host_key(&self, node: &str, system: System) -> Result<(String, String), LabError> {
        let key = self.host_key(node, system);
        Ok((
            read_key(&key)?,
            read_key(&pub_path(&key))?.trim().to_owned(),
        ))
    }

    /// The login public key (authorized on both systems).
    pub fn authorized_key(&self) -> Result<String, LabError> {
        Ok(read_key(&pub_path(&self.identity))?.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_a_live_and_an_installed_host_key_pinned_apart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("baremetal");
        let nodes = [
            KeyedNode {
                node: "metal-1".into(),
                ssh_addr: "127.0.0.1:2251".into(),
            },
            KeyedNode {
                node: "metal-2".into(),
                ssh_addr: "10.0.0.2:22".into(),
            },
        ];
        let keys = MetalKeys::ensure(&dir, None, &nodes).expect("keys");
        let installed = std::fs::read_to_string(&keys.known_hosts).expect("known_hosts");
        let live = std::fs::read_to_string(&keys.live_known_hosts).expect("known_hosts.live");
        assert_eq!(installed.lines().count(), 2);
        assert!(
            installed.starts_with("[127.0.0.1]:2251 ssh-ed25519 "),
            "{installed}"
        );
        assert!(installed.contains("\n10.0.0.2 ssh-ed25519 "), "{installed}");
        assert_ne!(installed, live, "the two systems have different keys");
        let (private, public) = keys
            .read_host_key("metal-1", System::Live)
            .expect("live key");
        assert!(private.contains("OPENSSH PRIVATE KEY"));
        assert!(live.contains(&public));
        assert!(
            keys.authorized_key()
                .expect("login")
                .starts_with("ssh-ed25519 ")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Stable: a second call keeps every key.
        let again = MetalKeys::ensure(&dir, None, &nodes).expect("keys");
        assert_eq!(
            std::fs::read_to_string(&again.known_hosts).expect("known_hosts"),
            installed
        );
    }
}
