//! `edgeforge apply`: bring hosts to the state the playbooks describe.
//!
//! Reads the inventory, picks the nodes (`--shard`, `--limit`), loads the
//! playbooks of the selected layers, takes the run lock in the state
//! directory and hands the hosts to the [`Executor`]. Ctrl-C stops starting
//! steps, lets running ones finish (30 s at most; a second Ctrl-C abandons
//! them), keeps the journal consistent and exits 130.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use super::{GlobalOpts, Outcome};
use crate::exec::events::{EventSink, Fanout, JsonSink, ProgressSink, TextSink};
use crate::exec::lock::RunLock;
use crate::exec::select::{MaxFail, Shard};
use crate::exec::{Connector, Executor, HostWork, RunOptions};
use crate::inventory::{Inventory, NodeView};
use crate::plan::{self, Layer, Limit, Selection};
use crate::playbook::Playbook;
use crate::render::{DataDir, Renderer, inventory_context};
use crate::transport::ssh::SshTransport;
use crate::transport::target::{SshTarget, read_secret};
use crate::transport::{Transport, TransportError};

/// Arguments of `edgeforge apply`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  edgeforge apply -i sites.yaml
  edgeforge apply -i sites.yaml --layer os --check --diff
  edgeforge apply -i sites.yaml --limit 'edge-*,!edge-9' --parallel 100 --max-fail 5%
  edgeforge apply -i sites.yaml --shard 2/4 --log-format json --log-file run.jsonl
  edgeforge apply -i sites.yaml --tags kernel,swap --force")]
pub struct ApplyArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Only these layers (comma-separated or repeated; default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LAYER")]
    pub layer: Vec<Layer>,
    /// Run this playbook on every selected node instead of the layer playbooks.
    #[arg(long, value_name = "FILE", conflicts_with = "layer")]
    pub playbook: Option<PathBuf>,
    /// Only these nodes or sites: comma-separated globs, `!` to exclude.
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts worked on at once.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub parallel: usize,
    /// Stop starting hosts when more than N (or P% of) hosts failed.
    #[arg(long, value_name = "N|P%")]
    pub max_fail: Option<MaxFail>,
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
    /// Journal and lock directory (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
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
}

/// Event log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Timestamped lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// Runs `edgeforge apply`.
pub fn run(g: &GlobalOpts, args: ApplyArgs) -> Outcome {
    let prepared = match prepare(g, &args) {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    match execute(g, &args, prepared) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Failed
        }
    }
}

/// Everything checked before any host is touched.
struct Prepared {
    inventory_name: String,
    data: Arc<DataDir>,
    renderer: Arc<Renderer>,
    /// Host work in plan waves: a wave starts when the previous one ended.
    waves: Vec<Vec<HostWork>>,
    targets: Arc<BTreeMap<String, SshTarget>>,
}

