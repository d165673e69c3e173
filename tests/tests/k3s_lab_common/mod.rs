//! Shared by the k3s lab suites (with the k3s stand-in, and with a real k3s
//! when one is provided): a lab of three TCG guests on the local libvirtd
//! driven only through the `edgeforge` binary (apply, kubeconfig, reset, lab
//! down), with its own data directory (the project's playbooks, templates
//! and images, and a manifest pinning the artifacts under test), artifact
//! cache, state directory and inventory; plus ssh into the guests and the
//! real kubectl 1.37 against the merged kubeconfig.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The lab's name: libvirt domains `k3se2e-<node>`.
pub const LAB: &str = "k3se2e";
/// SSH ports of the three guests.
pub const SSH_PORTS: [u16; 3] = [2211, 2212, 2213];
/// The first server's API on loopback.
pub const API_PORT: u16 = 2216;
/// The isolated network between the guests.
pub const NETWORK: &str = "ef-k3se2e";
/// Node names, in inventory order.
pub const NODES: [&str; 3] = ["k3se2e-n1", "k3se2e-n2", "k3se2e-n3"];

/// One lab: its directories and how edgeforge is run for it.
pub struct Lab {
    /// Everything the test owns.
    pub dir: tempfile::TempDir,
    /// `--data-dir`.
    pub data: PathBuf,
    /// `XDG_STATE_HOME` of every edgeforge run.
    pub state_home: PathBuf,
    /// `EDGEFORGE_CACHE`.
    pub cache: PathBuf,
    /// The inventory file (rewritten per phase).
    pub inventory: PathBuf,
    /// The kubeconfig `edgeforge kubeconfig --merge` writes.
    pub kubeconfig: PathBuf,
    /// Guest memory.
    pub memory_mib: u64,
}

/// What one edgeforge run did.
pub struct Run {
    /// Its exit status, stdout and stderr.
    pub output: Output,
    /// Its JSON events.
    pub events: Vec<Value>,
    /// The raw event log.
    pub log: String,
    /// Wall time.
    pub took: Duration,
    /// Every command line seen on this machine while it ran.
    pub processes: Vec<String>,
}

