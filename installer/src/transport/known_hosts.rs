//! Host key verification: pinned fingerprints and OpenSSH known_hosts files.
//!
//! Every SSH connection edgeforge makes goes through [`HostKeyCheck::verify`].
//! It reads known_hosts the way OpenSSH writes it: plain and hashed
//! (`|1|salt|hash`, HMAC-SHA1) host names, `[host]:port` for other ports,
//! wildcard and negated patterns, `@revoked` (refused) and `@cert-authority`
//! (skipped: host certificates are not supported). With `accept-new`, a host
//! seen for the first time is appended to edgeforge's own file; a host whose
//! key changed is refused in every mode. There is no way to skip the check.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

/// How a host's key is verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostKeyCheck {
    /// A pinned `SHA256:…` fingerprint; when set, only that key is accepted.
    pub pinned: Option<String>,
    /// known_hosts files to read, in order (missing files are skipped).
    pub known_hosts: Vec<PathBuf>,
    /// `accept-new`: record unknown hosts in this file (edgeforge's own).
    pub accept_new: Option<PathBuf>,
}

/// Why a host key was refused.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The key differs from the recorded or pinned one.
    #[error(
        "host key of {host} has CHANGED: it presented {presented}, but {source_desc} expects {}. \
         If the host was reinstalled, verify the new fingerprint out of band (ssh-keygen -lf on the host) \
         and update {source_desc}; otherwise someone may be intercepting the connection",
        .expected.join(" or ")
    )]
    Mismatch {
        /// `host` or `[host]:port`.
        host: String,
        /// Fingerprint the host presented.
        presented: String,
        /// Fingerprints on record.
        expected: Vec<String>,
        /// Where the expected keys come from (`/path/known_hosts:3`, `the pinned fingerprint`).
        source_desc: String,
    },
    /// Nothing is known about the host and `accept-new` is off.
    #[error(
        "host key of {host} is unknown (it presented {presented}; looked in {searched}). \
         Verify the fingerprint, then pin it as `hostKey.fingerprint`, add the host to a known_hosts file, \
         or set `hostKey.policy: accept-new`"
    )]
    Unknown {
        /// `host` or `[host]:port`.
        host: String,
        /// Fingerprint the host presented.
        presented: String,
        /// The files read.
        searched: String,
    },
    /// The key is marked `@revoked`.
    #[error("host key {presented} of {host} is revoked ({at}); the host must get a new key")]
    Revoked {
        /// `host` or `[host]:port`.
        host: String,
        /// Fingerprint the host presented.
        presented: String,
        /// File and line of the `@revoked` entry.
        at: String,
    },
    /// The host offered a certificate instead of a plain key.
    #[error("{host} presented a host certificate; edgeforge verifies plain host keys only")]
    Certificate {
        /// `host` or `[host]:port`.
        host: String,
    },
    /// `accept-new` could not record the key.
    #[error("cannot record the host key of {host} in {}", .path.display())]
    Record {
        /// `host` or `[host]:port`.
        host: String,
        /// edgeforge's known_hosts file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl HostKeyCheck {
    /// Accepts `key` for `host:port` or says why not (recording it under `accept-new`).
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), HostKeyError> {
        let name = host_name(host, port);
        let presented = fingerprint(key);
        if let Some(pin) = &self.pinned {
            if pin.trim() == presented {
                return Ok(());
            }
            return Err(HostKeyError::Mismatch {
                host: name,
                presented,
                expected: vec![pin.trim().to_string()],
                source_desc: "the pinned fingerprint (hostKey.fingerprint)".into(),
            });
        }
        let mut recorded: Vec<(String, String)> = Vec::new();
        for path in &self.known_hosts {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for (idx, line) in text.lines().enumerate() {
                let Some(entry) = parse_line(line) else {
                    continue;
                };
                if !entry.matches(&name) {
                    continue;
                }
                let at = format!("{}:{}", path.display(), idx + 1);
                let same = entry.key.key_data() == key.key_data();
                match entry.marker {
                    Marker::Revoked if same => {
                        return Err(HostKeyError::Revoked {
                            host: name,
                            presented,
                            at,
                        });
                    }
                    Marker::Revoked | Marker::CertAuthority => {}
                    Marker::None if same => return Ok(()),
                    Marker::None => recorded.push((fingerprint(&entry.key), at)),
                }
            }
        }
        if !recorded.is_empty() {
            let source_desc = recorded
                .iter()
                .map(|(_, at)| at.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(HostKeyError::Mismatch {
                host: name,
                presented,
                expected: recorded.into_iter().map(|(fp, _)| fp).collect(),
                source_desc,
            });
        }
        match &self.accept_new {
            Some(path) => record(path, &name, key),
            None => Err(HostKeyError::Unknown {
                host: name,
                presented,
                searched: self
                    .known_hosts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// A key's `SHA256:…` fingerprint as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name a host has in known_hosts: `host`, or `[host]:port` off port 22.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Appends `name key` to `path` with a single append write, creating the directory.
fn record(path: &Path, name: &str, key: &PublicKey) -> Result<(), HostKeyError> {
    let err = |source| HostKeyError::Record {
        host: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut encoded = key.clone();
    encoded.set_comment("");
    let openssh = encoded
        .to_openssh()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let line = format!("{name} {}\n", openssh.trim());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(line.as_bytes()).map_err(err)
}

enum Marker {
    None,
    Revoked,
    CertAuthority,
}

struct Entry<'a> {
    marker: Marker,
    patterns: &'a str,
    key: PublicKey,
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        _ => Marker::None,
    };
    if !matches!(marker, Marker::None) {
        first = fields.next()?;
    }
    let _key_type = fields.next()?;
    let key = russh::keys::parse_public_key_base64(fields.next()?).ok()?;
    Some(Entry {
        marker,
        patterns: first,
        key,
    })
}

impl Entry<'_> {
    /// OpenSSH semantics: a negated pattern that matches rejects the entry;
    /// otherwise any positive match accepts it.
    fn matches(&self, name: &str) -> bool {
        if let Some(hashed) = self.patterns.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let mut positive = false;
        for pattern in self.patterns.split(',') {
            match pattern.strip_prefix('!') {
                Some(neg) if glob(neg, name) => return false,
                Some(_) => {}
                None => positive |= glob(pattern, name),
            }
        }
        positive
    }
}

fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        data_encoding::BASE64.decode(salt.as_bytes()),
        data_encoding::BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` and `?` wildcards, case-insensitive like OpenSSH host patterns.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ5dGVzIG9mIGEgdGVzdCBrZXkgbnVtYmVyIG9uZS4u";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ5dGVzIG9mIGEgdGVzdCBrZXkgbnVtYmVyIHR3by4u";

    fn key(line: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(line.split(' ').nth(1).unwrap()).unwrap()
    }

    fn check_with(lines: &str) -> (tempfile::TempDir, HostKeyCheck) {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, lines).unwrap();
        let check = HostKeyCheck {
            known_hosts: vec![kh],
            ..Default::default()
        };
        (dir, check)
    }

    /// Hashes a host name the way `ssh-keygen -H` does, with a fixed salt.
    fn hashed(name: &str) -> String {
        let salt = [7u8; 20];
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt)
            .unwrap()
            .chain_update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!(
            "|1|{}|{}",
            data_encoding::BASE64.encode(&salt),
            data_encoding::BASE64.encode(&hash)
        )
    }

    #[test]
    fn plain_port_and_wildcard_entries_match() {
        let (_d, c) = check_with(&format!("[10.0.0.5]:2222 {ED1}\n"));
        c.verify("10.0.0.5", 2222, &key(ED1)).unwrap();
        assert!(matches!(
            c.verify("10.0.0.5", 22, &key(ED1)),
            Err(HostKeyError::Unknown { .. })
        ));
        let (_d, c) = check_with(&format!("# comment\n10.0.*,!10.0.0.9 {ED1}\n"));
        c.verify("10.0.0.5", 22, &key(ED1)).unwrap();
        assert!(c.verify("10.0.0.9", 22, &key(ED1)).is_err());
    }

    #[test]
    fn hashed_entries_match_only_their_host() {
        let (_d, c) = check_with(&format!("{} {ED1}\n", hashed("[127.0.0.3]:2200")));
        c.verify("127.0.0.3", 2200, &key(ED1)).unwrap();
        assert!(c.verify("127.0.0.4", 2200, &key(ED1)).is_err());
    }

    #[test]
    fn changed_key_names_both_fingerprints() {
        let (_d, c) = check_with(&format!("h {ED1}\n"));
        let err = c.verify("h", 22, &key(ED2)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&fingerprint(&key(ED1))), "{msg}");
        assert!(msg.contains(&fingerprint(&key(ED2))), "{msg}");
        assert!(msg.contains("known_hosts:1"), "{msg}");
    }

    #[test]
    fn revoked_refused_and_cert_authority_ignored() {
        let (_d, c) = check_with(&format!("@revoked * {ED1}\nh {ED1}\n"));
        assert!(matches!(
            c.verify("h", 22, &key(ED1)),
            Err(HostKeyError::Revoked { .. })
        ));
        let (_d, c) = check_with(&format!("@cert-authority * {ED2}\nh {ED1}\n"));
        c.verify("h", 22, &key(ED1)).unwrap();
    }

    #[test]
    fn pinned_fingerprint_is_exact() {
        let c = HostKeyCheck {
            pinned: Some(fingerprint(&key(ED1))),
            ..Default::default()
        };
        c.verify("h", 22, &key(ED1)).unwrap();
        assert!(matches!(
            c.verify("h", 22, &key(ED2)),
            Err(HostKeyError::Mismatch { .. })
        ));
    }

    #[test]
    fn accept_new_records_then_refuses_a_changed_key() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("state/known_hosts");
        let c = HostKeyCheck {
            known_hosts: vec![own.clone()],
            accept_new: Some(own.clone()),
            ..Default::default()
        };
        c.verify("h", 2022, &key(ED1)).unwrap();
        c.verify("h", 2022, &key(ED1)).unwrap();
        assert_eq!(std::fs::read_to_string(&own).unwrap().lines().count(), 1);
        assert!(matches!(
            c.verify("h", 2022, &key(ED2)),
            Err(HostKeyError::Mismatch { .. })
        ));
    }

    #[test]
    fn glob_handles_stars_and_question_marks() {
        assert!(glob("*.example.com", "a.example.com"));
        assert!(glob("host?", "host1"));
        assert!(!glob("host?", "host12"));
        assert!(glob("*", "[1.2.3.4]:22"));
    }
}
