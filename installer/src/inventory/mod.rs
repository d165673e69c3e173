//! The inventory: the one file that says which sites, clusters and nodes to
//! bring up and how to reach them. `model` holds the types; loading parses
//! YAML, checks structure and meaning, and reports every problem at once with
//! file:line:col.

pub mod model;
pub mod resolve;

pub use model::*;
pub use resolve::NodeView;