fn prepare(g: &GlobalOpts, args: &ApplyArgs) -> Result<Prepared, Outcome> {
    if args.parallel == 0 {
        return Err(invalid("--parallel must be at least 1"));
    }
    let limit = args
        .limit
        .as_deref()
        .map(Limit::parse)
        .transpose()
        .map_err(invalid)?;
    let loaded = super::check::load_inventory(g, &args.inventory)?;
    let inv = &loaded.inventory;
    let data = DataDir::new(g.data_dir.as_deref());
    let renderer = Renderer::new(&data)
        .context("loading templates")
        .map_err(invalid)?;
    let selection = Selection {
        limit,
        layers: args.layer.clone(),
    };
    let plan = plan::build(inv, &selection)
        .with_context(|| format!("{}", args.inventory.display()))
        .map_err(invalid)?;
    let adhoc = match &args.playbook {
        Some(path) => Some(load_playbook_file(path).map_err(invalid)?),
        None => None,
    };
    let mut playbooks = PlaybookSet::new(&data, &renderer);
    let in_shard = |site: &str| args.shard.is_none_or(|s| s.contains_site(site));
    let views: BTreeMap<&str, NodeView<'_>> =
        inv.nodes().map(|v| (v.node.name.as_str(), v)).collect();
    let mut waves: Vec<Vec<HostWork>> = Vec::new();
    let mut not_run: BTreeMap<&'static str, usize> = BTreeMap::new();
    if let Some(pb) = &adhoc {
        renderer.check_playbook(pb).map_err(invalid)?;
        let mut wave = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for task in plan.tasks() {
            let Some(node) = task.node else { continue };
            if !in_shard(task.site.name.as_str()) || !seen.insert(node.name.as_str()) {
                continue;
            }
            if let Some(view) = views.get(node.name.as_str()) {
                wave.push(host_work(inv, view, vec![pb.clone()], Vec::new()).map_err(invalid)?);
            }
        }
        waves.push(wave);
    } else {
        for wave_ids in plan.waves() {
            let mut wave = Vec::new();
            for id in wave_ids {
                let Some(task) = plan.task(id) else { continue };
                let Some(node) = task.node else {
                    *not_run.entry(task.action.playbook()).or_default() += 1;
                    continue;
                };
                if !in_shard(task.site.name.as_str()) {
                    continue;
                }
                let Some(pb) = playbooks.get(task.action.playbook()).map_err(invalid)? else {
                    *not_run.entry(task.action.playbook()).or_default() += 1;
                    continue;
                };
                let Some(view) = views.get(node.name.as_str()) else {
                    continue;
                };
                if !pb.applies_to(view) {
                    continue;
                }
                let requires = task
                    .deps
                    .iter()
                    .filter_map(|d| plan.task(*d).and_then(|t| t.node))
                    .map(|n| n.name.value.clone())
                    .filter(|n| n != node.name.as_str())
                    .collect();
                wave.push(host_work(inv, view, vec![pb], requires).map_err(invalid)?);
            }
            if !wave.is_empty() {
                waves.push(wave);
            }
        }
    }
    for (playbook, count) in &not_run {
        if !g.quiet && !playbook.starts_with("machine/existing") {
            eprintln!(
                "note: {count} task(s) of `{playbook}` have no playbook in this build and are not run by apply{}",
                if playbook.starts_with("machine/libvirt") {
                    " (`edgeforge lab up` brings VMs up)"
                } else {
                    ""
                }
            );
        }
    }
    let targets = ssh_targets(inv, &waves).map_err(invalid)?;
    let inventory_name = inv
        .name
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(|| {
            args.inventory
                .file_stem()
                .map_or("inventory".into(), |s| s.to_string_lossy().into_owned())
        });
    Ok(Prepared {
        inventory_name,
        data: Arc::new(data),
        renderer: Arc::new(renderer),
        waves,
        targets: Arc::new(targets),
    })
}

fn execute(g: &GlobalOpts, args: &ApplyArgs, p: Prepared) -> anyhow::Result<Outcome> {
    let hosts: usize = p.waves.iter().map(Vec::len).sum();
    if hosts == 0 {
        eprintln!("nothing to do: no node matches --limit / --shard");
        return Ok(Outcome::Success);
    }
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => dirs::state_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
            .context("no state directory: set XDG_STATE_HOME or pass --state-dir")?
            .join("edgeforge")
            .join(&p.inventory_name),
    };
    let command: Vec<String> = std::env::args().collect();
    let lock = RunLock::acquire(&state_dir, &command.join(" "))?;
    if let Some(prev) = &lock.previous {
        eprintln!(
            "note: a previous apply (pid {} on {}, started {}) ended without releasing the lock; \
             its journal is kept and this run resumes from it",
            prev.pid, prev.host, prev.started
        );
    }
    let sink = make_sink(g, args, hosts)?;
    let opts = RunOptions {
        parallel: args.parallel,
        max_fail: args.max_fail,
        check: args.check,
        diff: args.diff,
        tags: args.tags.clone(),
        skip_tags: args.skip_tags.clone(),
        force: args.force,
        journal_dir: Some(state_dir.join("journal")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let executor = Executor::new(p.renderer, p.data, connector(p.targets), sink);
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
        executor.run(p.waves, &opts).await
    });
    drop(lock);
    if !g.quiet {
        print!("{}", summary.table());
    }
    Ok(match summary.exit_code() {
        0 => Outcome::Success,
        130 => Outcome::Interrupted,
        _ => Outcome::Failed,
    })
}

