//! `edgeforge check` and `edgeforge inventory schema`.

use std::path::PathBuf;

use super::{GlobalOpts, Outcome};

/// Arguments of `edgeforge check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
}

/// `edgeforge inventory ...`
#[derive(Debug, clap::Subcommand)]
pub enum InventoryCommand {
    /// Print the inventory's JSON Schema, for editors.
    Schema,
}

/// Runs `edgeforge check`.
pub fn run(_g: &GlobalOpts, _args: CheckArgs) -> Outcome {
    eprintln!("error: `check` is not built yet");
    Outcome::Failed
}

/// Runs `edgeforge inventory ...`.
pub fn run_inventory(_g: &GlobalOpts, _cmd: InventoryCommand) -> Outcome {
    eprintln!("error: `inventory schema` is not built yet");
    Outcome::Failed
}
