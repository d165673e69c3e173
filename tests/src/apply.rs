//! Driving the real `edgeforge apply` binary against an [`SshdFleet`]: a
//! generated inventory, a data directory of test templates, ad-hoc
//! playbooks, and the JSON event log read back. Used by the `apply_*`
//! suites and the `apply_bench` binary.
//!
//! The binary is [`crate::edgeforge_bin`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::{SshdFleet, edgeforge_bin};
use serde_json::Value;

/// How nodes are grouped and reached in a generated inventory.
#[derive(Clone)]
pub struct InventoryOpts {
    /// Nodes per site (the first of each site is the server).
    pub per_site: usize,
    /// Extra YAML under `defaults:` (indented two spaces), e.g. a k3s token.
    pub defaults_extra: String,
    /// SSH user (default root).
    pub user: String,
    /// Extra YAML under `defaults.ssh:` (indented four spaces), e.g. sudo.
    pub ssh_extra: String,
    /// Extra YAML at the top level (e.g. `jumpHosts:`).
    pub top_extra: String,
    /// Per node index: extra flow-map entries for its `ssh:` (e.g. `jump: [bastion]`).
    pub node_ssh_extra: Vec<(usize, String)>,
    /// Node indices left out of the inventory (e.g. a bastion).
    pub skip: Vec<usize>,
}

impl Default for InventoryOpts {
    fn default() -> Self {
        InventoryOpts {
            per_site: 3,
            defaults_extra: String::new(),
            user: "root".into(),
            ssh_extra: String::new(),
            top_extra: String::new(),
            node_ssh_extra: Vec::new(),
            skip: Vec::new(),
        }
    }
}

/// An inventory for the fleet: node `i` is `node<i>` at its 127.0.0.x address and port.
pub fn inventory_yaml(fleet: &SshdFleet, o: &InventoryOpts) -> String {
    let mut y = format!(
        "apiVersion: edgeforge/v1\nname: e2e\n{}defaults:\n  ssh:\n    user: {}\n    identityFile: {}\n    hostKey: {{ knownHosts: {} }}\n{}{}sites:\n",
        o.top_extra,
        o.user,
        fleet.client_key().display(),
        fleet.known_hosts().display(),
        o.ssh_extra,
        o.defaults_extra,
    );
    let nodes: Vec<usize> = (0..fleet.nodes().len())
        .filter(|i| !o.skip.contains(i))
        .collect();
    for (s, chunk) in nodes.chunks(o.per_site.max(1)).enumerate() {
        let _ = writeln!(y, "  - name: site-{s}\n    nodes:");
        for (k, &i) in chunk.iter().enumerate() {
            let node = fleet.node(i);
            let role = if k == 0 { "server" } else { "agent" };
            let extra: String = o
                .node_ssh_extra
                .iter()
                .filter(|(n, _)| *n == i)
                .map(|(_, e)| format!(", {e}"))
                .collect();
            let _ = writeln!(
                y,
                "      - {{ name: node{i}, role: {role}, address: {}, ssh: {{ port: {}{extra} }} }}",
                node.addr(),
                node.port()
            );
        }
    }
    y
}

/// A working directory for one scenario: inventory, playbook, data dir, state dir, logs.
pub struct Scenario {
    /// Temporary directory holding everything below.
    pub dir: tempfile::TempDir,
    /// The fleet's directory: node `i`'s root is `<base>/node<i>/root`.
    pub base: PathBuf,
}

