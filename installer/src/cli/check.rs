//! `edgeforge check` (validate an inventory, report every problem at once)
//! and `edgeforge inventory schema` (the format as JSON Schema, for editors).

use std::io::Write;
use std::path::PathBuf;

use crate::inventory::{self, Diagnostic, Inventory, LoadError, Role, Severity};

use super::{ColorChoice, GlobalOpts, Outcome};

/// Arguments of `edgeforge check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Every problem is reported at once, as FILE:LINE:COL: error|warning: what is
wrong, followed by a `help:` line saying how to fix it. Warnings do not fail
the check.

Exit codes: 0 valid (warnings allowed), 2 invalid inventory, 1 the file could
not be read.

Beyond the file itself, check verifies that `versions.k3s` is a release the
artifact manifest pins (images/manifest.yaml of --data-dir or the built-in one).

With --format json, one JSON object goes to standard output instead:
{\"file\", \"valid\", \"summary\", \"diagnostics\": [{\"severity\", \"file\", \"line\",
\"col\", \"message\", \"hint\"}]}, for CI annotations and editor plugins.

Examples:
  edgeforge check -i inventory/lab.yaml
  edgeforge check -i sites.yaml --color never 2> problems.txt
  edgeforge -q check -i sites.yaml        # errors only, no summary
  edgeforge check -i sites.yaml --format json | jq '.diagnostics[]'")]
pub struct CheckArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Output format of the diagnostics and summary.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Also check these app files (`edgeforge federate -f`) against the inventory.
    #[arg(short = 'f', long = "app", value_name = "APP")]
    pub apps: Vec<PathBuf>,
}

/// Output format of `edgeforge check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// FILE:LINE:COL lines on standard error, a summary on standard output.
    Text,
    /// One JSON object on standard output.
    Json,
}

/// `edgeforge inventory ...`
#[derive(Debug, clap::Subcommand)]
pub enum InventoryCommand {
    /// Print the inventory's JSON Schema, for editors.
    #[command(after_help = "\
The schema (JSON Schema draft 2020-12) is generated from the same types that
read the inventory, so it is always exact. Editors with a YAML language server
complete and validate inventories with it.

Examples:
  edgeforge inventory schema > edgeforge-inventory.schema.json
  # then, first line of an inventory (VS Code / yaml-language-server):
  # yaml-language-server: $schema=./edgeforge-inventory.schema.json")]
    Schema,
}

/// Runs `edgeforge check`.
pub fn run(g: &GlobalOpts, args: CheckArgs) -> Outcome {
    if args.format == CheckFormat::Json {
        return run_json(g, &args, &args.inventory.display().to_string());
    }
    match super::load_inventory(g, &args.inventory) {
        Ok(loaded) => {
            if let Some(problem) = super::k3s_version_problem(g, &loaded.inventory, &args.inventory)
            {
                let color = use_color(
                    g.color,
                    std::io::IsTerminal::is_terminal(&std::io::stderr()),
                );
                print_diagnostics(std::slice::from_ref(&problem), g.quiet, color);
                eprintln!(
                    "{}: invalid: 1 error, {} warning{}",
                    args.inventory.display(),
                    loaded.warnings.len(),
                    plural(loaded.warnings.len())
                );
                return Outcome::InvalidInput;
            }
            if !g.quiet {
                println!(
                    "{}: ok: {}{}",
                    args.inventory.display(),
                    summary(&loaded.inventory),
                    match loaded.warnings.len() {
                        0 => String::new(),
                        1 => ", 1 warning".to_owned(),
                        n => format!(", {n} warnings"),
                    }
                );
            }
            check_apps(g, &args.apps, &loaded.inventory)
        }
        Err(outcome) => outcome,
    }
}

/// Checks app files against the inventory: every problem as
/// `FILE:LINE:COL: error: ...` on standard error.
fn check_apps(g: &GlobalOpts, apps: &[PathBuf], inv: &Inventory) -> Outcome {
    let mut outcome = Outcome::Success;
    for path in apps {
        let problems = match crate::federation::workload::load(path) {
            Ok(app) => {
                crate::federation::workload::problems(&path.display().to_string(), &app, inv)
            }
            Err(e) => vec![e.to_string()],
        };
        for p in &problems {
            eprintln!("{}", with_severity(p));
        }
        if problems.is_empty() {
            if !g.quiet {
                println!("{}: ok", path.display());
            }
        } else {
            eprintln!(
                "{}: invalid: {} error{}",
                path.display(),
                problems.len(),
                plural(problems.len())
            );
            outcome = Outcome::InvalidInput;
        }
    }
    outcome
}

