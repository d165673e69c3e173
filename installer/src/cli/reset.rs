//! `edgeforge reset`: takes k3s off the nodes of a site (or of every site,
//! or one node) in the order of [`crate::plan::reset`], through the same
//! executor as `apply`; then forgets what edgeforge kept about them (their
//! outputs and journals, and for a whole site its kubeconfig), so the next
//! apply installs them from nothing.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::apply::{LogArgs, LogFormat, run_prepared};
use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::data::DataDir;
use crate::exec::outputs::{Outputs, file_name};
use crate::exec::prepare::{PrepareOptions, prepare};
use crate::exec::{RunOptions, TaskOutcome};
use crate::inventory::Inventory;
use crate::plan::Action;
use crate::plan::reset::reset_plan;
use crate::render::Renderer;
use crate::virt::baseimage::{self, BuildOptions};

/// Arguments of `edgeforge reset`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
For each node: its Node is deleted from the cluster first (so no stale etcd
member remains and the node can join again under its name), then k3s is
stopped and uninstalled: units, binary and links, /etc/rancher/k3s,
/var/lib/rancher/k3s, /run/k3s, /var/lib/kubelet, CNI state and
interfaces, and only the iptables rules k3s owns (KUBE-*, CNI-*, flannel);
nothing else on the node is touched. A whole site is first unjoined from
the federation host (when the inventory has one), then its agents are
reset, then its servers one at a time, the first server last. What
edgeforge kept about a reset node (its outputs and journal; for a site its
kubeconfig and tokens) is forgotten, so the next apply starts from nothing.

On a terminal, reset asks before it starts; --yes does not ask.

Examples:
  edgeforge reset -i inventory/lab.yaml
  edgeforge reset -i sites.yaml --site eu-paris-01 --yes
  edgeforge reset -i sites.yaml --node eu-paris-01-c

Exit codes: 0 reset, 1 a node failed, 2 invalid inventory or arguments,
130 interrupted.")]
pub struct ResetArgs {
    /// The inventory file (`inventory/lab.yaml` is the built-in lab when no such file exists).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Only this site.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// Only this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Do not ask before resetting.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Lock, journals and outputs (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Format of the event log.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write the event log to this file.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// Runs `edgeforge reset`.
pub fn run(g: &GlobalOpts, args: ResetArgs) -> Outcome {
    let loaded = match super::load_inventory(g, &args.inventory) {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    super::finish(reset(g, &args, &loaded.inventory))
}

fn reset(g: &GlobalOpts, args: &ResetArgs, inv: &Inventory) -> Result<Outcome, Error> {
    let plan = reset_plan(inv, args.site.as_deref(), args.node.as_deref())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let nodes: Vec<&str> = plan
        .tasks()
        .iter()
        .filter_map(|t| t.node.map(|n| n.name.as_str()))
        .collect();
    if !args.yes && std::io::stdin().is_terminal() && !confirm(&nodes) {
        eprintln!("reset: nothing done");
        return Ok(Outcome::Success);
    }
    let data = DataDir::new(g.data_dir.as_deref());
    let renderer = Renderer::new(&data)?;
    let state_dir = super::state_dir(args.state_dir.as_deref(), inv, &args.inventory);
    let prepared = prepare(
        inv,
        &plan,
        &PrepareOptions {
            data: &data,
            renderer: &renderer,
            adhoc: None,
            shard: None,
            state_dir: &state_dir,
            image: BuildOptions::new(baseimage::DEFAULT_RELEASE)?,
            max_unavailable: Default::default(),
        },
    )
    .map_err(crate::exec::ExecError::from)?;
    if !g.quiet {
        for note in &prepared.notes {
            eprintln!("note: {note}");
        }
    }
    let opts = RunOptions {
        // A reset checks every node itself: the journal is about to be forgotten.
        force: true,
        state_dir: Some(state_dir.clone()),
        ..RunOptions::default()
    };
    let log = LogArgs {
        format: args.log_format,
        file: args.log_file.clone(),
        diffs: false,
    };
    let (outcome, summary) = run_prepared(g, &log, &state_dir, prepared, renderer, data, &opts)?;
    let done = |key: &str| {
        summary
            .tasks
            .iter()
            .any(|t| t.task == key && t.outcome == TaskOutcome::Done)
    };
    // Forget what was kept about each node that is reset now.
    let outputs = Outputs::load(
        Some(&state_dir.join("outputs")),
        crate::exec::events::Redactor::default(),
    )
    .map_err(crate::exec::ExecError::from)?;
    for t in plan.tasks() {
        if let (Some(n), Action::ResetNode) = (t.node, t.action)
            && done(&t.key())
        {
            forget(
                &outputs,
                &state_dir,
                &format!("{}/", n.name.as_str()),
                n.name.as_str(),
            )?;
        }
    }
    // A site whose every node was reset has no cluster left to know about.
    if args.node.is_none() {
        for site in inv
            .sites
            .iter()
            .filter(|s| args.site.as_deref().is_none_or(|w| w == s.name.as_str()))
        {
            let all = plan
                .tasks()
                .iter()
                .filter(|t| std::ptr::eq(t.site, site))
                .all(|t| done(&t.key()));
            if all {
                let name = site.name.as_str();
                forget(
                    &outputs,
                    &state_dir,
                    &format!("site/{name}/"),
                    &format!("site/{name}"),
                )?;
                remove(&state_dir.join("kubeconfig").join(format!("{name}.yaml")))?;
            }
        }
    }
    Ok(outcome)
}

/// Forgets the outputs of tasks under `prefix` and the journal of `subject`.
fn forget(outputs: &Outputs, state: &Path, prefix: &str, subject: &str) -> Result<(), Error> {
    outputs
        .forget(prefix)
        .map_err(crate::exec::ExecError::from)?;
    remove(
        &state
            .join("journal")
            .join(format!("{}.jsonl", file_name(subject))),
    )
}

fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            what: "removing".into(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Asks on the terminal; true to go on.
fn confirm(nodes: &[&str]) -> bool {
    eprint!(
        "reset {} node(s) ({}): delete their Nodes and uninstall k3s? [y/N] ",
        nodes.len(),
        nodes.join(", ")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}
