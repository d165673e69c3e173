//! Command-line interface: clap commands, output format and exit codes.
//!
//! One file per command group; each defines its clap `Args` and a `run`
//! function that only parses, calls the library and prints. Every command
//! ends through [`finish`]: an [`Outcome`], or a [`crate::Error`] printed
//! with its chain and mapped to its exit code. Exit codes: 0 success, 1
//! runtime failure, 2 invalid input (inventory, playbook or arguments), 130
//! interrupted. Every command reads its inventory through [`load_inventory`].

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod apply;
mod bmc;
mod check;
mod federation;
mod images;
mod kubeconfig;
mod lab;
mod plan;
mod reset;

/// How a command ended, mapped onto the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: something failed while running (a host, a download, libvirt).
    Failed,
    /// Exit 2: the input (inventory, playbook, arguments) is invalid.
    InvalidInput,
    /// Exit 130: stopped by Ctrl-C.
    Interrupted,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::InvalidInput => ExitCode::from(2),
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}

/// Prints `result`'s error, if any, with its whole chain, and returns the outcome to exit with.
pub(crate) fn finish(result: Result<Outcome, crate::Error>) -> Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {}", crate::error::chain(&e));
            match e.exit_code() {
                2 => Outcome::InvalidInput,
                _ => Outcome::Failed,
            }
        }
    }
}

/// The name `-i` of the lab commands defaults to: the built-in lab
/// inventory, unless a file of that name exists in the working directory (as
/// in the source tree).
pub(crate) const BUILTIN_LAB: &str = "inventory/lab.yaml";

/// Loads the inventory for any command (check, plan, apply, lab, images):
/// prints its diagnostics (warnings only without `-q`) and, when it cannot be
/// used, a summary line, returning the outcome to exit with (2 invalid, 1
/// unreadable). `inventory/lab.yaml` is the built-in lab when no such file exists.
pub(crate) fn load_inventory(
    g: &GlobalOpts,
    path: &std::path::Path,
) -> Result<crate::inventory::Loaded, Outcome> {
    use crate::inventory::{LoadError, Severity};
    let color = check::use_color(
        g.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let loaded = if path == std::path::Path::new(BUILTIN_LAB) && !path.exists() {
        crate::inventory::load_str(BUILTIN_LAB, crate::data::LAB_INVENTORY)
    } else {
        crate::inventory::load(path)
    };
    match loaded {
        Ok(loaded) => {
            check::print_diagnostics(&loaded.warnings, g.quiet, color);
            Ok(loaded)
        }
        Err(LoadError::Invalid(diags)) => {
            check::print_diagnostics(&diags, g.quiet, color);
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = diags.len() - errors;
            eprintln!(
                "{}: invalid: {errors} error{}, {warnings} warning{}",
                path.display(),
                check::plural(errors),
                check::plural(warnings)
            );
            Err(Outcome::InvalidInput)
        }
        Err(e) => {
            eprintln!("error: {}", crate::error::chain(&e));
            Err(Outcome::Failed)
        }
    }
}

/// The inventory's `versions.k3s` against the artifact manifest of the data
/// directory: a diagnostic when the manifest does not pin it.
pub(crate) fn k3s_version_problem(
    g: &GlobalOpts,
    inv: &crate::inventory::Inventory,
    path: &std::path::Path,
) -> Option<crate::inventory::Diagnostic> {
    let data = crate::data::DataDir::new(g.data_dir.as_deref());
    let manifest = crate::artifacts::Manifest::from_data(&data).ok()?;
    let pinned: Vec<String> = manifest
        .spec("k3s")
        .map(|s| s.pins.keys().cloned().collect())
        .unwrap_or_default();
    crate::inventory::check_k3s_version(inv, &path.display().to_string(), &pinned)
}

/// The state directory of an inventory: `--state-dir`, else
/// `$XDG_STATE_HOME/edgeforge/<inventory name, else file stem>`.
pub(crate) fn state_dir(
    explicit: Option<&std::path::Path>,
    inv: &crate::inventory::Inventory,
    path: &std::path::Path,
) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    let name = inv
        .name
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(|| {
            path.file_stem()
                .map_or("inventory".into(), |s| s.to_string_lossy().into_owned())
        });
    crate::state::for_inventory(&name)
}

