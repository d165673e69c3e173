//! `edgeforge apply`: bring every target to the state the plan describes.
//!
//! Parses the arguments, builds the plan, has [`crate::exec::prepare`] turn
//! it into the run's tasks, takes the run lock in the state directory and
//! hands the tasks to the [`Executor`]. Ctrl-C stops starting steps, lets
//! running ones finish (30 s at most; a second Ctrl-C abandons them), keeps
//! the journal consistent and exits 130.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::data::DataDir;
use crate::exec::events::{EventSink, Fanout, JsonSink, TextSink};
use crate::exec::lock::RunLock;
use crate::exec::prepare::{PrepareOptions, prepare};
use crate::exec::progress::ProgressSink;
use crate::exec::select::{MaxFail, MaxUnavailable, Shard};
use crate::exec::{Executor, RunOptions};
use crate::inventory::Inventory;
use crate::plan::{self, Layer, Limit, Selection};
use crate::playbook::Playbook;
use crate::render::Renderer;
use crate::virt::baseimage::{self, BuildOptions};

/// Arguments of `edgeforge apply`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  edgeforge apply -i inventory/lab.yaml                 # the built-in lab: VMs, OS, k3s, in one run
  edgeforge apply -i sites.yaml --layer os --check --diff
  edgeforge apply -i sites.yaml --limit 'edge-*,!edge-9' --parallel 100 --max-fail 5%
  edgeforge apply -i sites.yaml --shard 2/4 --log-format json --log-file run.jsonl
  edgeforge apply -i sites.yaml --tags kernel,swap --force
  edgeforge apply -i sites.yaml --playbook fix-ntp.yaml --limit 'site:eu-*'

A task starts as soon as the tasks it needs have succeeded; a failure stops
only the tasks that need it. The summary has one row per node (and per
site for cluster tasks) with the time spent in each layer.

k3s upgrades (a new `versions.k3s`) roll through each site: servers one at a
time, then agents in batches of --max-unavailable, each node cordoned,
drained, upgraded, waited for and uncordoned; the rollout stops at the first
node that does not come back and leaves the rest untouched.")]
pub struct ApplyArgs {
    /// The inventory file (`inventory/lab.yaml` is the built-in lab when no such file exists).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Only these layers (comma-separated or repeated; default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LAYER")]
    pub layer: Vec<Layer>,
    /// Run this playbook on every selected node instead of the layer playbooks.
    #[arg(long, value_name = "FILE", conflicts_with = "layer")]
    pub playbook: Option<PathBuf>,
    /// Only these nodes, sites or tasks: comma-separated globs (`site:S`, `task:K`), `!` to exclude.
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Tasks run at once per kind of target (hosts, clusters, hypervisors).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub parallel: usize,
    /// Stop starting tasks when more than N (or P% of) nodes and sites failed.
    #[arg(long, value_name = "N|P%")]
    pub max_fail: Option<MaxFail>,
    /// Agents of a site a k3s upgrade takes out of service at once: N, or P% of them (rounded down, at least 1).
    #[arg(long, value_name = "N|P%", default_value = "1")]
    pub max_unavailable: MaxUnavailable,
    /// Change nothing; show what would change.
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of changed files.
    #[arg(long)]
    pub diff: bool,
    /// Only steps with these tags (comma-separated; tag `always` always runs).
    #[arg(long, value_name = "T", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Never steps with these tags (comma-separated).
    #[arg(long, value_name = "T", value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Only the I-th of N slices of the sites (to split a fleet across runners).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Lock, journals and outputs (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Format of the event log.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write the event log to this file (one JSON object per line with --log-format json).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Ignore the journal: run every step even if it was applied with the same inputs.
    #[arg(long)]
    pub force: bool,
    /// Replace a cluster's registration on the federation host when the host
    /// has its name for another cluster id (a rebuilt cluster); without it,
    /// that is an error naming both ids.
    #[arg(long)]
    pub reregister: bool,
    #[command(flatten)]
    pub machines: MachineArgs,
}

/// How the machine layer builds VMs.
#[derive(Debug, Clone, clap::Args)]
pub struct MachineArgs {
    /// Rebuild VMs whose spec (cpus, memory, disk, image, keys) drifted from the inventory.
    #[arg(long)]
    pub recreate: bool,
    /// Debian release of the base VM image.
    #[arg(long, value_name = "RELEASE", default_value = baseimage::DEFAULT_RELEASE)]
    pub release: String,
    /// Cache root for the base image and the KVM probe result (default: the XDG cache dir's edgeforge/).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// Event log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Timestamped lines.
    Text,
    /// One JSON object per event.
    Json,
}

