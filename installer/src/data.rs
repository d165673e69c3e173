//! The project's data files (images/, playbooks/, templates/), embedded into
//! the binary as defaults so an installed `edgeforge` works without the
//! source tree. `--data-dir` points at a directory that overrides them.

use include_dir::{Dir, include_dir};

/// playbooks/ as it was at build time.
pub static PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../playbooks");
/// templates/ as it was at build time.
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");
/// images/ as it was at build time.
pub static IMAGES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../images");
/// inventory/lab.yaml: the lab `edgeforge lab up` brings up without `-i`.
pub static LAB_INVENTORY: &str = include_str!("../../inventory/lab.yaml");
