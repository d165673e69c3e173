//! `edgeforge lab ...` and `edgeforge images build-base`: the VM lab on a
//! libvirt host and the base image it boots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{GlobalOpts, Outcome};
use crate::baseimage::{self, BuildOptions, BuildOutcome};
use crate::inventory::Inventory;
use crate::virt::Hypervisor;
use crate::virt::lab::{self, LabError, LabKeys, LabPlan, VmAction, finish_specs};

/// `edgeforge lab ...`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build or reuse the base image, then define and start the lab's VMs and wait for SSH.
    Up(UpArgs),
    /// Show each lab VM's state, SSH address and spec drift.
    Status(LabArgs),
    /// Destroy and undefine the lab's VMs and delete their volumes (the base image stays).
    Down(LabArgs),
}

/// Arguments every `lab` command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// The inventory (default: the built-in three-VM lab, inventory/lab.yaml).
    #[arg(short, long, value_name = "FILE", default_value = BUILTIN_LAB)]
    pub inventory: PathBuf,
    /// Directory for the lab's keys and known_hosts (default: XDG state dir's edgeforge/lab/<name>/).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Arguments of `edgeforge lab up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub lab: LabArgs,
    /// Rebuild VMs whose spec (cpus, memory, disk, image, keys) drifted from the inventory.
    #[arg(long)]
    pub recreate: bool,
    /// Cache root for the base image and the KVM probe result.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Debian release of the base image.
    #[arg(long, default_value = baseimage::DEFAULT_RELEASE)]
    pub release: String,
    /// Seconds to wait for each VM's SSH server.
    #[arg(long, default_value_t = 900)]
    pub ssh_timeout: u64,
}

/// Arguments of `edgeforge images build-base`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildBaseArgs {
    /// Debian release to debootstrap.
    #[arg(long, default_value = baseimage::DEFAULT_RELEASE)]
    pub release: String,
    /// Cache root (default: the XDG cache dir's edgeforge/).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Debian mirror.
    #[arg(long, default_value = baseimage::DEFAULT_MIRROR)]
    pub mirror: String,
}

/// Runs `edgeforge lab ...`.
pub fn run(g: &GlobalOpts, cmd: LabCommand) -> Outcome {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Outcome::Failed;
        }
    };
    let result = runtime.block_on(async {
        match cmd {
            LabCommand::Up(args) => lab_up(g, &args).await,
            LabCommand::Status(args) => lab_status(g, &args).await,
            LabCommand::Down(args) => lab_down(g, &args).await,
        }
    });
    match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InvalidInput>().is_some()
                || matches!(e.downcast_ref::<LabError>(), Some(LabError::Invalid(_)))
            {
                Outcome::InvalidInput
            } else {
                Outcome::Failed
            }
        }
    }
}

/// An inventory that cannot be read (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidInput(String);

/// The name `-i` defaults to: the built-in lab inventory, unless a file of
/// that name exists in the working directory (as in the source tree).
const BUILTIN_LAB: &str = "inventory/lab.yaml";