impl ApplyArgs {
    /// The arguments of `apply -i FILE --layer machine` (what `lab up` runs).
    pub fn machines_only(
        inventory: PathBuf,
        state_dir: Option<PathBuf>,
        machines: MachineArgs,
    ) -> ApplyArgs {
        ApplyArgs {
            layer: vec![Layer::Machine],
            state_dir,
            machines,
            ..ApplyArgs::with_inventory(inventory)
        }
    }

    /// The arguments of `apply -i FILE` with every default (what commands
    /// that run their own plan through [`execute`] start from).
    pub fn with_inventory(inventory: PathBuf) -> ApplyArgs {
        ApplyArgs {
            inventory,
            layer: Vec::new(),
            playbook: None,
            limit: None,
            parallel: 50,
            max_fail: None,
            max_unavailable: MaxUnavailable::default(),
            check: false,
            diff: false,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            shard: None,
            state_dir: None,
            log_format: LogFormat::Text,
            log_file: None,
            force: false,
            reregister: false,
            machines: MachineArgs {
                recreate: false,
                release: baseimage::DEFAULT_RELEASE.to_string(),
                cache: None,
            },
        }
    }
}

/// Runs `edgeforge apply`.
pub fn run(g: &GlobalOpts, args: ApplyArgs) -> Outcome {
    let loaded = match super::load_inventory(g, &args.inventory) {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    super::finish(apply(g, &args, &loaded.inventory))
}

fn apply(g: &GlobalOpts, args: &ApplyArgs, inv: &Inventory) -> Result<Outcome, Error> {
    if args.parallel == 0 {
        return Err(Error::Invalid("--parallel must be at least 1".into()));
    }
    let limit = args
        .limit
        .as_deref()
        .map(Limit::parse)
        .transpose()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let data = DataDir::new(g.data_dir.as_deref());
    let renderer = Renderer::new(&data)?;
    let selection = Selection {
        limit,
        layers: args.layer.clone(),
    };
    let plan = plan::build(inv, &selection)?;
    if plan.tasks().iter().any(|t| t.layer == Layer::K3s)
        && let Some(problem) = super::k3s_version_problem(g, inv, &args.inventory)
    {
        return Err(Error::Invalid(problem.to_string()));
    }
    execute(g, args, inv, &plan, data, renderer)
}

/// Runs the tasks of `plan` the way `apply` does (prepare, lock, events,
/// summary, Ctrl-C); `federation unjoin` runs its plan through here too.
pub(super) fn execute(
    g: &GlobalOpts,
    args: &ApplyArgs,
    inv: &Inventory,
    plan: &plan::Plan<'_>,
    data: DataDir,
    renderer: Renderer,
) -> Result<Outcome, Error> {
    let adhoc = match &args.playbook {
        Some(path) => Some(load_playbook_file(path)?),
        None => None,
    };
    let state_dir = super::state_dir(args.state_dir.as_deref(), inv, &args.inventory);
    let mut image = BuildOptions::new(&args.machines.release)?;
    image.data = data.clone();
    if let Some(cache) = &args.machines.cache {
        image.cache.clone_from(cache);
    }
    let prepared = prepare(
        inv,
        plan,
        &PrepareOptions {
            data: &data,
            renderer: &renderer,
            adhoc,
            shard: args.shard,
            state_dir: &state_dir,
            image,
            max_unavailable: args.max_unavailable,
        },
    )
    .map_err(crate::exec::ExecError::from)?;
    if !g.quiet {
        for note in &prepared.notes {
            eprintln!("note: {note}");
        }
    }
    for warning in &prepared.warnings {
        eprintln!("warning: {warning}");
    }
    if prepared.spec.tasks.is_empty() {
        eprintln!("nothing to do: no task matches --limit / --shard / --layer");
        return Ok(Outcome::Success);
    }
    let opts = RunOptions {
        parallel: args.parallel,
        max_fail: args.max_fail,
        check: args.check,
        diff: args.diff,
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        force: args.force,
        recreate: args.machines.recreate,
        reregister: args.reregister,
        state_dir: Some(state_dir.clone()),
    };
    let log = LogArgs {
        format: args.log_format,
        file: args.log_file.clone(),
        diffs: args.diff || args.check,
    };
    let (summary, _) = run_prepared(g, &log, &state_dir, prepared, renderer, data, &opts)?;
    Ok(summary)
}

/// Where a run's events go.
pub(super) struct LogArgs {
    /// Text lines or JSON.
    pub format: LogFormat,
    /// A file instead of standard error.
    pub file: Option<PathBuf>,
    /// Show diffs in the progress display.
    pub diffs: bool,
}

/// Takes the run lock of `state_dir`, runs the prepared tasks (Ctrl-C
/// stops them gracefully), prints the summary table; returns the outcome and the summary.
pub(super) fn run_prepared(
    g: &GlobalOpts,
    log: &LogArgs,
    state_dir: &Path,
    prepared: crate::exec::prepare::Prepared,
    renderer: Renderer,
    data: DataDir,
    opts: &RunOptions,
) -> Result<(Outcome, crate::exec::RunSummary), Error> {
    let command: Vec<String> = std::env::args().collect();
    let lock =
        RunLock::acquire(state_dir, &command.join(" ")).map_err(crate::exec::ExecError::from)?;
    if let Some(prev) = &lock.previous {
        eprintln!(
            "note: a previous apply (pid {} on {}, started {}) ended without releasing the lock; \
             its journal is kept and this run resumes from it",
            prev.pid, prev.host, prev.started
        );
    }
    let sink = make_sink(g, log, prepared.spec.tasks.len())?;
    let runtime = super::runtime()?;
    let summary = runtime.block_on(async {
        let executor = Executor::new(Arc::new(renderer), Arc::new(data), prepared.connector, sink);
        let cancel = executor.cancel_handle();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\ninterrupted: letting running steps finish (Ctrl-C again to abandon them)");
            cancel.stop();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            cancel.abort();
        });
        let summary = executor.run(prepared.spec, opts).await;
        summary.map(|s| (s, executor.redactor()))
    });
    drop(lock);
    let (summary, redactor) = summary?;
    if !g.quiet {
        print!("{}", redactor.redact(&summary.table()));
    }
    let outcome = match summary.exit_code() {
        0 => Outcome::Success,
        130 => Outcome::Interrupted,
        _ => Outcome::Failed,
    };
    Ok((outcome, summary))
}

