//! `edgeforge apply`.

use std::path::PathBuf;

use super::{GlobalOpts, Outcome};

/// Arguments of `edgeforge apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
}

/// Runs `edgeforge apply`.
pub fn run(_g: &GlobalOpts, _args: ApplyArgs) -> Outcome {
    eprintln!("error: `apply` is not built yet");
    Outcome::Failed
}
