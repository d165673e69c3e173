//! `edgeforge images ...`.

use super::{GlobalOpts, Outcome};

/// `edgeforge images ...`
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Re-hash the artifact cache and report damage.
    Verify,
}

/// Runs `edgeforge images ...`.
pub fn run(_g: &GlobalOpts, _cmd: ImagesCommand) -> Outcome {
    eprintln!("error: `images` is not built yet");
    Outcome::Failed
}
