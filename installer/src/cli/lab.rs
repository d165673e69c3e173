//! `edgeforge lab ...` and `edgeforge images build-base`: the VM lab on a
//! libvirt host and the base image it boots.

use std::path::PathBuf;

use super::{GlobalOpts, Outcome};
use crate::baseimage::{self, BuildOptions, BuildOutcome};

/// `edgeforge lab ...`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Show each lab VM's state, address and layer progress.
    Status,
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
pub fn run(_g: &GlobalOpts, _cmd: LabCommand) -> Outcome {
    eprintln!("error: `lab` is not built yet");
    Outcome::Failed
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
