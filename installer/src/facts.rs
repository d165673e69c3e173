//! Facts: what a host is (OS, arch, kernel, CPUs, memory, disks,
//! virtualization support, init system, package manager), gathered once per
//! host in one round trip and exposed to templates and `when` as `facts.*`.

use serde::{Deserialize, Serialize};

use crate::transport::{ExecRequest, Transport, TransportError};

/// What edgeforge knows about a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// `ID` from /etc/os-release, e.g. `debian`, `ubuntu`, `rocky`, `alpine`.
    pub os_id: String,
    /// The family: `debian`, `redhat`, `suse`, `alpine` or the id itself.
    pub os_family: String,
    /// `VERSION_ID`, e.g. `12`.
    pub os_version: String,
    /// `uname -m`, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: u32,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Whole disks (`lsblk` names with sizes in bytes).
    pub disks: Vec<Disk>,
    /// /dev/kvm exists.
    pub kvm_device: bool,
    /// The CPU has vmx or svm.
    pub virt_cpu_flags: bool,
    /// `systemd`, `openrc` or `unknown`.
    pub init: String,
    /// `apt`, `dnf`, `yum`, `zypper`, `apk` or empty.
    pub pkg_mgr: String,
    /// Short hostname now.
    pub hostname: String,
    /// /etc/machine-id (identifies an installation).
    pub machine_id: String,
    /// /proc/sys/kernel/random/boot_id (changes at every boot).
    pub boot_id: String,
}

/// A whole disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Errors of gathering facts.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The facts script could not run.
    #[error("gathering facts failed")]
    Transport(#[source] TransportError),
    /// The facts script exited with an error.
    #[error("gathering facts failed with status {status}: {stderr}")]
    Script {
        /// Exit status.
        status: i32,
        /// Its standard error.
        stderr: String,
    },
}

/// The one script that prints every fact as `key=value` lines. It reads
/// files with the shell's `read` builtin, so gathering starts one process on
/// the host (`uname`) instead of one per fact.
pub const FACTS_SCRIPT: &str = r#"
rd() { v=; read -r v < "$1" 2>/dev/null; printf '%s' "$v"; }
if [ -r /etc/os-release ]; then . /etc/os-release; fi
echo "os_id=${ID:-unknown}"
echo "os_like=${ID_LIKE:-}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "kernel=$(rd /proc/sys/kernel/osrelease)"
echo "cpus_online=$(rd /sys/devices/system/cpu/online)"
while read -r k v _; do
  if [ "$k" = MemTotal: ]; then echo "mem_kib=$v"; break; fi
done < /proc/meminfo
for d in /sys/block/*; do
  [ -e "$d/device" ] || continue
  s=$(rd "$d/size")
  echo "disk=${d##*/} $(( ${s:-0} * 512 ))"
done
[ -e /dev/kvm ] && echo kvm_device=1
while read -r k rest; do
  case "$k" in flags)
    case " $rest " in *" vmx "*|*" svm "*) echo virt_cpu_flags=1;; esac
    break;;
  esac
done < /proc/cpuinfo
if [ -d /run/systemd/system ]; then echo init=systemd
elif command -v openrc >/dev/null 2>&1 || [ -d /run/openrc ]; then echo init=openrc
else echo init=unknown; fi
for m in apt-get dnf yum zypper apk; do
  if command -v "$m" >/dev/null 2>&1; then echo "pkg_mgr=$m"; break; fi
done
h=$(rd /proc/sys/kernel/hostname); [ -n "$h" ] || h=$(rd /etc/hostname)
echo "hostname=$h"
echo "machine_id=$(rd /etc/machine-id)"
echo "boot_id=$(rd /proc/sys/kernel/random/boot_id)"
"#;