/// A multi-threaded tokio runtime for a command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, crate::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Exec(crate::exec::ExecError::Runtime(e)))
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOpts {
    /// More output (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour output: auto = when writing to a terminal and NO_COLOR is unset.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Directory with playbooks/, templates/ and images/ overriding the built-in ones.
    #[arg(long, global = true, env = "EDGEFORGE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl GlobalOpts {
    /// Whether to colour a stream, given whether that stream is a terminal.
    pub fn use_color(&self, is_terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

const EXAMPLES: &str = "\
Examples:
  edgeforge check -i inventory/lab.yaml
  edgeforge plan -i inventory/appliances.yaml --limit 'site:berlin-*'
  edgeforge apply -i inventory/lab.yaml
  edgeforge bmc status -i inventory/baremetal.yaml --node metal-1
  edgeforge federation status -i inventory/federation.yaml
  edgeforge federate -i inventory/federation.yaml -f inventory/nginx-app.yaml
  edgeforge completions bash > ~/.local/share/bash-completion/completions/edgeforge
  edgeforge man --out /usr/local/share/man/man1

Exit codes: 0 success, 1 runtime failure, 2 invalid input (inventory,
playbook or arguments). NO_COLOR in the environment turns colour off.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  edgeforge completions bash > ~/.local/share/bash-completion/completions/edgeforge
  edgeforge completions zsh > \"${fpath[1]}/_edgeforge\"
  edgeforge completions fish > ~/.config/fish/completions/edgeforge.fish
  edgeforge completions powershell >> $PROFILE";

const MAN_EXAMPLES: &str = "\
Examples:
  edgeforge man | man -l -
  edgeforge man --out /usr/local/share/man/man1   # edgeforge.1, edgeforge-plan.1, ...";

/// Bring up edge sites from one inventory file.
///
/// edgeforge brings up edge sites: machines (libvirt VMs, Redfish bare metal or
/// existing hosts), the OS, the virtualization layer, k3s and federation, all
/// from one inventory file.
#[derive(Debug, Parser)]
#[command(name = "edgeforge", version, propagate_version = true, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate an inventory and report every problem at once.
    Check(check::CheckArgs),
    /// Print the ordered plan for an inventory without touching any host.
    Plan(plan::PlanArgs),
    /// Bring hosts to the state the playbooks describe.
    Apply(apply::ApplyArgs),
    /// Inventory tools (JSON Schema).
    #[command(subcommand)]
    Inventory(check::InventoryCommand),
    /// Artifacts: pull, verify, bundle for air-gapped sites, build the base VM image.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// A lab of VMs on a libvirt host: up, status, down.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Bare metal through its Redfish BMC: status, power, boot device, virtual media.
    #[command(subcommand, after_help = bmc::BMC_EXAMPLES)]
    Bmc(bmc::BmcCommand),
    /// Print a site's kubeconfig, or merge it into ~/.kube/config.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Take k3s off a site's nodes (or one node): Node deleted, k3s uninstalled.
    Reset(reset::ResetArgs),
    /// Registrations on the federation host: status, unjoin.
    #[command(subcommand, after_help = federation::FEDERATION_EXAMPLES)]
    Federation(federation::FederationCommand),
    /// Run a workload on several sites: render and apply its Karmada policies or KubeFed objects.
    Federate(federation::FederateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = MAN_EXAMPLES)]
    Man {
        /// Write edgeforge.1 and one edgeforge-<command>.1 per subcommand here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Entry point of the `edgeforge` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check(args) => check::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Apply(args) => apply::run(&cli.global, args),
        Command::Inventory(cmd) => check::run_inventory(&cli.global, cmd),
        Command::Images(cmd) => images::run(&cli.global, cmd),
        Command::Lab(cmd) => lab::run(&cli.global, cmd),
        Command::Bmc(cmd) => bmc::run(&cli.global, cmd),
        Command::Kubeconfig(args) => kubeconfig::run(&cli.global, args),
        Command::Reset(args) => reset::run(&cli.global, args),
        Command::Federation(cmd) => federation::run(&cli.global, cmd),
        Command::Federate(args) => federation::run_federate(&cli.global, args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "edgeforge", &mut std::io::stdout());
            Outcome::Success
        }
        Command::Man { out } => run_man(out.as_deref()),
    };
    outcome.into()
}

/// Prints the man page, or writes one page per command into `out`.
fn run_man(out: Option<&std::path::Path>) -> Outcome {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    // Building sets subcommand display names such as `edgeforge-plan`.
    cmd.build();
    let written = match out {
        None => man_page(&cmd).and_then(|page| std::io::stdout().write_all(&page)),
        Some(dir) => std::fs::create_dir_all(dir).and_then(|()| write_man_pages(&cmd, dir)),
    };
    match written {
        Ok(()) => Outcome::Success,
        Err(e) => {
            let to = out.map_or_else(
                || "standard output".to_string(),
                |d| d.display().to_string(),
            );
            eprintln!("error: writing the man page to {to}: {e}");
            Outcome::Failed
        }
    }
}

/// Writes `<display name>.1` for `cmd` and every visible subcommand under it.
fn write_man_pages(cmd: &clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub, dir)?;
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    std::fs::write(dir.join(format!("{name}.1")), man_page(cmd)?)
}

/// One roff page; the after-help text becomes an EXAMPLES section kept as written.
fn man_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let roff = String::from_utf8_lossy(&page);
    let Some(start) = roff.find(".SH EXTRA\n") else {
        return Ok(page);
    };
    let body_start = start + ".SH EXTRA\n".len();
    let end = roff[body_start..]
        .find("\n.SH ")
        .map_or(roff.len(), |i| body_start + i + 1);
    let mut fixed = String::with_capacity(roff.len() + 16);
    fixed.push_str(&roff[..start]);
    fixed.push_str(".SH EXAMPLES\n.nf\n");
    fixed.push_str(&roff[body_start..end]);
    fixed.push_str(".fi\n");
    fixed.push_str(&roff[end..]);
    Ok(fixed.into_bytes())
}
