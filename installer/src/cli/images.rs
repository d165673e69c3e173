//! `edgeforge images ...`.

use super::{GlobalOpts, Outcome};

/// `edgeforge images ...`
#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Re-hash the artifact cache and report damage.
    Verify,
    /// Build the base VM image the lab boots (debootstrap; needs root).
    BuildBase(crate::cli::lab::BuildBaseArgs),
}

/// Runs `edgeforge images ...`.
pub fn run(_g: &GlobalOpts, _cmd: ImagesCommand) -> Outcome {
    if let ImagesCommand::BuildBase(args) = _cmd {
        return crate::cli::lab::run_build_base(_g, &args);
    }
    eprintln!("error: `images` is not built yet");
    Outcome::Failed
}
