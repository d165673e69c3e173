//! `edgeforge lab ...`.

use super::{GlobalOpts, Outcome};

/// `edgeforge lab ...`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Show each lab VM's state, address and layer progress.
    Status,
}

/// Runs `edgeforge lab ...`.
pub fn run(_g: &GlobalOpts, _cmd: LabCommand) -> Outcome {
    eprintln!("error: `lab` is not built yet");
    Outcome::Failed
}