/// Reads the inventory with the same checks as `edgeforge check`.
fn load_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let loaded = if path == Path::new(BUILTIN_LAB) && !path.exists() {
        crate::inventory::load_str(BUILTIN_LAB, crate::data::LAB_INVENTORY)
    } else {
        crate::inventory::load(path)
    };
    match loaded {
        Ok(loaded) => Ok(loaded.inventory),
        Err(crate::inventory::LoadError::Invalid(diags)) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            Err(InvalidInput(format!("the inventory is invalid:\n{}", text.join("\n"))).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn load_plan(args: &LabArgs) -> anyhow::Result<(LabPlan, PathBuf)> {
    let inv = load_inventory(&args.inventory)?;
    let plan = LabPlan::from_inventory(&inv).map_err(|e| match e {
        LabError::Invalid(msg) => {
            anyhow::Error::from(InvalidInput(format!("{}: {msg}", args.inventory.display())))
        }
        other => other.into(),
    })?;
    let state = match &args.state_dir {
        Some(d) => d.clone(),
        None => dirs::state_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
            .context("no state directory: set XDG_STATE_HOME or HOME, or pass --state-dir")?
            .join("edgeforge")
            .join("lab")
            .join(&plan.name),
    };
    Ok((plan, state))
}

/// The identity file the inventory names for the lab's nodes (one for all),
/// with `~` and relative paths resolved.
fn lab_identity(plan: &LabPlan, inventory: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut files: Vec<&PathBuf> = plan
        .vms()
        .filter_map(|v| v.identity_file.as_ref())
        .collect();
    files.dedup();
    if files.len() > 1 {
        return Err(InvalidInput(format!(
            "{}: the lab's nodes name different identity files ({}); the lab generates one key for all its VMs",
            inventory.display(),
            files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    Ok(files.first().map(|p| {
        if let Ok(rest) = p.strip_prefix("~")
            && let Some(home) = dirs::home_dir()
        {
            return home.join(rest);
        }
        if p.is_relative() {
            inventory.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            (*p).clone()
        }
    }))
}

async fn lab_up(g: &GlobalOpts, args: &UpArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (mut plan, state) = load_plan(&args.lab)?;
    let identity = lab_identity(&plan, &args.lab.inventory)?;
    let mut opts = BuildOptions::new(&args.release)?;
    opts.data_dir.clone_from(&g.data_dir);
    if let Some(cache) = &args.cache {
        opts.cache.clone_from(cache);
    }
    let cache_root = opts.cache.clone();
    let quiet = g.quiet;
    let say = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let (image, outcome) = tokio::task::spawn_blocking(move || {
        baseimage::build(&opts, |line| {
            if !quiet {
                println!("  {line}");
            }
        })
    })
    .await??;
    say(&match outcome {
        BuildOutcome::Cached => format!("base image: cached ({})", short(&image.sha256)),
        BuildOutcome::Built(t) => format!(
            "base image: built in {:.0} s ({})",
            t.as_secs_f64(),
            short(&image.sha256)
        ),
    });
    let keys = LabKeys::ensure(&state, identity.as_deref(), &plan)?;
    say(&format!(
        "lab keys: {} (known_hosts {})",
        keys.identity.display(),
        keys.known_hosts.display()
    ));
    let mut changed = false;
    let mut drifted = 0;
    for host in &mut plan.hosts {
        let hv = Hypervisor::connect(&host.uri, g.data_dir.as_deref()).await?;
        let pool = hv.ensure_pool(&host.pool, &host.pool_path).await?;
        let base = hv.ensure_base(&pool, &image).await?;
        say(&format!(
            "{}: pool {} at {}; base image {}",
            host.hypervisor,
            pool.name,
            pool.path,
            if base.uploaded {
                "uploaded"
            } else {
                "already there"
            }
        ));
        let accel = hv.detect_accel(&base, Some(&cache_root)).await?;
        say(&format!(
            "{}: acceleration {}: {}{}",
            host.hypervisor,
            accel.accel,
            accel.reason,
            if accel.cached { " (cached probe)" } else { "" }
        ));
        finish_specs(host, &base.sha256, &keys)?;
        let actions = lab::up(&hv, &pool, host, &base, &keys, accel.accel, args.recreate).await?;
        for (name, action) in &actions {
            say(&format!("{name}: {action}"));
            changed |= !matches!(action, VmAction::Unchanged | VmAction::Drifted { .. });
            drifted += usize::from(matches!(action, VmAction::Drifted { .. }));
        }
        say(&format!(
            "{}: waiting for SSH on {} VM(s)",
            host.hypervisor,
            host.vms.len()
        ));
        let ready = lab::wait_ready(&hv, host, Duration::from_secs(args.ssh_timeout)).await?;
        for (name, t) in ready {
            let addr = host
                .vms
                .iter()
                .find(|v| v.spec.name == name)
                .map_or("", |v| v.ssh_addr.as_str());
            say(&format!(
                "{name}: SSH answers on {addr} ({:.1} s)",
                t.as_secs_f64()
            ));
        }
    }
    println!(
        "lab {}: {} in {:.1} s{}",
        plan.name,
        if changed { "up" } else { "unchanged" },
        started.elapsed().as_secs_f64(),
        if drifted > 0 {
            format!("; {drifted} VM(s) drifted, run `edgeforge lab up --recreate` to rebuild them")
        } else {
            String::new()
        }
    );
    println!(
        "VMs are ready for `edgeforge apply -i {}` (key {}, known_hosts {})",
        args.lab.inventory.display(),
        keys.identity.display(),
        keys.known_hosts.display()
    );
    Ok(Outcome::Success)
}

async fn lab_status(g: &GlobalOpts, args: &LabArgs) -> anyhow::Result<Outcome> {
    let (plan, state) = load_plan(args)?;
    println!(
        "{:<28} {:<10} {:<9} {:<18} {:<6} DRIFT",
        "VM", "HOST", "STATE", "SSH", "UP"
    );
    for host in &plan.hosts {
        let hv = Hypervisor::connect(&host.uri, g.data_dir.as_deref()).await?;
        let base = crate::baseimage::find_cached(&BuildOptions::new(baseimage::DEFAULT_RELEASE)?)?;
        let mut host = host.clone();
        // The spec hash needs the image's sha256; without a cached image the
        // drift column compares against an unknown image and says so.
        let known_image = match &base {
            Some(image) => {
                let keys = LabKeys::ensure(
                    &state,
                    lab_identity(&plan, &args.inventory)?.as_deref(),
                    &plan,
                )?;
                finish_specs(&mut host, &image.sha256, &keys)?;
                true
            }
            None => false,
        };
        for r in lab::status(&hv, &host, &plan.name).await? {
            println!(
                "{:<28} {:<10} {:<9} {:<18} {:<6} {}",
                r.name,
                r.hypervisor,
                r.state.map_or("absent".to_owned(), |s| s.to_string()),
                r.ssh_addr,
                if r.ssh_up { "yes" } else { "no" },
                match (r.state, known_image, r.drift) {
                    (None, _, _) => "-",
                    (_, false, _) => "unknown (no base image in the cache)",
                    (_, true, true) => "yes (lab up --recreate rebuilds it)",
                    (_, true, false) => "no",
                }
            );
        }
    }
    Ok(Outcome::Success)
}

async fn lab_down(g: &GlobalOpts, args: &LabArgs) -> anyhow::Result<Outcome> {
    let (plan, _) = load_plan(args)?;
    let mut removed_any = false;
    for host in &plan.hosts {
        let hv = Hypervisor::connect(&host.uri, g.data_dir.as_deref()).await?;
        for (name, removed) in lab::down(&hv, host, &plan.name).await? {
            removed_any = true;
            println!(
                "{name}: {}{}; volumes deleted: {}",
                if removed.destroyed { "destroyed, " } else { "" },
                if removed.undefined {
                    "undefined"
                } else {
                    "not defined"
                },
                if removed.volumes.is_empty() {
                    "none".to_owned()
                } else {
                    removed.volumes.join(", ")
                }
            );
        }
    }
    println!(
        "lab {}: {} (the base image stays in the pool)",
        plan.name,
        if removed_any {
            "down"
        } else {
            "nothing to remove"
        }
    );
    Ok(Outcome::Success)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Runs `edgeforge images build-base`.
pub fn run_build_base(g: &GlobalOpts, args: &BuildBaseArgs) -> Outcome {
    match build_base(g, args) {
        Ok(()) => Outcome::Success,
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Failed
        }
    }
}

fn build_base(g: &GlobalOpts, args: &BuildBaseArgs) -> anyhow::Result<()> {
    let mut opts = BuildOptions::new(&args.release)?;
    opts.mirror.clone_from(&args.mirror);
    opts.data_dir.clone_from(&g.data_dir);
    if let Some(cache) = &args.cache {
        opts.cache.clone_from(cache);
    }
    let quiet = g.quiet;
    let (image, outcome) = baseimage::build(&opts, |line| {
        if !quiet {
            println!("{line}");
        }
    })?;
    match outcome {
        BuildOutcome::Cached => println!("cached: {}", image.image_path().display()),
        BuildOutcome::Built(t) => println!(
            "built in {:.1}s: {}",
            t.as_secs_f64(),
            image.image_path().display()
        ),
    }
    println!(
        "release {} arch {} sha256 {} ({} MiB)\nkernel {}\ninitrd {}",
        image.release,
        image.arch,
        image.sha256,
        image.size >> 20,
        image.kernel_path().display(),
        image.initrd_path().display()
    );
    Ok(())
}
