//! `edgeforge images ...`: pull, verify, bundle, import and pin artifacts.
//!
//! Thin: argument parsing, output and exit codes. The work is in
//! [`crate::artifacts`]. Input errors (manifest, inventory, unknown or
//! unpinned artifact) exit 2; download, cache and bundle failures exit 1.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{GlobalOpts, Outcome};
use crate::Error;
use crate::artifacts::{
    self, Arch, ArtifactCache, ArtifactError, ArtifactRef, Damage, Downloader, DownloaderOptions,
    Manifest, Mirror, Progress, PullOptions,
};

/// `edgeforge images ...`
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Download what an inventory needs into the artifact cache (no request at
    /// all when the cache already has everything).
    Pull(PullArgs),
    /// Re-hash the artifact cache and report damage (exit 1 when any).
    Verify(VerifyArgs),
    /// Pack what an inventory needs into one file for an air-gapped site.
    Bundle(BundleArgs),
    /// Load a bundle into the cache, verifying every file first.
    Import(ImportArgs),
    /// Fetch a release's checksum file and record its hashes in the manifest.
    Pin(PinArgs),
    /// Build the base VM image the lab boots (debootstrap; needs root).
    BuildBase(crate::cli::lab::BuildBaseArgs),
    /// Build the live installer ISO bare-metal installs boot (debootstrap; needs root).
    #[command(
        after_help = "The ISO is UEFI-bootable (grub-mkrescue), runs from memory (live-boot
with toram) and has sshd; it holds nothing about any node: during apply,
edgeforge adds each node's SSH host key and login key as a small second
initrd. Cached under ~/.cache/edgeforge/live/<recipe hash>/ like the base
image; a second call is instant. apply builds it on first use too, so this
command is for doing it ahead of time (and in CI caches).

Examples:
  sudo edgeforge images build-live
  sudo edgeforge images build-live --cache /var/cache/edgeforge"
    )]
    BuildLive(crate::cli::lab::BuildBaseArgs),
}

/// Which artifacts a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct Selection {
    /// The inventory whose versions decide what is needed (default: the manifest's defaults).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Only this artifact (e.g. `k3s`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Architectures to fetch; repeat for several. The inventory does not
    /// record node architectures, so the default is amd64.
    #[arg(long, value_enum, value_name = "ARCH", default_values_t = [Arch::Amd64])]
    pub arch: Vec<Arch>,
    /// Artifact manifest (default: images/manifest.yaml of --data-dir, else the built-in one).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// Where the cache is.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheDir {
    /// Cache directory (default: $XDG_CACHE_HOME/edgeforge).
    #[arg(long, value_name = "DIR", env = "EDGEFORGE_CACHE")]
    pub cache: Option<PathBuf>,
}

/// Arguments of `images pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub select: Selection,
    #[command(flatten)]
    pub cache: CacheDir,
    /// Fetch from this mirror instead of the manifest's URLs: a directory
    /// (`DIR/<file>`) or a base URL (`URL/<file>`).
    #[arg(long, value_name = "DIR|URL")]
    pub mirror: Option<String>,
    /// Never use the network; fail if anything is missing.
    #[arg(long)]
    pub offline: bool,
    /// Seconds without data before a transfer counts as stalled.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub read_timeout: u64,
    /// Attempts per URL on transient failures.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub attempts: u32,
}

/// Arguments of `images verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub cache: CacheDir,
    /// Remove damaged files and their index entries.
    #[arg(long)]
    pub repair: bool,
}

/// Arguments of `images bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub pull: PullArgs,
    /// The bundle to write (tar + zstd).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Arguments of `images import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The bundle written by `images bundle`.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub cache: CacheDir,
    /// Artifact manifest whose pins the bundle must agree with.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// Arguments of `images pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// Artifact name, e.g. `k3s`.
    pub name: String,
    /// Release, e.g. `v1.35.0+k3s1`.
    #[arg(value_name = "VERSION")]
    pub release: String,
    /// The manifest file to edit (default: images/manifest.yaml of --data-dir, else ./images/manifest.yaml).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// Runs `edgeforge images ...`.
pub fn run(g: &GlobalOpts, cmd: ImagesCommand) -> Outcome {
    cmd.run(g)
}

impl ImagesCommand {
    /// Runs the command, printing errors; returns the exit outcome.
    pub fn run(self, g: &GlobalOpts) -> Outcome {
        if let ImagesCommand::BuildBase(args) = &self {
            return crate::cli::lab::run_build_base(g, args);
        }
        if let ImagesCommand::BuildLive(args) = &self {
            return crate::cli::lab::run_build_live(g, args);
        }
        super::finish(self.execute(g))
    }

