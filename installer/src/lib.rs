//! edgeforge brings up edge sites from one inventory file: machines (libvirt
//! VMs, Redfish bare metal, or existing hosts), the OS layer, the
//! virtualization layer, k3s, and registration into a federation host.
//!
//! The data flows one way: [`inventory`] (parse and validate) → [`plan`]
//! (a DAG of tasks) → [`exec`] (walks the DAG, one target per task) → step
//! kinds from [`playbook`] → the outside world behind [`transport`] (SSH),
//! [`virt`] (libvirt), [`bmc`] (Redfish) and [`kube`] (Kubernetes APIs), with
//! [`federation`] (joins into Karmada or KubeFed) over kube; [`metal`] holds
//! what bare-metal installs need beside the BMC. [`inventory`], [`plan`],
//! [`context`], [`render`] and the playbook format are pure; I/O lives in
//! transport, virt, bmc, kube, artifacts, exec and the step kinds. [`data`] is the
//! one reader of the project's data files, [`state`] the one home of the state
//! directory, [`error`] the one error type commands end with.

pub mod artifacts;
pub mod bmc;
pub mod cli;
pub mod context;
pub mod data;
pub mod error;
pub mod exec;
pub mod facts;
pub mod federation;
pub mod inventory;
pub mod kube;
pub mod metal;
pub mod plan;
pub mod playbook;
pub mod render;
pub mod sh;
pub mod state;
pub mod transport;
pub mod virt;

pub use error::Error;

#[cfg(test)]
mod testutil;
