//! `edgeforge plan`: print the ordered plan of an inventory (text, JSON or
//! Graphviz dot) without touching any host.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::plan::{self, Layer, Limit, Selection};

use super::{GlobalOpts, Outcome};

const EXAMPLES: &str = "\
Examples:
  edgeforge plan -i inventory/lab.yaml
  edgeforge plan -i inventory/appliances.yaml --limit 'site:berlin-*,!berlin-2-agent'
  edgeforge plan -i inventory/appliances.yaml --layer k3s,federation --format json
  edgeforge plan -i inventory/lab.yaml --format dot | dot -Tsvg > plan.svg
  edgeforge plan -i inventory/appliances.yaml --limit 'task:*/os,task:site/*/register'

Limit: comma-separated globs (`*`, `?`) on node names, on site names with
`site:`, or on task keys (`<node>/<layer>`, `site/<site>/<action>`) with
`task:`; a leading `!` excludes. A task is in when an including term matches
it (or there are only excluding terms) and no excluding term does. A site's
cluster tasks (kubeconfig, registration) are in when any of its nodes is.
Dependencies on tasks left out are shown as external and assumed done. A
limit matching no task is an error (exit 2). --layer keeps only those layers; dependencies on
other layers become external the same way.

Exit codes: 0 plan printed, 1 runtime failure (writing output), 2 invalid
inventory or arguments.";

/// Arguments of `edgeforge plan`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct PlanArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Only nodes, sites (`site:NAME`) or tasks (`task:KEY`) matching these comma-separated globs; `!` excludes.
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Only these layers (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LAYER")]
    pub layer: Vec<Layer>,
}

/// How the plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// For people: per site, per node, layer by layer, with dependencies.
    Text,
    /// Stable machine format (`edgeforge.plan/v1`).
    Json,
    /// Graphviz digraph, one cluster per site (`dot -Tsvg`).
    Dot,
}

/// Runs `edgeforge plan`.
pub fn run(g: &GlobalOpts, args: PlanArgs) -> Outcome {
    let started = Instant::now();
    let limit = match args.limit.as_deref().map(Limit::parse).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::InvalidInput;
        }
    };
    let inventory = match super::load_inventory(g, &args.inventory) {
        Ok(loaded) => loaded.inventory,
        Err(outcome) => return outcome,
    };
    let selection = Selection {
        limit,
        layers: args.layer,
    };
    let plan = match plan::build(&inventory, &selection) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.inventory.display());
            return Outcome::InvalidInput;
        }
    };
    let stdout = io::stdout();
    let color = g.use_color(stdout.is_terminal());
    let mut out = BufWriter::new(stdout.lock());
    let written = match args.format {
        PlanFormat::Text => plan::render_text(&plan, &mut out, color),
        PlanFormat::Json => plan::render_json(&plan, &mut out),
        PlanFormat::Dot => plan::render_dot(&plan, &mut out),
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("error: writing the plan: {e}");
            return Outcome::Failed;
        }
    }
    if g.verbose > 0 {
        eprintln!(
            "planned {} task(s) for {} node(s) in {:.1} ms",
            plan.tasks().len(),
            plan.node_count(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Outcome::Success
}