    /// Runs the command; errors are returned, not printed.
    pub fn execute(self, g: &GlobalOpts) -> Result<Outcome, Error> {
        let rt = super::runtime()?;
        match self {
            ImagesCommand::Pull(args) => {
                let summary = rt.block_on(pull(g, &args))?;
                if !g.quiet {
                    for c in &summary.present {
                        println!("cached   {}  sha256:{}", c.artifact, c.sha256);
                    }
                    for c in &summary.fetched {
                        println!("fetched  {}  sha256:{}", c.artifact, c.sha256);
                    }
                }
                Ok(Outcome::Success)
            }
            ImagesCommand::Verify(args) => verify(g, &args),
            ImagesCommand::Bundle(args) => {
                let summary = rt.block_on(pull(g, &args.pull))?;
                let cache = open_cache(&args.pull.cache)?;
                let items = summary.all();
                let size = artifacts::bundle::write_bundle(&cache, &items, &args.output)?;
                if !g.quiet {
                    println!(
                        "wrote {} ({} artifacts, {})",
                        args.output.display(),
                        items.len(),
                        human_bytes(size)
                    );
                }
                Ok(Outcome::Success)
            }
            ImagesCommand::Import(args) => {
                let cache = open_cache(&args.cache)?;
                let manifest = load_manifest(g, args.manifest.as_deref())?;
                let summary =
                    artifacts::bundle::import_bundle(&cache, &args.bundle, Some(&manifest))?;
                if !g.quiet {
                    for c in &summary.imported {
                        println!("imported {}  sha256:{}", c.artifact, c.sha256);
                    }
                    for a in &summary.unpinned {
                        eprintln!(
                            "warning: {a} is not pinned in the manifest; imported on the bundle's word"
                        );
                    }
                }
                Ok(Outcome::Success)
            }
            ImagesCommand::Pin(args) => rt.block_on(pin(g, &args)),
            ImagesCommand::BuildBase(args) => Ok(crate::cli::lab::run_build_base(g, &args)),
            ImagesCommand::BuildLive(args) => Ok(crate::cli::lab::run_build_live(g, &args)),
        }
    }
}

async fn pull(g: &GlobalOpts, args: &PullArgs) -> Result<artifacts::PullSummary, Error> {
    let manifest = load_manifest(g, args.select.manifest.as_deref())?;
    let inventory = match &args.select.inventory {
        Some(p) => Some(crate::inventory::load(p).map_err(Error::from)?.inventory),
        None => None,
    };
    let needs = manifest
        .needs(
            inventory.as_ref(),
            &args.select.arch,
            args.select.name.as_deref(),
        )
        .map_err(|e| match (&args.select.inventory, inventory.as_ref()) {
            (Some(path), Some(inv)) => match &inv.versions.k3s {
                Some(v) if matches!(e, ArtifactError::NotPinned { .. }) => Error::Invalid(format!(
                    "{}:{}:{}: versions.k3s `{}` is not in the artifact manifest: {}",
                    path.display(),
                    v.line,
                    v.col,
                    v.value,
                    crate::error::chain(&e)
                )),
                _ => e.into(),
            },
            _ => e.into(),
        })?;
    let cache = open_cache(&args.cache)?;
    let progress: Arc<dyn Progress> = Arc::new(CliProgress::new(g.quiet));
    let downloader = Downloader::new(
        DownloaderOptions {
            read_timeout: Duration::from_secs(args.read_timeout.max(1)),
            attempts: args.attempts.max(1),
            ..Default::default()
        },
        progress,
    )?;
    let opts = PullOptions {
        mirror: args.mirror.as_deref().map(Mirror::parse),
        offline: args.offline,
        fetch_command: fetch_command(args),
    };
    Ok(artifacts::pull(&cache, &downloader, &needs, &opts).await?)
}