/// Reports invalid input (exit 2) before any host is touched.
fn invalid(e: impl std::fmt::Display) -> Outcome {
    eprintln!("error: {e:#}");
    Outcome::InvalidInput
}

/// Reads an ad-hoc playbook given with `--playbook`.
fn load_playbook_file(path: &Path) -> anyhow::Result<Arc<Playbook>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the playbook {}", path.display()))?;
    Ok(Arc::new(Playbook::parse(
        &path.display().to_string(),
        &text,
    )?))
}

/// The layer playbooks of the data directory, parsed and checked once each.
struct PlaybookSet<'d> {
    data: &'d DataDir,
    renderer: &'d Renderer,
    loaded: BTreeMap<&'static str, Option<Arc<Playbook>>>,
}

impl<'d> PlaybookSet<'d> {
    fn new(data: &'d DataDir, renderer: &'d Renderer) -> Self {
        PlaybookSet {
            data,
            renderer,
            loaded: BTreeMap::new(),
        }
    }

    /// The playbook `playbooks/<key>.yaml`, or `None` when the data directory has none.
    fn get(&mut self, key: &'static str) -> anyhow::Result<Option<Arc<Playbook>>> {
        if let Some(pb) = self.loaded.get(key) {
            return Ok(pb.clone());
        }
        let rel = format!("playbooks/{key}.yaml");
        let pb = match self.data.read_text(&rel) {
            Ok(text) => {
                let pb = Playbook::parse(&rel, &text)?;
                self.renderer.check_playbook(&pb)?;
                Some(Arc::new(pb))
            }
            Err(_) => None,
        };
        self.loaded.insert(key, pb.clone());
        Ok(pb)
    }
}

/// One node's work: its context, its playbooks, its secrets.
fn host_work(
    inv: &Inventory,
    view: &NodeView<'_>,
    playbooks: Vec<Arc<Playbook>>,
    requires: Vec<String>,
) -> anyhow::Result<HostWork> {
    let mut secrets = BTreeMap::new();
    if let Some(token) = &view.k3s.token {
        secrets.insert(
            "k3s_token".to_string(),
            read_secret("k3s.token", token)?.expose().to_string(),
        );
    }
    Ok(HostWork {
        name: view.node.name.value.clone(),
        site: view.site.name.value.clone(),
        context: inventory_context(inv, view),
        playbooks,
        secrets,
        requires,
    })
}

/// The SSH target of every host that has work, resolved before any host is touched.
fn ssh_targets(
    inv: &Inventory,
    waves: &[Vec<HostWork>],
) -> anyhow::Result<BTreeMap<String, SshTarget>> {
    let wanted: std::collections::BTreeSet<&str> =
        waves.iter().flatten().map(|w| w.name.as_str()).collect();
    let jumps = |name: &str| {
        inv.jump_host(name)
            .map(|jh| (jh.address.value.clone(), inv.jump_host_ssh(jh)))
    };
    let state = crate::inventory::state_dir();
    let mut targets = BTreeMap::new();
    for view in inv.nodes() {
        let name = view.node.name.as_str();
        if !wanted.contains(name) {
            continue;
        }
        let mut settings = view.ssh.clone();
        settings.port = Some(view.ssh_port());
        let target =
            SshTarget::from_settings(view.node.address.as_str(), &settings, &jumps, &state)
                .with_context(|| format!("node {name}"))?;
        targets.insert(name.to_string(), target);
    }
    Ok(targets)
}

/// Opens each host's SSH connection (one per host for the whole run).
fn connector(targets: Arc<BTreeMap<String, SshTarget>>) -> Connector {
    Arc::new(move |work: &HostWork| {
        let target = targets.get(&work.name).cloned();
        let name = work.name.clone();
        Box::pin(async move {
            let target = target.ok_or_else(|| TransportError::Connect {
                host: name,
                reason: "no SSH settings were resolved for this host".into(),
            })?;
            let transport = SshTransport::connect(&target).await?;
            Ok(Arc::new(transport) as Arc<dyn Transport>)
        })
    })
}

