//! Version skew rules of an upgrade, pure: a node goes from its running k3s
//! release to the inventory's; never backwards, never past one minor
//! release at a time, and an agent only after every server runs at least the
//! release it goes to (a kubelet must not be newer than the API servers).

use std::cmp::Ordering;
use std::fmt;

/// A k3s release, `v1.34.2+k3s1`: Kubernetes major.minor.patch and k3s's revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct K3sVersion {
    /// Kubernetes major version.
    pub major: u32,
    /// Kubernetes minor version.
    pub minor: u32,
    /// Kubernetes patch version.
    pub patch: u32,
    /// k3s's own revision (`+k3s1`; 0 when absent).
    pub revision: u32,
}

impl K3sVersion {
    /// Parses `v1.34.2+k3s1` (the `v` and the `+k3sN` are optional).
    pub fn parse(s: &str) -> Option<K3sVersion> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (kube, rev) = match s.split_once('+') {
            Some((k, r)) => (k, r.strip_prefix("k3s")?.parse().ok()?),
            None => (s, 0),
        };
        // Pre-release suffixes (`-rc1`) sort like the release here.
        let kube = kube.split('-').next()?;
        let mut parts = kube.split('.').map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(K3sVersion {
            major,
            minor,
            patch,
            revision: rev,
        })
    }
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}+k3s{}",
            self.major, self.minor, self.patch, self.revision
        )
    }
}

/// Why an upgrade may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkewError {
    /// A version does not parse.
    #[error("`{0}` is not a k3s version like v1.34.2+k3s1")]
    Unparsable(String),
    /// The inventory's release is older than the running one.
    #[error(
        "{node} runs {from}, and {to} is older: k3s cannot be downgraded in place; set \
         `versions.k3s` to {from} or newer (or reset the node and install it anew)"
    )]
    Downgrade {
        /// The node.
        node: String,
        /// Running release.
        from: String,
        /// Asked-for release.
        to: String,
    },
    /// The upgrade skips a minor release.
    #[error(
        "{node} runs {from}; going to {to} skips minor release(s): Kubernetes upgrades one minor \
         release at a time, so upgrade to v{major}.{next}.x first"
    )]
    SkipsMinor {
        /// The node.
        node: String,
        /// Running release.
        from: String,
        /// Asked-for release.
        to: String,
        /// The major version.
        major: u32,
        /// The minor release to go to first.
        next: u32,
    },
    /// An agent would be newer than a server.
    #[error(
        "agent {node} cannot go to {to} while server {server} runs {server_version}: servers are \
         upgraded before agents; upgrade the servers first"
    )]
    ServersFirst {
        /// The agent.
        node: String,
        /// Asked-for release.
        to: String,
        /// A server still older.
        server: String,
        /// Its release.
        server_version: String,
    },
}

/// Checks the upgrade of `node` (`agent` or not) from `from` to `to`;
/// `servers` are the servers' names and running releases.
pub fn check_upgrade(
    node: &str,
    agent: bool,
    from: &str,
    to: &str,
    servers: &[(String, String)],
) -> Result<(), SkewError> {
    let parse = |s: &str| K3sVersion::parse(s).ok_or_else(|| SkewError::Unparsable(s.to_string()));
    let (f, t) = (parse(from)?, parse(to)?);
    if t < f {
        return Err(SkewError::Downgrade {
            node: node.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    if t.major != f.major || t.minor > f.minor + 1 {
        return Err(SkewError::SkipsMinor {
            node: node.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            major: f.major,
            next: f.minor + 1,
        });
    }
    if agent {
        for (server, version) in servers {
            let sv = parse(version)?;
            if (sv.major, sv.minor, sv.patch).cmp(&(t.major, t.minor, t.patch)) == Ordering::Less {
                return Err(SkewError::ServersFirst {
                    node: node.to_string(),
                    to: to.to_string(),
                    server: server.clone(),
                    server_version: version.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn versions_parse_and_order() {
        let v = K3sVersion::parse("v1.34.2+k3s1").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.revision), (1, 34, 2, 1));
        assert_eq!(v.to_string(), "v1.34.2+k3s1");
        assert!(K3sVersion::parse("v1.34.2+k3s2") > K3sVersion::parse("v1.34.2+k3s1"));
        assert!(K3sVersion::parse("v1.35.0+k3s1") > K3sVersion::parse("v1.34.10+k3s1"));
        assert_eq!(
            K3sVersion::parse("1.31.10"),
            Some(K3sVersion {
                major: 1,
                minor: 31,
                patch: 10,
                revision: 0
            })
        );
        for bad in ["", "v1.34", "v1.34.x+k3s1", "v1.34.2+rke2r1", "v1.34.2.1"] {
            assert_eq!(K3sVersion::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn upgrades_go_forward_one_minor_at_a_time() {
        let none = servers(&[]);
        check_upgrade("s1", false, "v1.33.5+k3s1", "v1.34.2+k3s1", &none).unwrap();
        check_upgrade("s1", false, "v1.34.1+k3s1", "v1.34.2+k3s1", &none).unwrap();
        check_upgrade("s1", false, "v1.34.2+k3s1", "v1.34.2+k3s2", &none).unwrap();
        let down = check_upgrade("s1", false, "v1.34.2+k3s1", "v1.33.5+k3s1", &none).unwrap_err();
        assert!(matches!(down, SkewError::Downgrade { .. }), "{down}");
        let skip = check_upgrade("s1", false, "v1.31.10+k3s1", "v1.34.2+k3s1", &none).unwrap_err();
        assert!(
            skip.to_string().contains("upgrade to v1.32.x first"),
            "{skip}"
        );
        let major = check_upgrade("s1", false, "v1.34.2+k3s1", "v2.0.0+k3s1", &none).unwrap_err();
        assert!(matches!(major, SkewError::SkipsMinor { .. }), "{major}");
        assert!(matches!(
            check_upgrade("s1", false, "junk", "v1.34.2+k3s1", &none),
            Err(SkewError::Unparsable(_))
        ));
    }

    #[test]
    fn agents_wait_for_every_server() {
        let mixed = servers(&[("s1", "v1.34.2+k3s1"), ("s2", "v1.33.5+k3s1")]);
        let err = check_upgrade("a1", true, "v1.33.5+k3s1", "v1.34.2+k3s1", &mixed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent a1 cannot go to v1.34.2+k3s1 while server s2 runs v1.33.5+k3s1: servers are \
             upgraded before agents; upgrade the servers first"
        );
        let done = servers(&[("s1", "v1.34.2+k3s1"), ("s2", "v1.34.2+k3s2")]);
        check_upgrade("a1", true, "v1.33.5+k3s1", "v1.34.2+k3s1", &done).unwrap();
        // A server's own upgrade does not wait for the others.
        check_upgrade("s2", false, "v1.33.5+k3s1", "v1.34.2+k3s1", &mixed).unwrap();
    }
}
