//! `edgeforge bmc ...` end to end through the binary, against sushy-tools:
//! status as a table and as JSON, power on/off (checked in libvirt), boot
//! override, media insert and eject, and the errors an operator meets: an
//! unknown node, a node that is not Redfish (with file:line:col), wrong
//! credentials (exit 1, pointing at the node), a refused boot mode, and
//! Ctrl-C while the BMC hangs (exit 130).

mod redfish_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeforge_tests::edgeforge_bin;
use edgeforge_tests::fault_proxy::{FaultProxy, ProxyFault};
use edgeforge_tests::http::HttpServer;
use edgeforge_tests::sushy::SushyLab;
use redfish_common::*;

fn bmc(inventory: &Path, args: &[&str]) -> Output {
    Command::new(edgeforge_bin())
        .arg("bmc")
        .args(args)
        .arg("-i")
        .arg(inventory)
        .output()
        .expect("running edgeforge")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `metal-1` on the lab, `wrong-pw` on the lab with a wrong password,
/// `plain` an existing machine.
fn inventory(lab: &SushyLab, endpoint: &str) -> std::path::PathBuf {
    let wrong = lab.dir().join("wrong-password");
    std::fs::write(&wrong, "guessed-Wrong-pw\n").unwrap();
    let mut yaml = lab.inventory(&[("metal-1", endpoint, None, None)]);
    let bad = lab
        .inventory(&[("wrong-pw", endpoint, None, None)])
        .split_once("    nodes:\n")
        .unwrap()
        .1
        .replace(
            &lab.password_file().display().to_string(),
            &wrong.display().to_string(),
        )
        .replace("127.0.0.2", "127.0.0.3")
        .replace("role: server", "role: agent");
    yaml.push_str(&bad);
    yaml.push_str("      - name: plain\n        role: agent\n        address: 127.0.0.9\n");
    write_inventory(lab, &yaml)
}

#[test]
fn status_power_boot_and_media_through_the_binary() {
    let lab = lab("cli", 1);
    let machine = &lab.machines[0];
    let http = HttpServer::start().unwrap();
    http.add_bytes("/live.iso", vec![7u8; 200_000]);
    let inv = inventory(&lab, &lab.endpoint());

    let out = bmc(&inv, &["status", "--node", "metal-1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    for want in [
        "node          metal-1".to_string(),
        format!("bmc           {} (basic auth)", lab.endpoint()),
        format!("uuid          {}", machine.uuid),
        format!("name          {}", machine.name),
        "manufacturer  Sushy Emulator".into(),
        "model         -".into(),
        "power         Off".into(),
        "media Cd      Virtual CD [CD, DVD]: empty".into(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in\n{stdout}");
    }

    let out = bmc(&inv, &["power", "on", "--node", "metal-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("metal-1: power Off -> On (ResetType On, "));
    assert_eq!(machine.domstate().unwrap(), "running");
    let out = bmc(&inv, &["power", "on", "--node", "metal-1"]);
    assert_eq!(
        text(&out.stdout),
        "metal-1: already On; no power action sent\n"
    );

    let out = bmc(
        &inv,
        &[
            "media",
            "insert",
            &http.url("/live.iso"),
            "--node",
            "metal-1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "metal-1: inserted {} (write-protected)\n",
            http.url("/live.iso")
        )
    );

    let out = bmc(&inv, &["boot", "cd", "--mode", "uefi", "--node", "metal-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("metal-1: next boot from Cd (Continuous, mode UEFI)\n")
            && stdout.contains("the BMC keeps the override Continuous"),
        "{stdout}"
    );

    let out = bmc(&inv, &["status", "--node", "metal-1", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["node"], "metal-1");
    assert_eq!(json["auth"], "basic");
    assert_eq!(json["power"], "On");
    assert_eq!(json["system"]["uuid"], machine.uuid.as_str());
    assert_eq!(json["boot"]["target"], "Cd");
    assert_eq!(json["media"][0]["id"], "Cd");
    assert_eq!(json["media"][0]["image"], http.url("/live.iso").as_str());
    assert_eq!(json["media"][0]["inserted"], true);

    let out = bmc(
        &inv,
        &["boot", "cd", "--mode", "legacy", "--node", "metal-1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("boot mode `Legacy` is not offered by the BMC"),
        "{}",
        text(&out.stderr)
    );

    let out = bmc(&inv, &["media", "eject", "--node", "metal-1"]);
    assert_eq!(
        text(&out.stdout),
        format!("metal-1: ejected {} from Cd\n", http.url("/live.iso"))
    );
    let out = bmc(&inv, &["power", "off", "--node", "metal-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(machine.domstate().unwrap(), "shut off");
}

#[test]
fn operator_errors_say_what_and_where_with_the_documented_exit_codes() {
    let lab = lab("clierr", 1);
    let inv = inventory(&lab, &lab.endpoint());
    let file = inv.display().to_string();

    let out = bmc(&inv, &["status", "--node", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {file}: no node named `nope`; the inventory has metal-1, wrong-pw, plain\n"
        )
    );

    let out = bmc(
        &inv,
        &["media", "insert", "/srv/live.iso", "--node", "metal-1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`/srv/live.iso` is not an http(s) URL"),
        "{}",
        text(&out.stderr)
    );

    let out = bmc(&inv, &["power", "off", "--node", "plain"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {file}:22:15: ")) // where `plain` is named
            && stderr.contains("node `plain` has `machine: {type: existing}`"),
        "{stderr}"
    );

    let out = bmc(&inv, &["status", "--node", "wrong-pw"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the BMC of node `wrong-pw`")
            && stderr.contains("refused the credentials of user `admin` (HTTP 401)")
            && stderr.contains(&format!("  --> {file}:14:15 ")),
        "{stderr}"
    );
    assert!(!stderr.contains("guessed-Wrong-pw") && !stderr.contains(lab.password().trim()));
}

#[test]
fn ctrl_c_while_the_bmc_hangs_exits_130() {
    let lab = lab("clisigint", 1);
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    proxy.set_fault(ProxyFault::Hang);
    let inv = inventory(&lab, &proxy.url());
    let child = Command::new(edgeforge_bin())
        .args([
            "bmc",
            "status",
            "--node",
            "metal-1",
            "--timeout",
            "600",
            "-i",
        ])
        .arg(&inv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while proxy.requests().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "edgeforge never reached the BMC"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("interrupted: closing the BMC session"),
        "{}",
        text(&out.stderr)
    );
}
