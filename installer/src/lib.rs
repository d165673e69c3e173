//! edgeforge brings up edge sites from one inventory file: machines (libvirt
//! VMs, Redfish bare metal, or existing hosts), the OS layer, the
//! virtualization layer, k3s, and registration into a federation host.
//!
//! The data flows one way: [`inventory`] (parse and validate) → [`plan`]
//! (a DAG of tasks) → [`exec`] (walks the DAG) → step kinds from
//! [`playbook`] → [`transport`] (SSH). I/O lives only in transport, exec,
//! artifacts, virt and bmc (Redfish); inventory, plan, playbook and render
//! are pure.

pub mod artifacts;
pub mod baseimage;
pub mod bmc;
pub mod cli;
pub mod data;
pub mod exec;
pub mod facts;
pub mod inventory;
pub mod plan;
pub mod playbook;
pub mod render;
pub mod transport;

#[cfg(test)]
mod testutil;
pub mod virt;