fn make_sink(g: &GlobalOpts, args: &ApplyArgs, hosts: usize) -> anyhow::Result<Arc<dyn EventSink>> {
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    let file = match &args.log_file {
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("creating the log file {}", path.display()))?,
        )) as Box<dyn std::io::Write + Send>),
        None => None,
    };
    match (args.log_format, file) {
        (LogFormat::Json, Some(f)) => sinks.push(Box::new(JsonSink::new(f))),
        (LogFormat::Json, None) => sinks.push(Box::new(JsonSink::new(Box::new(std::io::stderr())))),
        (LogFormat::Text, Some(f)) => sinks.push(Box::new(TextSink::new(f, true))),
        (LogFormat::Text, None) => {}
    }
    let json_on_stderr = args.log_format == LogFormat::Json && args.log_file.is_none();
    if !g.quiet && !json_on_stderr {
        if std::io::stderr().is_terminal() {
            sinks.push(Box::new(ProgressSink::new(hosts, args.diff || args.check)));
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

    fn args(dir: &Path, extra: &[&str]) -> ApplyArgs {
        let inv = dir.join("inv.yaml");
        std::fs::write(&inv, INVENTORY).unwrap();
        std::fs::write(dir.join("key"), "not read before connecting").unwrap();
        let mut argv = vec!["apply".to_string(), "-i".into(), inv.display().to_string()];
        argv.extend(extra.iter().map(|s| s.to_string()));
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: ApplyArgs,
        }
        <W as clap::Parser>::try_parse_from(argv).unwrap().a
    }

    fn global() -> GlobalOpts {
        GlobalOpts {
            verbose: 0,
            quiet: true,
            color: super::super::ColorChoice::Never,
            data_dir: None,
        }
    }

    fn names(p: &Prepared) -> Vec<String> {
        p.waves.iter().flatten().map(|h| h.name.clone()).collect()
    }

    #[test]
    fn limit_and_shard_select_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(
            &global(),
            &args(dir.path(), &["--limit", "site:store-1,s3-*"]),
        )
        .unwrap();
        assert_eq!(names(&p), vec!["s1-a", "s1-b", "s3-a"]);
        assert_eq!(p.inventory_name, "lab");
        let mut all = Vec::new();
        for i in 1..=3 {
            let p = prepare(
                &global(),
                &args(dir.path(), &["--shard", &format!("{i}/3")]),
            )
            .unwrap();
            // A site's nodes stay together in one shard.
            let n = names(&p);
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
    fn the_os_playbook_is_loaded_by_default_with_the_cluster_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(&global(), &args(dir.path(), &[])).unwrap();
        let h = &p.waves[0][0];
        assert_eq!(h.playbooks[0].name, "os");
        assert_eq!(h.context["cluster"]["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(h.context["node"]["role"], "server");
    }

    #[test]
    fn a_bad_layer_inventory_or_limit_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), &[]);
        std::fs::write(&a.inventory, "apiVersion: edgeforge/v1\nsites: 3\n").unwrap();
        assert_eq!(prepare(&global(), &a).err(), Some(Outcome::InvalidInput));
        let a = args(dir.path(), &["--limit", "no-such-node"]);
        assert_eq!(prepare(&global(), &a).err(), Some(Outcome::InvalidInput));
        let mut a = args(dir.path(), &[]);
        a.inventory = dir.path().join("missing.yaml");
        assert_ne!(run(&global(), a), Outcome::Success);
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: ApplyArgs,
        }
        let bad = <W as clap::Parser>::try_parse_from(["apply", "-i", "x", "--layer", "nope"]);
        assert!(bad.is_err());
    }

    #[test]
    fn a_missing_secret_names_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path(), &[]);
        let text = INVENTORY.replace(
            "defaults:\n",
            "defaults:\n  k3s:\n    token: { env: EF_TEST_TOKEN_THAT_IS_UNSET }\n",
        );
        std::fs::write(&a.inventory, text).unwrap();
        assert_eq!(prepare(&global(), &a).err(), Some(Outcome::InvalidInput));
        let err = read_secret(
            "k3s.token",
            &crate::inventory::SecretRef::Env("EF_TEST_TOKEN_THAT_IS_UNSET".into()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("EF_TEST_TOKEN_THAT_IS_UNSET"), "{err}");
    }
}