/// `FILE:LINE:COL: message` as `FILE:LINE:COL: error: message`.
fn with_severity(problem: &str) -> String {
    let mut parts = problem.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(l), Some(c), Some(rest))
            if l.trim().parse::<u32>().is_ok() && c.trim().parse::<u32>().is_ok() =>
        {
            format!("{f}:{l}:{c}: error:{rest}")
        }
        _ => match problem.split_once(": ") {
            Some((f, rest)) => format!("{f}: error: {rest}"),
            None => format!("error: {problem}"),
        },
    }
}

/// `edgeforge check --format json`: the same outcome as one JSON object.
fn run_json(g: &GlobalOpts, args: &CheckArgs, shown: &str) -> Outcome {
    let (outcome, summary, diagnostics) = match inventory::load(&args.inventory) {
        Ok(loaded) => match super::k3s_version_problem(g, &loaded.inventory, &args.inventory) {
            Some(problem) => {
                let mut all = loaded.warnings;
                all.push(problem);
                all.sort_by_key(|d| (d.line, d.col));
                (Outcome::InvalidInput, None, all)
            }
            None => (
                Outcome::Success,
                Some(summary(&loaded.inventory)),
                loaded.warnings,
            ),
        },
        Err(LoadError::Invalid(diags)) => (Outcome::InvalidInput, None, diags),
        Err(e @ LoadError::Io { .. }) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("error: {e}{cause}");
            return Outcome::Failed;
        }
    };
    let report = serde_json::json!({
        "file": shown,
        "valid": outcome == Outcome::Success,
        "summary": summary,
        "diagnostics": diagnostics,
    });
    println!("{report}");
    outcome
}

/// Runs `edgeforge inventory ...`.
pub fn run_inventory(_g: &GlobalOpts, cmd: InventoryCommand) -> Outcome {
    match cmd {
        InventoryCommand::Schema => {
            let text = match serde_json::to_string_pretty(&inventory::json_schema()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: rendering the schema: {e}");
                    return Outcome::Failed;
                }
            };
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{text}") {
                Ok(()) => Outcome::Success,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Outcome::Success,
                Err(e) => {
                    eprintln!("error: writing the schema: {e}");
                    Outcome::Failed
                }
            }
        }
    }
}

/// One line: sites, nodes, servers, agents.
fn summary(inv: &Inventory) -> String {
    let nodes = inv.nodes().count();
    let servers = inv.nodes().filter(|n| n.node.role == Role::Server).count();
    let sites = inv.sites.len();
    format!(
        "{sites} site{}, {nodes} node{} ({servers} server{}, {} agent{})",
        plural(sites),
        plural(nodes),
        plural(servers),
        nodes - servers,
        plural(nodes - servers)
    )
}

pub(super) fn print_diagnostics(diags: &[Diagnostic], quiet: bool, color: bool) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        if quiet && d.severity == Severity::Warning {
            continue;
        }
        let _ = writeln!(err, "{}", render(d, color));
    }
}

/// A diagnostic as text, with ANSI colours when `color`.
fn render(d: &Diagnostic, color: bool) -> String {
    if !color {
        return d.to_string();
    }
    let sev = match d.severity {
        Severity::Error => "\x1b[1;31merror\x1b[0m",
        Severity::Warning => "\x1b[1;33mwarning\x1b[0m",
    };
    let mut s = format!(
        "\x1b[1m{}:{}:{}:\x1b[0m {sev}: \x1b[1m{}\x1b[0m",
        d.file, d.line, d.col, d.message
    );
    if !d.hint.is_empty() {
        s.push_str(&format!("\n  \x1b[1;36mhelp:\x1b[0m {}", d.hint));
    }
    s
}

/// Whether to colour, from `--color` and whether the stream is a terminal.
pub(super) fn use_color(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
