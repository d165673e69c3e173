//! Test harness: real peers (sshd fleet, artifact HTTP server, libvirt lab) started on loopback.

pub mod apply;
pub mod blackhole;
pub mod sshd;
pub mod sudo_user;
pub mod transport_checks;

pub use blackhole::Blackhole;
pub use sshd::{KeyKind, NodeSpec, SshdFleet, SshdNode};
pub use sudo_user::SudoUser;
pub mod http;
pub mod lab;
