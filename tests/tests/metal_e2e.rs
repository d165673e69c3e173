//! End to end on "bare metal": one libvirt domain (q35, UEFI through OVMF,
//! TCG, an empty 4 GiB disk, SSH forwarded to 127.0.0.1:2251) behind
//! sushy-tools on 127.0.0.1, installed by `edgeforge apply --layer
//! machine,os` through the whole Redfish flow of
//! `playbooks/machine/redfish.yaml`: eject, power off, the live ISO with the
//! node's keys inserted from edgeforge's media server, boot once from CD,
//! the live system reached over SSH with its pinned host key, the base image
//! streamed onto the disk and hashed on the node, power off, eject, boot from
//! disk, the installed system reached over SSH with its own pinned host key,
//! then the os layer.
//!
//! The first apply is killed (SIGKILL) while the image is being written;
//! the second resumes at that stage (the stages before it are not run again:
//! no second power-on into the live system, no second insert) and finishes
//! the install and the os layer. A third apply changes nothing. The stage
//! timings from the install journal are printed.
//!
//! Needs root, libvirtd + qemu-system-x86 + OVMF + passt, sushy-tools in
//! the test venv (tests/setup-host.sh), and the base image and the live ISO
//! (built on first use when not cached: `edgeforge images build-base` and
//! `build-live`, a few minutes each; CI builds them once per run). Boots a
//! VM: run it alone (`flock /tmp/edgeforge-vm.lock`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeforge_tests::lab::{edgeforge_in, json_events, output_text, ssh};
use edgeforge_tests::sushy::{MachineShape, SushyLab, SushyOptions, USER};

const NODE: &str = "metal-1";
const PORT: u16 = 2251;
const INVENTORY_NAME: &str = "ef-metal";
const WRITE_STEP: &str = "OS image written and checked on the node";

/// How the step named `step` finished in `ev` (its status).
fn finished<'a>(ev: &'a [serde_json::Value], step: &str) -> Vec<&'a str> {
    ev.iter()
        .filter(|e| e["event"] == "step_finished" && e["step"] == step)
        .filter_map(|e| e["status"].as_str())
        .collect()
}

fn inventory(lab: &SushyLab) -> String {
    format!(
        "apiVersion: edgeforge/v1\n\
         name: {INVENTORY_NAME}\n\
         mediaServer: {{listen: \"127.0.0.1:0\"}}\n\
         sites:\n\
         \x20 - name: metal\n\
         \x20   nodes:\n\
         \x20     - name: {NODE}\n\
         \x20       role: server\n\
         \x20       address: 127.0.0.1\n\
         \x20       ssh: {{user: root, port: {PORT}}}\n\
         \x20       machine:\n\
         \x20         type: redfish\n\
         \x20         endpoint: \"{endpoint}\"\n\
         \x20         username: {USER}\n\
         \x20         password: {{file: \"{password}\"}}\n\
         \x20         install: {{sshTimeout: 900}}\n",
        endpoint = lab.endpoint(),
        password = lab.password_file().display(),
    )
}

