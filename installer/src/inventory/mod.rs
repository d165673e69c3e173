//! The inventory: the one file that says which sites, clusters and nodes to
//! bring up and how to reach them. `model` holds the types; [`load`] parses
//! YAML, checks structure and meaning, and reports every problem at once with
//! file:line:col; `resolve` layers defaults < site < node; [`json_schema`] is
//! the format as JSON Schema, for editors.

mod de;
mod diagnostic;
mod load;
pub mod model;
pub mod resolve;
mod schema;
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{LAB_IDENTITY_FILE, LoadError, Loaded, load, load_str, resolve_path};
pub use model::*;
pub use resolve::NodeView;
pub use schema::json_schema;
pub use validate::check_k3s_version;
