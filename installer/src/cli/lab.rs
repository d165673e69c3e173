//! `edgeforge lab ...`, `edgeforge images build-base` and `build-live`: the
//! VM lab on a libvirt host, the base image it boots (and bare metal gets
//! installed with), and the live ISO bare-metal installs boot.
//!
//! `lab up` is `apply --layer machine` on the lab's inventory: the same
//! executor, playbook (`playbooks/machine/libvirt.yaml`) and progress view as
//! a full `apply`. `lab status` and `lab down` look at and remove the lab's
//! VMs directly through libvirt.

use std::path::PathBuf;

use super::apply::{ApplyArgs, MachineArgs};
use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::data::DataDir;
use crate::inventory::Inventory;
use crate::virt::Hypervisor;
use crate::virt::baseimage::{self, BuildOptions, BuildOutcome};
use crate::virt::lab::{self, LabKeys, LabPlan};

/// `edgeforge lab ...`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build or reuse the base image, define and boot the lab's VMs, wait for
    /// SSH and cloud-init (the same as `apply --layer machine`).
    #[command(after_help = "Examples:
  edgeforge lab up                       # the built-in three-VM lab (inventory/lab.yaml)
  edgeforge lab up -i my-lab.yaml --recreate
  edgeforge apply -i inventory/lab.yaml  # VMs and every layer on them, in one command")]
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
    #[arg(short, long, value_name = "FILE", default_value = super::BUILTIN_LAB)]
    pub inventory: PathBuf,
}

/// Arguments of `edgeforge lab up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub lab: LabArgs,
    /// Lock, journals and outputs (default: $XDG_STATE_HOME/edgeforge/<inventory name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub machines: MachineArgs,
}

/// Arguments of `edgeforge images build-base` and `build-live`.
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
    let args = match &cmd {
        LabCommand::Up(up) => {
            return super::apply::run(
                g,
                ApplyArgs::machines_only(
                    up.lab.inventory.clone(),
                    up.state_dir.clone(),
                    up.machines.clone(),
                ),
            );
        }
        LabCommand::Status(a) | LabCommand::Down(a) => a,
    };
    let loaded = match super::load_inventory(g, &args.inventory) {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    super::finish((|| {
        let runtime = super::runtime()?;
        runtime.block_on(async {
            match cmd {
                LabCommand::Status(_) => lab_status(g, &loaded.inventory).await,
                _ => lab_down(g, &loaded.inventory).await,
            }
        })
    })())
}

async fn lab_status(g: &GlobalOpts, inv: &Inventory) -> Result<Outcome, Error> {
    let plan = LabPlan::from_inventory(inv)?;
    let keys = LabKeys::ensure(
        &crate::state::lab_dir(&plan.name),
        plan.identity_file()?.as_deref(),
        &plan,
    )?;
    let data = DataDir::new(g.data_dir.as_deref());
    let mut opts = BuildOptions::new(baseimage::DEFAULT_RELEASE)?;
    opts.data = data.clone();
    // The spec hash needs the image's sha256; without a cached image the
    // drift column says it cannot tell.
    let image = baseimage::find_cached(&opts)?;
    println!(
        "{:<28} {:<10} {:<9} {:<18} {:<6} DRIFT",
        "VM", "HOST", "STATE", "SSH", "UP"
    );
    for host in &plan.hosts {
        let hv = connect(inv, &host.hypervisor, &host.uri, &data).await?;
        let sha = image.as_ref().map(|i| i.sha256.as_str());
        for r in lab::status(&hv, host, &plan.name, sha, &keys).await? {
            println!(
                "{:<28} {:<10} {:<9} {:<18} {:<6} {}",
                r.name,
                r.hypervisor,
                r.state.map_or("absent".to_owned(), |s| s.to_string()),
                r.ssh_addr,
                if r.ssh_up { "yes" } else { "no" },
                match (r.state, r.drift) {
                    (None, _) => "-",
                    (_, None) => "unknown (no base image in the cache)",
                    (_, Some(true)) => "yes (lab up --recreate rebuilds it)",
                    (_, Some(false)) => "no",
                }
            );
        }
    }
    Ok(Outcome::Success)
}

