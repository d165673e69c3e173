//! `edgeforge plan`.

use std::path::PathBuf;

use super::{GlobalOpts, Outcome};

/// Arguments of `edgeforge plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
}

/// Runs `edgeforge plan`.
pub fn run(_g: &GlobalOpts, _args: PlanArgs) -> Outcome {
    eprintln!("error: `plan` is not built yet");
    Outcome::Failed
}
