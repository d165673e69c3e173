//! The libvirt lab harness: a running libvirtd (started if needed), the
//! `edgeforge` binary, lab inventories on loopback ports, and plain `ssh`
//! into the guests with the lab's key and known_hosts (host keys verified).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The libvirt URI the lab tests use.
pub const URI: &str = "qemu:///system";

/// Makes sure libvirtd (and virtlogd) answer on `qemu:///system`, starting
/// them as daemons when they do not (there is no systemd on CI machines).
/// Tests call this at once from several threads and processes: one thread
/// at a time starts the daemons, and a daemon already running (started by
/// another test process meanwhile) is left alone.
pub fn ensure_libvirtd() -> anyhow::Result<()> {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if virsh(&["version"]).is_ok() {
        return Ok(());
    }
    let running = |daemon: &str| {
        Command::new("pgrep")
            .args(["-x", daemon])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for daemon in ["virtlogd", "libvirtd"] {
        if running(daemon) {
            continue;
        }
        let status = Command::new(daemon).arg("-d").status().with_context(|| {
            format!("starting {daemon} (apt-get install libvirt-daemon-system)")
        })?;
        // `-d` fails when another process won the race to its pid file.
        if !status.success() && !running(daemon) {
            bail!("{daemon} -d failed: {status}");
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if virsh(&["version"]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("libvirtd started but {URI} does not answer after 30 s")
}

/// Runs `virsh -c qemu:///system ARGS`, returning stdout.
pub fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .context("running virsh")?;
    if !out.status.success() {
        bail!(
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `edgeforge ARGS`, returning its output whatever the exit code.
pub fn edgeforge(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(crate::edgeforge_bin())
        .args(args)
        .output()
        .context("running edgeforge")
}

/// Runs `edgeforge ARGS` with its state (lock, journals, outputs, lab keys)
/// under `state_home` (as `XDG_STATE_HOME`), whatever the exit code.
pub fn edgeforge_in(state_home: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(crate::edgeforge_bin())
        .env("XDG_STATE_HOME", state_home)
        .args(args)
        .output()
        .context("running edgeforge")
}

/// Where lab `lab`'s login key and known_hosts are when edgeforge runs with
/// `XDG_STATE_HOME=state_home` ([`edgeforge_in`]); what [`ssh`] takes.
pub fn lab_keys(state_home: &Path, lab: &str) -> std::path::PathBuf {
    state_home.join("edgeforge").join("lab").join(lab)
}

/// One lab VM for [`lab_inventory`].
#[derive(Debug, Clone)]
pub struct LabNode {
    /// Node name (the guest's hostname).
    pub name: String,
    /// Loopback port forwarded to the guest's SSH.
    pub port: u16,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The guest is a hypervisor host (the virt layer applies to it), and
    /// also a hypervisor of the inventory, named like the node and reached
    /// over SSH: `qemu+ssh://root@127.0.0.1:<port>/system`.
    pub hypervisor_host: bool,
}

/// An inventory for a lab `name` of `nodes`, all on the local libvirtd with
/// user-mode networking, logging in as root with the lab's generated key.
pub fn lab_inventory(name: &str, nodes: &[LabNode]) -> String {
    let mut yaml = format!(
        "apiVersion: edgeforge/v1\nname: {name}\ndefaults:\n  ssh: {{user: root}}\n  vm: {{cpus: 2, diskGib: 4}}\n\
         hypervisors:\n  - name: local\n    uri: \"{URI}\"\n    network: {{mode: user}}\n"
    );
    for n in nodes.iter().filter(|n| n.hypervisor_host) {
        yaml.push_str(&format!(
            "  - name: {}\n    uri: \"qemu+ssh://root@127.0.0.1:{}/system\"\n",
            n.name, n.port
        ));
    }
    yaml.push_str(&format!("sites:\n  - name: {name}\n    nodes:\n"));
    for (i, n) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: {}\n        role: {}\n        address: 127.0.0.1\n        hypervisorHost: {}\n        machine: {{type: libvirt, hypervisor: local, sshForwardPort: {}, vm: {{memoryMib: {}}}}}\n",
            n.name,
            if i == 0 { "server" } else { "agent" },
            n.hypervisor_host,
            n.port,
            n.memory_mib
        ));
    }
    yaml
}

/// Runs `command` in the guest behind 127.0.0.1:`port` as root with the
/// lab key, verifying the host key against the lab's known_hosts.
///
/// A guest that just answered SSH may still be finishing cloud-init, which
/// restarts sshd once; a connection refused in that window (ssh exits 255
/// before running anything) is retried for up to a minute. A failing
/// command is never retried.
pub fn ssh(state_dir: &Path, port: u16, command: &str) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match ssh_once(state_dir, port, command)? {
            Ok(stdout) => return Ok(stdout),
            Err(stderr) if std::time::Instant::now() < deadline => {
                eprintln!("ssh to 127.0.0.1:{port}: {stderr}; retrying");
                std::thread::sleep(std::time::Duration::from_secs(3));
            }
            Err(stderr) => bail!("ssh to 127.0.0.1:{port} `{command}` failed: {stderr}"),
        }
    }
}

/// One ssh run: `Ok(Ok(stdout))`, `Ok(Err(stderr))` when the connection
/// itself failed (exit 255), or an error when the command failed.
fn ssh_once(state_dir: &Path, port: u16, command: &str) -> anyhow::Result<Result<String, String>> {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(state_dir.join("id_ed25519"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            state_dir.join("known_hosts").display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "IdentitiesOnly=yes",
            "-p",
        ])
        .arg(port.to_string())
        .arg("root@127.0.0.1")
        .arg(command)
        .output()
        .context("running ssh")?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.code() == Some(255) {
        return Ok(Err(stderr));
    }
    if !out.status.success() {
        bail!("ssh to 127.0.0.1:{port} `{command}` failed: {stderr}");
    }
    Ok(Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// A command's stdout and stderr, as text (for messages).
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON events of an `--log-format json --log-file` log.
pub fn json_events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