async fn lab_down(g: &GlobalOpts, inv: &Inventory) -> Result<Outcome, Error> {
    let plan = LabPlan::from_inventory(inv)?;
    let data = DataDir::new(g.data_dir.as_deref());
    let mut removed_any = false;
    for host in plan.down_order(inv) {
        let hv = match connect(inv, &host.hypervisor, &host.uri, &data).await {
            Ok(hv) => hv,
            // A hypervisor that is itself one of this lab's VMs and does not
            // answer holds nothing that outlives that VM's disk, removed below.
            Err(e) if plan.hosted_on_lab(&host.hypervisor) => {
                println!(
                    "hypervisor {}: not reachable, skipped (it is one of this lab's VMs, and what it holds goes with it): {e}",
                    host.hypervisor
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for (name, removed) in lab::down(&hv, &host, &plan.name).await? {
            removed_any = true;
            println!(
                "{name} (on {}): {}{}; volumes deleted: {}",
                host.hypervisor,
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

/// Connects to the inventory's hypervisor `name`, over edgeforge's own SSH
/// connection when its URI is remote.
async fn connect(
    inv: &Inventory,
    name: &str,
    uri: &str,
    data: &DataDir,
) -> Result<Hypervisor, Error> {
    let ssh = match inv.hypervisors.iter().find(|h| h.name.as_str() == name) {
        Some(h) => crate::exec::prepare::hypervisor_ssh_target(inv, h)
            .map_err(crate::exec::ExecError::from)?,
        None => None,
    };
    Ok(Hypervisor::connect_via(uri, ssh.as_ref(), data).await?)
}

/// The image build options of `images build-base` and `build-live`.
fn build_options(g: &GlobalOpts, args: &BuildBaseArgs) -> Result<BuildOptions, Error> {
    let mut opts = BuildOptions::new(&args.release)?;
    opts.mirror.clone_from(&args.mirror);
    opts.data = DataDir::new(g.data_dir.as_deref());
    if let Some(cache) = &args.cache {
        opts.cache.clone_from(cache);
    }
    Ok(opts)
}

/// Prints an image build's progress lines, unless `--quiet`.
fn progress(g: &GlobalOpts) -> impl FnMut(&str) {
    let quiet = g.quiet;
    move |line| {
        if !quiet {
            println!("{line}");
        }
    }
}

/// Runs `edgeforge images build-base`.
pub fn run_build_base(g: &GlobalOpts, args: &BuildBaseArgs) -> Outcome {
    super::finish(build_base(g, args).map(|()| Outcome::Success))
}

fn build_base(g: &GlobalOpts, args: &BuildBaseArgs) -> Result<(), Error> {
    let (image, outcome) = baseimage::build(&build_options(g, args)?, progress(g))?;
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

/// Runs `edgeforge images build-live`.
pub fn run_build_live(g: &GlobalOpts, args: &BuildBaseArgs) -> Outcome {
    super::finish(build_live(g, args).map(|()| Outcome::Success))
}

fn build_live(g: &GlobalOpts, args: &BuildBaseArgs) -> Result<(), Error> {
    let (image, outcome) = crate::virt::liveimage::build(&build_options(g, args)?, progress(g))?;
    match outcome {
        BuildOutcome::Cached => println!("cached: {}", image.iso_path().display()),
        BuildOutcome::Built(t) => println!(
            "built in {:.1}s: {}",
            t.as_secs_f64(),
            image.iso_path().display()
        ),
    }
    println!(
        "release {} arch {} sha256 {} ({} MiB)",
        image.release,
        image.arch,
        image.sha256,
        image.size >> 20
    );
    Ok(())
}