fn verify(g: &GlobalOpts, args: &VerifyArgs) -> Result<Outcome, Error> {
    let cache = open_cache(&args.cache)?;
    let report = cache.verify(args.repair)?;
    for d in &report.damage {
        match d {
            Damage::Corrupt {
                path,
                expected,
                actual,
            } => eprintln!(
                "damaged: {} should hash to {expected} but hashes to {actual}",
                path.display()
            ),
            Damage::Missing { artifact, sha256 } => {
                eprintln!("missing: {artifact} (sha256:{sha256}) is indexed but its file is gone")
            }
            Damage::Stray { path } => eprintln!("stray: {} is not a cache file", path.display()),
        }
    }
    if !g.quiet {
        println!(
            "{} files verified, {} problems{}",
            report.ok,
            report.damage.len(),
            if report.repaired {
                " (removed; pull again to restore them)"
            } else if report.damage.is_empty() {
                ""
            } else {
                " (run with --repair to remove them)"
            }
        );
    }
    Ok(if report.damage.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

async fn pin(g: &GlobalOpts, args: &PinArgs) -> Result<Outcome, Error> {
    let path = match (&args.manifest, &g.data_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => d.join("images/manifest.yaml"),
        (None, None) => PathBuf::from("images/manifest.yaml"),
    };
    let manifest = Manifest::load(&path)?;
    let downloader = Downloader::new(
        DownloaderOptions::default(),
        Arc::new(CliProgress::new(true)),
    )?;
    let pins = artifacts::pin::fetch_pins(
        downloader.client(),
        &manifest,
        &args.name,
        &args.release,
        downloader.options().read_timeout,
    )
    .await?;
    artifacts::pin::write_pins(&path, &args.name, &args.release, &pins)?;
    if !g.quiet {
        for (arch, hash) in &pins {
            println!(
                "pinned {} {} ({arch})  sha256:{hash}",
                args.name, args.release
            );
        }
        println!("updated {}", path.display());
    }
    Ok(Outcome::Success)
}

fn load_manifest(g: &GlobalOpts, explicit: Option<&Path>) -> Result<Manifest, Error> {
    Ok(match explicit {
        Some(p) => Manifest::load(p)?,
        None => Manifest::from_data(&crate::data::DataDir::new(g.data_dir.as_deref()))?,
    })
}

fn open_cache(dir: &CacheDir) -> Result<ArtifactCache, Error> {
    let dir = match &dir.cache {
        Some(d) => d.clone(),
        None => ArtifactCache::default_dir().ok_or_else(|| {
            Error::Invalid("no cache directory: set --cache DIR or EDGEFORGE_CACHE".into())
        })?,
    };
    Ok(ArtifactCache::open(dir)?)
}

fn fetch_command(args: &PullArgs) -> String {
    let mut cmd = String::from("edgeforge images pull");
    if let Some(i) = &args.select.inventory {
        cmd.push_str(&format!(" -i {}", i.display()));
    }
    if let Some(n) = &args.select.name {
        cmd.push_str(&format!(" --name {n}"));
    }
    for a in &args.select.arch {
        if args.select.arch != [Arch::Amd64] {
            cmd.push_str(&format!(" --arch {a}"));
        }
    }
    if let Some(c) = &args.cache.cache {
        cmd.push_str(&format!(" --cache {}", c.display()));
    }
    cmd
}

fn human_bytes(n: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB", n as f64 / MB)
}

/// Progress bars on a terminal, plain lines otherwise.
struct CliProgress {
    quiet: bool,
    tty: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<ArtifactRef, ProgressBar>>,
}

impl CliProgress {
    fn new(quiet: bool) -> CliProgress {
        CliProgress {
            quiet,
            tty: std::io::stderr().is_terminal(),
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, a: &ArtifactRef) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(a).cloned()
    }
}

impl Progress for CliProgress {
    fn start(&self, a: &ArtifactRef, source: &str, total: Option<u64>, resumed_from: u64) {
        if self.quiet {
            return;
        }
        let resumed = if resumed_from > 0 {
            format!(" (resuming at {})", human_bytes(resumed_from))
        } else {
            String::new()
        };
        if !self.tty {
            eprintln!("downloading {a} from {source}{resumed}");
            return;
        }
        let bar = self.bar(a).unwrap_or_else(|| {
            let b = self.multi.add(ProgressBar::no_length());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            if let Ok(mut bars) = self.bars.lock() {
                bars.insert(a.clone(), b.clone());
            }
            b
        });
        bar.set_message(format!("{a}{resumed}"));
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(resumed_from);
    }

    fn advance(&self, a: &ArtifactRef, bytes: u64) {
        if let Some(b) = self.bar(a) {
            b.inc(bytes);
        }
    }

    fn retry(&self, a: &ArtifactRef, source: &str, reason: &str, delay: Duration) {
        if self.quiet {
            return;
        }
        let line = format!("retrying {a} from {source} in {delay:.1?}: {reason}");
        match self.bar(a) {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self, a: &ArtifactRef, bytes: u64, elapsed: Duration) {
        if self.quiet {
            return;
        }
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6) / 1048576.0;
        match self.bar(a) {
            Some(b) => b.finish_with_message(format!("{a} verified")),
            None => eprintln!(
                "verified {a}: {} in {elapsed:.1?} ({rate:.1} MiB/s)",
                human_bytes(bytes)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_hint_repeats_the_selection() {
        let args = PullArgs {
            select: Selection {
                inventory: Some("site.yaml".into()),
                name: Some("k3s".into()),
                arch: vec![Arch::Amd64, Arch::Arm64],
                manifest: None,
            },
            cache: CacheDir {
                cache: Some("/c".into()),
            },
            mirror: None,
            offline: true,
            read_timeout: 30,
            attempts: 5,
        };
        assert_eq!(
            fetch_command(&args),
            "edgeforge images pull -i site.yaml --name k3s --arch amd64 --arch arm64 --cache /c"
        );
    }

    #[test]
    fn images_arguments_are_consistent() {
        // clap checks argument names (e.g. against the global --version) here.
        <super::super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn manifest_errors_are_input_errors() {
        let e = Error::from(Manifest::parse("artifacts: [", "m.yaml").unwrap_err());
        assert_eq!(e.exit_code(), 2);
        let e = Error::from(ArtifactError::Pin("network down".into()));
        assert_eq!(e.exit_code(), 1);
    }
}