/// Gathers the facts of the host behind `transport` in one exec.
pub async fn gather(transport: &dyn Transport) -> Result<Facts, FactsError> {
    let out = transport
        .exec(ExecRequest {
            script: FACTS_SCRIPT,
            stdin: None,
            privileged: false,
            timeout: Some(std::time::Duration::from_secs(60)),
        })
        .await
        .map_err(FactsError::Transport)?;
    if out.status != 0 {
        return Err(FactsError::Script {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads the `key=value` lines of [`FACTS_SCRIPT`].
pub fn parse(text: &str) -> Facts {
    let mut f = Facts::default();
    let mut os_like = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "os_id" => f.os_id = v.to_string(),
            "os_like" => os_like = v.to_string(),
            "os_version" => f.os_version = v.to_string(),
            "arch" => f.arch = v.to_string(),
            "kernel" => f.kernel = v.to_string(),
            "cpus" => f.cpus = v.parse().unwrap_or(0),
            "cpus_online" => f.cpus = count_cpu_list(v),
            "mem_kib" => f.memory_mib = v.parse::<u64>().unwrap_or(0) / 1024,
            "disk" => {
                if let Some((name, size)) = v.split_once(' ') {
                    f.disks.push(Disk {
                        name: name.to_string(),
                        size_bytes: size.parse().unwrap_or(0),
                    });
                }
            }
            "kvm_device" => f.kvm_device = true,
            "virt_cpu_flags" => f.virt_cpu_flags = true,
            "init" => f.init = v.to_string(),
            "pkg_mgr" => {
                f.pkg_mgr = match v {
                    "apt-get" => "apt",
                    other => other,
                }
                .to_string()
            }
            "hostname" => f.hostname = v.to_string(),
            "machine_id" => f.machine_id = v.to_string(),
            "boot_id" => f.boot_id = v.to_string(),
            _ => {}
        }
    }
    f.os_family = os_family(&f.os_id, &os_like);
    f
}

/// The number of CPUs in a kernel CPU list such as `0-3,6,8-9`.
fn count_cpu_list(list: &str) -> u32 {
    list.split(',')
        .filter_map(|part| match part.trim().split_once('-') {
            Some((a, b)) => Some(b.parse::<u32>().ok()?.checked_sub(a.parse().ok()?)? + 1),
            None => part.trim().parse::<u32>().ok().map(|_| 1),
        })
        .sum()
}

fn os_family(id: &str, like: &str) -> String {
    let words: Vec<&str> = std::iter::once(id).chain(like.split_whitespace()).collect();
    for (family, members) in [
        ("debian", &["debian", "ubuntu"][..]),
        (
            "redhat",
            &["rhel", "fedora", "centos", "rocky", "almalinux"][..],
        ),
        ("suse", &["suse", "opensuse", "sles", "opensuse-leap"][..]),
        ("alpine", &["alpine"][..]),
    ] {
        if words.iter().any(|w| members.contains(w)) {
            return family.to_string();
        }
    }
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_script_output() {
        let f = parse(
            "os_id=rocky\nos_like=rhel centos fedora\nos_version=9.4\narch=x86_64\ncpus=4\nmem_kib=2048000\n\
             disk=vda 10737418240\nkvm_device=1\ninit=systemd\npkg_mgr=dnf\nboot_id=abc\n",
        );
        assert_eq!(f.os_family, "redhat");
        assert_eq!(f.pkg_mgr, "dnf");
        assert_eq!(f.memory_mib, 2000);
        assert_eq!(
            f.disks,
            vec![Disk {
                name: "vda".into(),
                size_bytes: 10737418240
            }]
        );
        assert!(f.kvm_device && !f.virt_cpu_flags);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1"), 2);
        assert_eq!(count_cpu_list("0-3,6,8-9\n"), 7);
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list(""), 0);
        assert_eq!(count_cpu_list("3-1"), 0);
    }

    #[test]
    fn the_script_runs_on_this_machine() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(FACTS_SCRIPT)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(f.cpus >= 1);
        assert!(f.memory_mib > 0);
        assert!(!f.kernel.is_empty());
        let online = std::process::Command::new("getconf")
            .arg("_NPROCESSORS_ONLN")
            .output()
            .unwrap();
        assert_eq!(
            f.cpus.to_string(),
            String::from_utf8_lossy(&online.stdout).trim()
        );
        assert!(!f.machine_id.is_empty() && !f.boot_id.is_empty() && !f.hostname.is_empty());
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let has_virt = flags
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|w| w == "vmx" || w == "svm"));
        assert_eq!(f.virt_cpu_flags, has_virt);
    }
}
