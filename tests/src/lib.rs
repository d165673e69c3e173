//! Test harness: real peers (sshd fleet, artifact HTTP server, libvirt lab) started on loopback.
pub mod lab;