/// Reads an ad-hoc playbook given with `--playbook`.
fn load_playbook_file(path: &Path) -> Result<Arc<Playbook>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "reading the playbook".into(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(Playbook::parse(
        &path.display().to_string(),
        &text,
    )?))
}

fn make_sink(g: &GlobalOpts, log: &LogArgs, tasks: usize) -> Result<Arc<dyn EventSink>, Error> {
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    let file = match &log.file {
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| Error::Io {
                what: "creating the log file".into(),
                path: path.clone(),
                source,
            })?,
        )) as Box<dyn std::io::Write + Send>),
        None => None,
    };
    match (log.format, file) {
        (LogFormat::Json, Some(f)) => sinks.push(Box::new(JsonSink::new(f))),
        (LogFormat::Json, None) => sinks.push(Box::new(JsonSink::new(Box::new(std::io::stderr())))),
        (LogFormat::Text, Some(f)) => sinks.push(Box::new(TextSink::new(f, true))),
        (LogFormat::Text, None) => {}
    }
    let json_on_stderr = log.format == LogFormat::Json && log.file.is_none();
    if !g.quiet && !json_on_stderr {
        if std::io::stderr().is_terminal() {
            sinks.push(Box::new(ProgressSink::new(tasks, log.diffs)));
        } else {
            sinks.push(Box::new(TextSink::new(
                Box::new(std::io::stderr()),
                g.verbose > 0,
            )));
        }
    }
    Ok(Arc::new(Fanout(sinks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
apiVersion: edgeforge/v1
name: lab
defaults:
  ssh:
    identityFile: key
sites:
  - name: store-1
    nodes:
      - { name: s1-a, role: server, address: 10.0.1.10 }
      - { name: s1-b, role: agent, address: 10.0.1.11 }
  - name: store-2
    nodes:
      - { name: s2-a, role: server, address: 10.0.2.10 }
  - name: store-3
    nodes:
      - { name: s3-a, role: server, address: 10.0.3.10 }
"#;

    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        a: ApplyArgs,
    }

    fn global() -> GlobalOpts {
        GlobalOpts {
            verbose: 0,
            quiet: true,
            color: super::super::ColorChoice::Never,
            data_dir: None,
        }
    }

    /// The run's tasks for `extra` arguments, as `prepare` makes them.
    fn tasks(dir: &Path, text: &str, extra: &[&str]) -> Result<Vec<crate::exec::ExecTask>, Error> {
        let inv_path = dir.join("inv.yaml");
        std::fs::write(&inv_path, text).unwrap();
        std::fs::write(dir.join("key"), "not read before connecting").unwrap();
        let mut argv = vec![
            "apply".to_string(),
            "-i".into(),
            inv_path.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args = <W as clap::Parser>::try_parse_from(argv).unwrap().a;
        let inv = crate::inventory::load(&inv_path)
            .map_err(Error::from)?
            .inventory;
        let data = DataDir::Embedded;
        let renderer = Renderer::new(&data)?;
        let limit = args
            .limit
            .as_deref()
            .map(Limit::parse)
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let plan = plan::build(
            &inv,
            &Selection {
                limit,
                layers: args.layer.clone(),
            },
        )?;
        let prepared = prepare(
            &inv,
            &plan,
            &PrepareOptions {
                data: &data,
                renderer: &renderer,
                adhoc: None,
                shard: args.shard,
                state_dir: dir,
                image: BuildOptions::new(baseimage::DEFAULT_RELEASE)?,
                max_unavailable: args.max_unavailable,
            },
        )
        .map_err(crate::exec::ExecError::from)?;
        Ok(prepared.spec.tasks)
    }

    fn os_subjects(t: &[crate::exec::ExecTask]) -> Vec<String> {
        t.iter()
            .filter(|t| t.layer == "os")
            .map(|t| t.subject.clone())
            .collect()
    }

    #[test]
    fn limit_and_shard_select_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let t = tasks(dir.path(), INVENTORY, &["--limit", "site:store-1,s3-*"]).unwrap();
        assert_eq!(os_subjects(&t), vec!["s1-a", "s1-b", "s3-a"]);
        let mut all = Vec::new();
        for i in 1..=3 {
            let n = os_subjects(
                &tasks(dir.path(), INVENTORY, &["--shard", &format!("{i}/3")]).unwrap(),
            );
            // A site's nodes stay together in one shard.
            assert_eq!(
                n.contains(&"s1-a".to_string()),
                n.contains(&"s1-b".to_string())
            );
            all.extend(n);
        }
        all.sort();
        assert_eq!(all, vec!["s1-a", "s1-b", "s2-a", "s3-a"]);
    }

    #[test]
    fn the_os_playbook_runs_on_hosts_with_the_cluster_context_after_the_machine_layer() {
        let dir = tempfile::tempdir().unwrap();
        let t = tasks(dir.path(), INVENTORY, &[]).unwrap();
        let os = t.iter().find(|t| t.key == "s1-a/os").unwrap();
        assert_eq!(os.playbook.name, "os");
        assert_eq!(os.target, crate::exec::Target::Host("s1-a".into()));
        assert_eq!(os.context["cluster"]["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(os.context["node"]["role"], "server");
        let machine = t.iter().position(|t| t.key == "s1-a/machine").unwrap();
        assert_eq!(
            os.deps,
            vec![machine],
            "an existing machine answers SSH first"
        );
    }

    #[test]
    fn a_bad_inventory_or_limit_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = tasks(dir.path(), "apiVersion: edgeforge/v1\nsites: 3\n", &[])
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 2);
        let err = tasks(dir.path(), INVENTORY, &["--limit", "no-such-node"])
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 2);
        let mut a = <W as clap::Parser>::try_parse_from(["apply", "-i", "x"])
            .unwrap()
            .a;
        a.inventory = dir.path().join("missing.yaml");
        assert_ne!(run(&global(), a), Outcome::Success);
        let bad = <W as clap::Parser>::try_parse_from(["apply", "-i", "x", "--layer", "nope"]);
        assert!(bad.is_err());
    }

    #[test]
    fn a_missing_secret_names_the_reference_and_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let text = INVENTORY.replace(
            "defaults:\n",
            "defaults:\n  k3s:\n    token: { env: EF_TEST_TOKEN_THAT_IS_UNSET }\n",
        );
        let err = tasks(dir.path(), &text, &[]).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(
            crate::error::chain(&err).contains("EF_TEST_TOKEN_THAT_IS_UNSET"),
            "{err}"
        );
    }
}