/// What the install journal says (or `Null`).
fn record(state: &Path) -> serde_json::Value {
    std::fs::read_to_string(state.join("install").join(format!("{NODE}.json")))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn stages_done(record: &serde_json::Value) -> Vec<String> {
    record["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["stage"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `x of y MiB sent` in a progress message: x.
fn mib_sent(message: &str) -> Option<f64> {
    let (x, rest) = message.split_once(" of ")?;
    rest.contains("MiB sent").then(|| x.trim().parse().ok())?
}

/// Runs apply and kills it (SIGKILL) once the image write has sent some of
/// the stream; returns the events it logged.
fn apply_killed_during_write(home: &Path, inv: &str, log: &Path) -> Vec<serde_json::Value> {
    let mut child = Command::new(edgeforge_tests::edgeforge_bin())
        .env("XDG_STATE_HOME", home)
        .args(["apply", "-i", inv, "--layer", "machine,os"])
        .args(["--log-format", "json", "--log-file"])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "apply ended ({status}) before the image write began:\n{:#?}",
                json_events(log)
                    .iter()
                    .filter(|e| e["event"] == "step_finished")
                    .collect::<Vec<_>>()
            );
        }
        let writing = json_events(log).iter().any(|e| {
            e["event"] == "step_progress"
                && e["step"] == WRITE_STEP
                && e["message"]
                    .as_str()
                    .and_then(mib_sent)
                    .is_some_and(|m| m > 0.0)
        });
        if writing {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no image write within 15 min"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "killing apply during the image write after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    child.kill().expect("kill");
    let _ = child.wait();
    json_events(log)
}

fn apply(home: &Path, inv: &str, log: &Path) -> (Output, Vec<serde_json::Value>) {
    let log_arg = log.display().to_string();
    let out = edgeforge_in(
        home,
        &[
            "apply",
            "-i",
            inv,
            "--layer",
            "machine,os",
            "--log-format",
            "json",
            "--log-file",
            &log_arg,
        ],
    )
    .expect("apply");
    (out, json_events(log))
}

#[test]
fn bare_metal_installs_through_redfish_resumes_after_a_kill_then_gets_its_os_layer() {
    let total = Instant::now();
    let lab = SushyLab::start(
        "metal",
        &SushyOptions {
            machines: 1,
            prefix: Some("ef-metal".into()),
            pool: Some("ef-metal".into()),
            shape: MachineShape {
                memory_mib: 1024,
                vcpus: 2,
                disk_gib: 4,
                ssh_ports: vec![PORT],
                cpu_max: true,
            },
            ..SushyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting sushy-tools: {e:#}"));
    let machine = &lab.machines[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("state-home");
    let state: PathBuf = home.join("edgeforge").join(INVENTORY_NAME);
    let keys = state.join("baremetal");
    let inv_path = dir.path().join("metal.yaml");
    std::fs::File::create(&inv_path)
        .and_then(|mut f| f.write_all(inventory(&lab).as_bytes()))
        .expect("inventory");
    let inv = inv_path.display().to_string();
    let diagnose = || {
        format!(
            "--- console of {}\n{}\n--- sushy log (tail)\n{}",
            machine.name,
            tail(&machine.console(&lab), 60),
            tail(&lab.log(), 30)
        )
    };

    // 1. Killed while the image goes onto the disk.
    let t1 = Instant::now();
    let ev1 = apply_killed_during_write(&home, &inv, &dir.path().join("apply-1.jsonl"));
    let run1 = t1.elapsed();
    let killed_at = record(&state);
    let done1 = stages_done(&killed_at);
    println!("after the kill: {killed_at:#}");
    assert_eq!(
        done1,
        [
            "eject",
            "power-off",
            "insert-live",
            "boot-cd",
            "power-on-live",
            "live-ssh"
        ],
        "the stages before the write are journaled, the write is not:\n{}",
        diagnose()
    );
    assert!(killed_at["completed"].is_null());
    assert_eq!(
        finished(&ev1, "powered on into the live system"),
        ["changed"]
    );
    assert_eq!(finished(&ev1, "live ISO inserted"), ["changed"]);
    assert_eq!(machine.domstate().expect("domstate"), "running");

    // 2. Resumed at the write: the stages done are not run again.
    let t2 = Instant::now();
    let (out2, ev2) = apply(&home, &inv, &dir.path().join("apply-2.jsonl"));
    let run2 = t2.elapsed();
    let out = output_text(&out2);
    println!("--- apply (resumed)\n{out}");
    assert!(
        out2.status.success(),
        "the resumed apply failed:\n{out}\n{}",
        diagnose()
    );
    for step in [
        "virtual media ejected",
        "powered off",
        "live ISO inserted",
        "boot once from CD (UEFI)",
        "powered on into the live system",
        "live system answers SSH",
    ] {
        assert_eq!(finished(&ev2, step), ["ok"], "{step} is not run again");
    }
    for step in [
        WRITE_STEP,
        "powered off (leaving the live system)",
        "live ISO ejected",
    ] {
        assert_eq!(finished(&ev2, step), ["changed"], "{step}");
    }
    let installed = record(&state);
    println!("install journal: {installed:#}");
    assert!(installed["completed"].is_u64(), "{installed:#}");
    assert!(installed["failed"].is_null(), "{installed:#}");
    let done2 = stages_done(&installed);
    assert_eq!(done2[..done1.len()], done1[..], "earlier stages kept");
    assert_eq!(
        done2[done1.len()..],
        [
            "write-image",
            "power-off-installed",
            "eject-live",
            "boot-hdd"
        ]
    );
    // The earlier stages keep their times from the first run.
    for (a, b) in killed_at["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(installed["stages"].as_array().into_iter().flatten())
    {
        assert_eq!(a, b);
    }
    println!("stage timings:");
    for s in installed["stages"].as_array().into_iter().flatten() {
        println!(
            "  {:<22} {:>6.1} s",
            s["stage"].as_str().unwrap_or_default(),
            s["secs"].as_f64().unwrap_or_default()
        );
    }
    // The steps every Redfish node runs (not install stages), from the resumed run.
    for step in [
        "powered on",
        "installed system answers SSH",
        "cloud-init finished",
    ] {
        let secs = ev2
            .iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == step)
            .and_then(|e| e["duration_s"].as_f64());
        let secs = secs.unwrap_or_else(|| panic!("no step `{step}` in the resumed run"));
        println!("  {step:<22} {secs:>6.1} s (then)");
    }

    // The installed system, over SSH with the host key edgeforge generated
    // and pinned (known_hosts holds only that key; ssh is strict).
    let check = |cmd: &str| ssh(&keys, PORT, cmd).expect("ssh to the installed system");
    let known = std::fs::read_to_string(keys.join("known_hosts")).expect("known_hosts");
    assert_eq!(known.lines().count(), 1, "{known}");
    let host_pub = std::fs::read_to_string(
        keys.join("hostkeys")
            .join(format!("{NODE}_installed_ed25519.pub")),
    )
    .expect("installed host key");
    let key_b64 = host_pub.split_whitespace().nth(1).expect("key");
    assert!(known.contains(key_b64));
    assert!(check("cat /etc/ssh/ssh_host_ed25519_key.pub").contains(key_b64));
    assert_eq!(check("hostname"), NODE);
    let root = check("findmnt -no SOURCE /");
    assert!(root.starts_with("/dev/sda"), "root on the disk: {root}");
    assert!(
        check("test -d /run/live && echo live || echo disk") == "disk",
        "booted from the disk, not the live system"
    );
    assert!(check("cloud-init status").contains("done"));
    // The os layer.
    assert_eq!(check("sysctl -n net.ipv4.ip_forward"), "1");
    assert!(check("cat /proc/modules").contains("br_netfilter"));
    assert!(
        machine
            .inactive_xml()
            .map(|x| !x.contains(".iso"))
            .unwrap_or(false),
        "the live ISO is ejected"
    );

    // 3. Nothing to do.
    let t3 = Instant::now();
    let (out3, ev3) = apply(&home, &inv, &dir.path().join("apply-3.jsonl"));
    let run3 = t3.elapsed();
    assert!(out3.status.success(), "{}", output_text(&out3));
    let changed: Vec<&serde_json::Value> = ev3
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "the third apply changed: {changed:#?}");
    assert_eq!(
        record(&state),
        installed,
        "a finished install stays finished"
    );

    println!(
        "wall times: killed run {:.0} s, resumed run {:.0} s, idle run {:.0} s, test {:.0} s",
        run1.as_secs_f64(),
        run2.as_secs_f64(),
        run3.as_secs_f64(),
        total.elapsed().as_secs_f64()
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