impl Scenario {
    /// A scenario for this fleet, with the inventory written.
    pub fn new(fleet: &SshdFleet, o: &InventoryOpts) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/templates")).unwrap();
        std::fs::write(dir.path().join("inv.yaml"), inventory_yaml(fleet, o)).unwrap();
        Scenario {
            dir,
            base: fleet.dir().to_path_buf(),
        }
    }

    /// A path inside the scenario directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the playbook `name.yaml`; `{base}` in the steps becomes the fleet directory.
    pub fn playbook(&self, name: &str, steps: &str) -> PathBuf {
        let text = format!(
            "name: {name}\nvars:\n  base: {}\nsteps:\n{steps}",
            self.base.display()
        );
        let p = self.path(&format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a template under the data directory's templates/.
    pub fn template(&self, name: &str, text: &str) {
        std::fs::write(self.path("data/templates").join(name), text).unwrap();
    }

    /// The `edgeforge apply` command for a playbook with JSON events in `log`.
    pub fn apply_cmd(&self, playbook: &Path, log: &str, extra: &[&str]) -> Command {
        let mut args = vec!["--playbook".to_string(), playbook.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.layers_cmd(log, &args)
    }

    /// The `edgeforge apply` command for the layer playbooks of the scenario's
    /// data directory (`data/playbooks/...`), with JSON events in `log`.
    pub fn layers_cmd(&self, log: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(edgeforge_bin());
        c.arg("--data-dir")
            .arg(self.path("data"))
            .arg("apply")
            .arg("-i")
            .arg(self.path("inv.yaml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--log-format", "json", "--log-file"])
            .arg(self.path(log))
            .args(extra)
            .stdin(Stdio::null());
        c
    }

    /// Runs apply to the end.
    pub fn apply(&self, playbook: &Path, log: &str, extra: &[&str]) -> Run {
        let out = self.apply_cmd(playbook, log, extra).output().unwrap();
        Run::new(out, &self.path(log))
    }

    /// Starts apply with piped output (for signals and sampling).
    pub fn spawn(&self, playbook: &Path, log: &str, extra: &[&str]) -> Child {
        self.apply_cmd(playbook, log, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// One finished `edgeforge apply`.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output (the summary table).
    pub stdout: String,
    /// Standard error (notes, errors).
    pub stderr: String,
    /// The JSON event log, raw.
    pub log: String,
    /// The JSON events, parsed.
    pub events: Vec<Value>,
}

impl Run {
    /// Reads the event log of a finished process.
    pub fn new(out: Output, log: &Path) -> Run {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let events = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("every event line is JSON"))
            .collect();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            log,
            events,
        }
    }

    /// `step_finished` events, optionally of one node (its `subject`).
    pub fn steps<'a>(&'a self, host: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| {
            e["event"] == "step_finished" && host.is_none_or(|h| e["subject"] == h)
        })
    }

    /// How many `step_finished` events have this status.
    pub fn count(&self, status: &str) -> usize {
        self.steps(None).filter(|e| e["status"] == status).count()
    }

    /// Status of one host's named step.
    pub fn status(&self, host: &str, step: &str) -> String {
        self.steps(Some(host))
            .find(|e| e["step"] == step)
            .and_then(|e| e["status"].as_str())
            .unwrap_or("missing")
            .to_string()
    }

    /// The last `task_finished` event of a node (with `--playbook`, its only task).
    pub fn host(&self, host: &str) -> Option<&Value> {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "task_finished" && e["subject"] == host)
    }

    /// The `run_finished` event.
    pub fn finished(&self) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == "run_finished")
            .expect("the log has a run_finished event")
    }

    /// Everything the run printed and logged, for messages.
    pub fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- log\n{}",
            self.code, self.stdout, self.stderr, self.log
        )
    }
}

/// `R` in generated playbooks: the node's own root directory.
pub const NODE_ROOT: &str = "{{ vars.base }}/{{ node.name }}/root";

/// Steps of [`Scenario::fleet_playbook`]: 2 dirs, 8 templates, 2 copies, 4 lineinfile, 4 commands.
pub const FLEET_STEPS: usize = 20;

impl Scenario {
    /// The must-show playbook: 2 dirs, 8 templates, 2 uploads of 1 MB (copy),
    /// 4 lineinfile and 4 guarded commands, all under each node's root.
    pub fn fleet_playbook(&self) -> PathBuf {
        let r = NODE_ROOT;
        let mut steps = format!(
            "  - name: dir etc\n    file: {{ path: \"{r}/etc/edge\", state: directory }}\n\
             \x20 - name: dir data\n    file: {{ path: \"{r}/var/edge\", state: directory, mode: \"0700\" }}\n"
        );
        for t in 0..8 {
            self.template(
                &format!("t{t}.j2"),
                &format!(
                    "# template {t} of {{{{ node.name }}}}\nsite: {{{{ site.name }}}}\nrole: {{{{ node.role }}}}\n\
                     peers:\n{{% for n in cluster.nodes %}}  - {{{{ n.name }}}}\n{{% endfor %}}"
                ),
            );
            let _ = write!(
                steps,
                "  - name: template {t}\n    template: {{ src: t{t}.j2, dest: \"{r}/etc/edge/t{t}.conf\", mode: \"0644\" }}\n"
            );
        }
        for b in 0..2 {
            let blob = self.path(&format!("blob{b}.bin"));
            let mut data = vec![0u8; 1 << 20];
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ b;
            for chunk in data.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            std::fs::write(&blob, data).unwrap();
            let _ = write!(
                steps,
                "  - name: upload {b}\n    copy: {{ src: \"{}\", dest: \"{r}/var/edge/blob{b}.bin\" }}\n",
                blob.display()
            );
        }
        for l in 0..4 {
            let _ = write!(
                steps,
                "  - name: lineinfile {l}\n    lineinfile: {{ path: \"{r}/etc/edge/settings\", regexp: \"^key{l}=\", line: \"key{l}=value{l}\", create: true }}\n"
            );
        }
        for c in 0..4 {
            let _ = write!(
                steps,
                "  - name: command {c}\n    command: {{ cmd: \"echo {c} >> {r}/var/edge/ran && touch {r}/var/edge/done{c}\", creates: \"{r}/var/edge/done{c}\" }}\n"
            );
        }
        self.playbook("fleet", &steps)
    }
}