impl Run {
    /// stdout and stderr.
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// `step_finished` events.
    pub fn steps(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == "step_finished")
            .collect()
    }

    /// (subject, step) of every step that changed something.
    pub fn changed(&self) -> Vec<(String, String)> {
        self.steps()
            .into_iter()
            .filter(|e| e["status"] == "changed")
            .map(|e| {
                (
                    e["subject"].as_str().unwrap_or_default().to_string(),
                    e["step"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Index in the event stream of the first event matching `f`.
    pub fn position(&self, f: impl Fn(&Value) -> bool) -> Option<usize> {
        self.events.iter().position(f)
    }
}

impl Lab {
    /// A lab whose artifact cache and manifest are `cache` and `manifest`.
    pub fn new(cache: &Path, manifest: &Path, dir: tempfile::TempDir, memory_mib: u64) -> Lab {
        edgeforge_tests::lab::ensure_libvirtd().expect("libvirtd");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = dir.path().join("data");
        for sub in ["playbooks", "templates", "images"] {
            copy_tree(&root.join(sub), &data.join(sub));
        }
        std::fs::copy(manifest, data.join("images/manifest.yaml")).expect("the test manifest");
        let lab = Lab {
            data,
            state_home: dir.path().join("state-home"),
            cache: cache.to_path_buf(),
            inventory: dir.path().join("lab.yaml"),
            kubeconfig: dir.path().join("kube/config"),
            memory_mib,
            dir,
        };
        // A run killed halfway may have left the lab behind.
        lab.write_inventory(&Phase::default());
        let _ = lab.edgeforge(&["lab", "down", "-i", &lab.inv()]);
        lab
    }

    /// The inventory path as an argument.
    pub fn inv(&self) -> String {
        self.inventory.display().to_string()
    }

    /// The inventory's state directory.
    pub fn state(&self) -> PathBuf {
        self.state_home.join("edgeforge").join(LAB)
    }

    /// Writes the inventory of `phase`.
    pub fn write_inventory(&self, phase: &Phase) {
        let mut y = format!(
            "apiVersion: edgeforge/v1\nname: {LAB}\nversions: {{k3s: {version}}}\n\
             defaults:\n  ssh: {{user: root}}\n  vm: {{cpus: 2, memoryMib: {mem}, diskGib: 4}}\n  k3s:\n\
             \x20   registryMirrors:\n      docker.io: [\"{mirror}\"]\n\
             hypervisors:\n  - name: local\n    uri: \"qemu:///system\"\n    network: {{mode: user}}\n\
             \x20   clusterNetwork: {{name: {NETWORK}, cidr: 10.77.0.0/24}}\n\
             sites:\n  - name: {LAB}\n    nodes:\n",
            version = phase.version,
            mem = self.memory_mib,
            mirror = phase.mirror,
        );
        for (i, node) in NODES.iter().enumerate() {
            let role = if i == 0 || phase.ha {
                "server"
            } else {
                "agent"
            };
            let api = if i == 0 {
                format!(", apiForwardPort: {API_PORT}")
            } else {
                String::new()
            };
            y.push_str(&format!(
                "      - name: {node}\n        role: {role}\n        address: 127.0.0.1\n        \
                 machine: {{type: libvirt, hypervisor: local, sshForwardPort: {}{api}, clusterAddress: 10.77.0.{}}}\n",
                SSH_PORTS[i],
                11 + i
            ));
        }
        std::fs::write(&self.inventory, y).expect("writing the inventory");
    }

    /// Runs edgeforge with the lab's state, cache and data directory; returns its output.
    pub fn edgeforge(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running edgeforge")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(edgeforge_tests::edgeforge_bin());
        cmd.env("XDG_STATE_HOME", &self.state_home)
            .env("EDGEFORGE_CACHE", &self.cache)
            .env("EDGEFORGE_DATA_DIR", &self.data)
            .env_remove("KUBECONFIG")
            .args(args);
        cmd
    }

    /// `edgeforge <command> -i INVENTORY ARGS --log-format json --log-file F`,
    /// watching this machine's process list while it runs.
    pub fn run(&self, command: &str, name: &str, extra: &[&str]) -> Run {
        let log = self.dir.path().join(format!("{name}.jsonl"));
        let log_s = log.display().to_string();
        let inv = self.inv();
        let mut args = vec![
            command,
            "-i",
            inv.as_str(),
            "--log-format",
            "json",
            "--log-file",
            &log_s,
        ];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running edgeforge");
        let out_reader = drain(child.stdout.take());
        let err_reader = drain(child.stderr.take());
        let mut processes = Vec::new();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for edgeforge") {
                break status;
            }
            processes.extend(command_lines());
            std::thread::sleep(Duration::from_millis(300));
        };
        let output = Output {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let run = Run {
            events: text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            log: text,
            output,
            took: started.elapsed(),
            processes,
        };
        // Only the summary table: a failing assertion prints the whole output,
        // and CI keeps the head and tail of a log, where the panic must be.
        let text = run.text();
        let summary: Vec<&str> = text.lines().take_while(|l| !l.starts_with("20")).collect();
        println!(
            "--- edgeforge {command} ({name}): {:.0} s, {}\n{}",
            run.took.as_secs_f64(),
            run.output.status,
            summary.join("\n")
        );
        run
    }

    /// Runs `command` as root in guest `i` (0-based), host key verified.
    pub fn ssh(&self, i: usize, command: &str) -> String {
        edgeforge_tests::lab::ssh(
            &edgeforge_tests::lab::lab_keys(&self.state_home, LAB),
            SSH_PORTS[i],
            command,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", NODES[i]))
    }

    /// Whether `command` succeeds in guest `i`.
    pub fn ssh_ok(&self, i: usize, command: &str) -> bool {
        self.ssh(i, &format!("if {command}; then echo yes; else echo no; fi")) == "yes"
    }

    /// kubectl 1.37 with the merged kubeconfig and the lab's context.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(edgeforge_tests::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", LAB, "--request-timeout", "30s"])
            .args(args)
            .output()
            .expect("running kubectl (tests/setup-host.sh installs it)")
    }

    /// `kubectl get nodes -o json`: name → (Ready, kubelet version, unschedulable, labels).
    pub fn nodes(&self) -> Vec<(String, bool, String, bool, Value)> {
        let out = self.kubectl(&["get", "nodes", "-o", "json"]);
        assert!(
            out.status.success(),
            "kubectl get nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("kubectl's JSON");
        doc["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                (
                    n["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ready,
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    n["spec"]["unschedulable"] == true,
                    n["metadata"]["labels"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("EDGEFORGE_KEEP_LAB").is_none() {
            let out = self.edgeforge(&["lab", "down", "-i", &self.inv()]);
            println!("--- lab down\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// What changes between the phases of a suite.
#[derive(Debug, Clone)]
pub struct Phase {
    /// `versions.k3s`.
    pub version: String,
    /// The docker.io mirror.
    pub mirror: String,
    /// Three servers instead of one server and two agents.
    pub ha: bool,
}

impl Default for Phase {
    fn default() -> Phase {
        Phase {
            version: "v1.34.2+k3s1".into(),
            mirror: "https://mirror-a.example.com:5000".into(),
            ha: false,
        }
    }
}

/// `edgeforge kubeconfig --merge` into the lab's kubeconfig.
pub fn merge_kubeconfig(lab: &Lab) {
    let out = lab.edgeforge(&[
        "kubeconfig",
        "-i",
        &lab.inv(),
        "--merge",
        &lab.kubeconfig.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The wall time of each layer in a run: its first task's start to its last task's end.
pub fn layer_times(run: &Run, timings: &mut Vec<(String, Duration)>) {
    let mut span: BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> = BTreeMap::new();
    for e in &run.events {
        let (Some(layer), Some(ts)) = (e["layer"].as_str(), e["ts"].as_str()) else {
            continue;
        };
        let Ok(ts) = ts.parse::<jiff::Timestamp>() else {
            continue;
        };
        let entry = span.entry(layer.to_string()).or_insert((ts, ts));
        entry.0 = entry.0.min(ts);
        entry.1 = entry.1.max(ts);
    }
    for (layer, (from, to)) in span {
        let secs = (to - from)
            .total(jiff::Unit::Second)
            .unwrap_or(0.0)
            .max(0.0);
        timings.push((format!("  layer {layer}"), Duration::from_secs_f64(secs)));
    }
}

/// Neither secret is in the run's output, events or command lines.
pub fn no_secret_in(run: &Run, secrets: &[&str]) {
    let text = run.text();
    for s in secrets {
        assert!(!text.contains(s), "a token in the output");
        assert!(!run.log.contains(s), "a token in the event log");
        assert!(
            !run.processes.iter().any(|p| p.contains(s)),
            "a token in a command line"
        );
    }
    assert!(!run.processes.is_empty());
}

/// The MainPID of k3s on each node.
pub fn main_pids(lab: &Lab) -> Vec<String> {
    (0..3)
        .map(|i| {
            let unit = if i == 0 || lab.ssh_ok(i, "[ -e /etc/systemd/system/k3s.service ]") {
                "k3s"
            } else {
                "k3s-agent"
            };
            lab.ssh(i, &format!("systemctl show -p MainPID --value {unit}"))
        })
        .collect()
}

/// Guest `i` has no k3s file, unit, link, interface, network namespace or
/// iptables rule left, and still has the rule commented `edgeforge-test-keep`.
pub fn assert_no_k3s_left(lab: &Lab, i: usize) {
    for path in [
        "/usr/local/bin/k3s",
        "/usr/local/bin/kubectl",
        "/usr/local/bin/crictl",
        "/usr/local/bin/ctr",
        "/usr/local/bin/k3s-killall.sh",
        "/usr/local/bin/k3s-uninstall.sh",
        "/etc/systemd/system/k3s.service",
        "/etc/systemd/system/k3s-agent.service",
        "/etc/systemd/system/k3s.service.env",
        "/etc/systemd/system/k3s-agent.service.env",
        "/etc/rancher/k3s",
        "/var/lib/rancher/k3s",
        "/run/k3s",
        "/var/lib/kubelet",
        "/var/lib/cni",
    ] {
        assert!(
            !lab.ssh_ok(i, &format!("[ -e {path} ] || [ -L {path} ]")),
            "{}: {path} is left",
            NODES[i]
        );
    }
    assert_eq!(
        lab.ssh(i, "systemctl list-unit-files 'k3s*' --no-legend | wc -l"),
        "0"
    );
    for link in ["cni0", "flannel.1"] {
        assert!(
            !lab.ssh_ok(i, &format!("ip link show {link} >/dev/null 2>&1")),
            "{}: {link} is left",
            NODES[i]
        );
    }
    assert_eq!(lab.ssh(i, "ip netns list | grep -c '^cni-' || true"), "0");
    let rules = lab.ssh(i, "iptables-save; ip6tables-save");
    for owned in ["KUBE-", "CNI-", "FLANNEL", "flannel"] {
        assert!(
            !rules.contains(owned),
            "{}: {owned} rules are left:\n{rules}",
            NODES[i]
        );
    }
    assert!(
        rules.contains("edgeforge-test-keep"),
        "{}: the test's own rule is gone:\n{rules}",
        NODES[i]
    );
}

/// An artifact cache and manifest holding real k3s releases, from a
/// directory laid out as `<dir>/<version>/k3s` and
/// `<dir>/<version>/k3s-airgap-images-amd64.tar.zst` (amd64 only).
pub struct RealArtifacts {
    /// The cache directory.
    pub cache: PathBuf,
    /// The manifest pinning what is in the cache.
    pub manifest: PathBuf,
    /// The releases found, oldest first.
    pub versions: Vec<String>,
}

impl RealArtifacts {
    /// Hashes and caches every release under `src`; writes `dir/manifest.yaml`.
    pub fn prepare(src: &Path, dir: &Path) -> RealArtifacts {
        use edgeforge::artifacts::{Arch, ArtifactCache, ArtifactRef};
        let mut versions: Vec<String> = std::fs::read_dir(src)
            .unwrap_or_else(|e| panic!("EDGEFORGE_REAL_K3S_DIR={}: {e}", src.display()))
            .flatten()
            .filter(|e| e.path().join("k3s").is_file())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        versions.sort_by_key(|v| release_order(v));
        assert!(
            !versions.is_empty(),
            "EDGEFORGE_REAL_K3S_DIR={} holds no <version>/k3s",
            src.display()
        );
        let cache_dir = dir.join("cache");
        let cache = ArtifactCache::open(&cache_dir).expect("opening the artifact cache");
        let (mut k3s_pins, mut airgap_pins) = (String::new(), String::new());
        for v in &versions {
            for (name, file, pins) in [
                ("k3s", "k3s", &mut k3s_pins),
                (
                    "k3s-airgap-images",
                    "k3s-airgap-images-amd64.tar.zst",
                    &mut airgap_pins,
                ),
            ] {
                let path = src.join(v).join(file);
                assert!(path.is_file(), "{} is missing", path.display());
                let entry = cache
                    .insert_file(
                        &ArtifactRef::new(name, v.as_str(), Arch::Amd64),
                        file,
                        &path,
                    )
                    .expect("caching a real k3s artifact");
                pins.push_str(&format!(
                    "      {v}:\n        amd64:\n          sha256: {}\n",
                    entry.sha256
                ));
            }
        }
        let manifest = format!(
            "# Test manifest: real k3s releases from EDGEFORGE_REAL_K3S_DIR.\n\
             defaults:\n  k3s: {first}\n\
             artifacts:\n\
             \x20 k3s:\n    description: k3s.\n    component: k3s\n    files:\n      amd64: k3s\n      arm64: k3s-arm64\n\
             \x20   urls:\n      - \"https://github.com/k3s-io/k3s/releases/download/{{version}}/{{file}}\"\n    pins:\n{k3s_pins}\
             \x20 k3s-airgap-images:\n    description: k3s's images.\n    component: k3s\n    files:\n      amd64: k3s-airgap-images-amd64.tar.zst\n      arm64: k3s-airgap-images-arm64.tar.zst\n\
             \x20   urls:\n      - \"https://github.com/k3s-io/k3s/releases/download/{{version}}/{{file}}\"\n    pins:\n{airgap_pins}",
            first = versions[0],
        );
        let manifest_path = dir.join("manifest.yaml");
        std::fs::write(&manifest_path, manifest).expect("writing the test manifest");
        RealArtifacts {
            cache: cache_dir,
            manifest: manifest_path,
            versions,
        }
    }
}

/// `vX.Y.Z+k3sN` as numbers, for sorting releases.
fn release_order(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '+', 'k', 's'])
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = std::io::Read::read_to_end(&mut p, &mut buf);
        }
        buf
    })
}

/// The command line of every process on this machine.
fn command_lines() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline"))
            && !raw.is_empty()
        {
            out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the data directory");
    for entry in std::fs::read_dir(from)
        .expect("reading the project's data")
        .flatten()
    {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copying data");
        }
    }
}
