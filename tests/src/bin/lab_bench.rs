//! Benchmark: time from `edgeforge lab up` to three TCG guests answering
//! SSH, next to plain qemu booting one guest of the same image to SSH (the
//! physical floor: direct kernel boot, user-mode networking with hostfwd).
//! Prints numbers; asserts nothing about them.
//!
//!     cargo run -p edgeforge-tests --bin lab_bench [-- qemu|lab]
//!
//! With `qemu` or `lab` only that half runs (the other prints as skipped).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgeforge::data::DataDir;
use edgeforge::virt::baseimage::{self, BuildOptions, KERNEL_CMDLINE};
use edgeforge::virt::{SeedSpec, TCG_CPU_MODEL, seed_image, ssh_banner};
use edgeforge_tests::lab::{LabNode, edgeforge_in, ensure_libvirtd, lab_inventory, lab_keys, ssh};

const QEMU_PORT: u16 = 2290;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ensure_libvirtd()?;
    let opts = BuildOptions::new(baseimage::DEFAULT_RELEASE)?;
    let (image, _) =
        tokio::task::spawn_blocking(move || baseimage::build(&opts, |line| println!("  {line}")))
            .await??;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "base image {} ({} MiB)",
        &image.sha256[..12],
        image.size >> 20
    );

    let only = std::env::args().nth(1).unwrap_or_default();
    let qemu = if only != "lab" {
        Some(qemu_alone(&image).await?)
    } else {
        None
    };
    let (lab_total, per_vm) = if only != "qemu" {
        let (t, v) = lab_up_three()?;
        (Some(t), v)
    } else {
        (None, Vec::new())
    };
    let secs = |d: Option<Duration>| {
        d.map_or("skipped".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };

    println!();
    println!(
        "boot to SSH under TCG (2 vCPUs, 1 GiB per guest), {} cores, load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  {:<62} {:>9}",
        "qemu alone, 1 guest (direct kernel boot, -netdev user hostfwd)",
        secs(qemu)
    );
    println!(
        "  {:<62} {:>9}",
        "edgeforge lab up, 3 guests (libvirt, passt; TCG boots one at a time)",
        secs(lab_total)
    );
    for (name, secs) in per_vm {
        println!("    {name:<60} {secs:>7.1} s to boot and answer SSH");
    }
    Ok(())
}

/// Boots one guest with qemu directly and returns the time to an SSH banner.
async fn qemu_alone(image: &baseimage::BaseImage) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("id_ed25519");
    let host_key = dir.path().join("host_ed25519");
    for (path, comment) in [(&key, "bench"), (&host_key, "bench-host")] {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .status()?
            .success();
        if !ok {
            bail!("ssh-keygen failed");
        }
    }
    let read = |p: &std::path::Path| std::fs::read_to_string(p).context("reading a key");
    let seed = seed_image(
        &DataDir::Embedded,
        &SeedSpec {
            hostname: "qemu-alone".into(),
            instance_id: format!("qemu-alone-{}", std::process::id()),
            user: "root".into(),
            authorized_key: read(&dir.path().join("id_ed25519.pub"))?.trim().into(),
            host_key_private: read(&host_key)?,
            host_key_public: read(&dir.path().join("host_ed25519.pub"))?.trim().into(),
            cluster: None,
        },
    )?;
    let overlay = dir.path().join("disk.qcow2");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image.image_path())
        .arg(&overlay)
        .arg("4G")
        .status()?
        .success();
    if !ok {
        bail!("qemu-img create failed");
    }
    std::fs::write(
        dir.path().join("known_hosts"),
        format!(
            "[127.0.0.1]:{QEMU_PORT} {}",
            read(&dir.path().join("host_ed25519.pub"))?
        ),
    )?;
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc,accel=tcg",
            "-cpu",
            TCG_CPU_MODEL,
            "-smp",
            "2",
            "-m",
            "1024",
        ])
        .args([
            "-display", "none", "-vga", "none", "-monitor", "none", "-serial",
        ])
        .arg(format!("file:{}", dir.path().join("console.log").display()))
        .arg("-kernel")
        .arg(image.kernel_path())
        .arg("-initrd")
        .arg(image.initrd_path())
        .args(["-append", KERNEL_CMDLINE, "-drive"])
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            seed.path().display()
        ))
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{QEMU_PORT}-:22"),
        ])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let addr = format!("127.0.0.1:{QEMU_PORT}");
    let result = loop {
        if ssh_banner(&addr).await {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(1200) {
            break Err(anyhow::anyhow!("qemu guest gave no SSH banner in 1200 s"));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("qemu exited early: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let t = result?;
    println!("qemu alone: SSH banner after {:.1} s", t.as_secs_f64());
    Ok(t)
}

/// `lab up` of three guests from scratch; total time and each VM's boot time.
fn lab_up_three() -> anyhow::Result<(Duration, Vec<(String, f64)>)> {
    let dir = tempfile::tempdir()?;
    let nodes: Vec<LabNode> = (1..=3)
        .map(|i| LabNode {
            name: format!("bench-{i}"),
            port: 2240 + i,
            memory_mib: 1024,
            hypervisor_host: false,
        })
        .collect();
    let inventory = dir.path().join("lab.yaml");
    std::fs::write(&inventory, lab_inventory("bench", &nodes))?;
    let home = dir.path().join("state");
    let inv = inventory.display().to_string();
    let _ = edgeforge_in(&home, &["lab", "down", "-i", &inv]);
    let started = Instant::now();
    let up = edgeforge_in(&home, &["lab", "up", "-i", &inv])?;
    let total = started.elapsed();
    let out = String::from_utf8_lossy(&up.stderr).into_owned();
    print!("{}{out}", String::from_utf8_lossy(&up.stdout));
    let ok =
        up.status.success() && ssh(&lab_keys(&home, "bench"), nodes[0].port, "hostname").is_ok();
    let down = edgeforge_in(&home, &["lab", "down", "-i", &inv])?;
    if !ok {
        bail!("lab up failed: {out}");
    }
    if !down.status.success() {
        bail!("lab down failed: {}", String::from_utf8_lossy(&down.stderr));
    }
    // Text log lines: `<ts> bench-1: machine/libvirt / VM booted (SSH answers): changed in 48.2s`.
    let per_vm = out
        .lines()
        .filter(|l| l.contains("VM booted") && l.contains("changed in"))
        .filter_map(|l| {
            let name = l
                .split_whitespace()
                .nth(1)?
                .trim_end_matches(':')
                .to_owned();
            let secs = l
                .rsplit("changed in ")
                .next()?
                .split('s')
                .next()?
                .parse()
                .ok()?;
            Some((name, secs))
        })
        .collect();
    Ok((total, per_vm))
}
