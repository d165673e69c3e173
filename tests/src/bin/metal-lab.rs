//! An emulated bare-metal machine to try `inventory/baremetal-emulated.yaml`
//! on: sushy-tools (OpenStack's Redfish emulator) on 127.0.0.1:8000 in front
//! of one libvirt domain (q35, UEFI via OVMF, an empty 4 GiB disk, SSH
//! forwarded to 127.0.0.1:2251), the BMC password in
//! /etc/edgeforge/sushy-password. Runs until Ctrl-C, then removes the domain,
//! its disk and sushy's storage pool.
//!
//!     cargo run -p edgeforge-tests --bin metal-lab
//!
//! Needs root, libvirtd, OVMF, passt and sushy-tools in the test venv
//! (tests/setup-host.sh). Do not run it beside the VM tests (they use the
//! same SSH port): it takes /tmp/edgeforge-vm.lock, as they do.

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use edgeforge_tests::sushy::{MachineShape, SushyLab, SushyOptions};

const PASSWORD_FILE: &str = "/etc/edgeforge/sushy-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lock = std::fs::File::create("/tmp/edgeforge-vm.lock").context("opening the VM lock")?;
    // SAFETY: flock on a file descriptor this process owns.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        anyhow::bail!(
            "another VM test or metal-lab holds /tmp/edgeforge-vm.lock; wait for it to end"
        );
    }
    let lab = SushyLab::start(
        "try",
        &SushyOptions {
            machines: 1,
            prefix: Some("ef-metal-try".into()),
            pool: Some("ef-metal-try".into()),
            port: Some(8000),
            shape: MachineShape {
                memory_mib: 1024,
                vcpus: 2,
                disk_gib: 4,
                ssh_ports: vec![2251],
                cpu_max: true,
            },
            ..SushyOptions::default()
        },
    )
    .context("starting sushy-tools and the machine")?;
    std::fs::create_dir_all("/etc/edgeforge")?;
    std::fs::copy(lab.password_file(), PASSWORD_FILE)
        .with_context(|| format!("writing {PASSWORD_FILE}"))?;
    std::fs::set_permissions(PASSWORD_FILE, std::fs::Permissions::from_mode(0o600))?;
    println!(
        "BMC {} (user admin, password in {PASSWORD_FILE}) in front of domain {}.\n\
         In another terminal:\n\
         \x20 edgeforge apply -i inventory/baremetal-emulated.yaml --layer machine,os\n\
         (this is a new, empty machine: after an install on an earlier one, add --recreate)\n\
         Ctrl-C here removes the machine and stops the BMC.",
        lab.endpoint(),
        lab.machines[0].name
    );
    tokio::signal::ctrl_c().await?;
    drop(lab);
    let _ = std::fs::remove_file(PASSWORD_FILE);
    println!("removed");
    Ok(())
}
