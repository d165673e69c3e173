//! Benchmark of `edgeforge plan` on a generated fleet (default 10,000 nodes
//! across 5,000 sites): prints parse, plan and render times and peak memory,
//! in process and for the real binary, next to the targets (< 1 s, < 200 MB).
//! Not a test: it asserts nothing, it measures. Run it in release mode:
//!
//! ```text
//! cargo build --release -p edgeforge -p edgeforge-tests
//! target/release/plan_bench [--nodes N] [--sites S] [--keep FILE] [--edgeforge PATH]
//! ```
//!
//! The fleet: sites of 1, 3, 2, 2 nodes in turn (3-node sites alternate
//! between one server with two agents and three servers); every tenth node a
//! libvirt VM on one of 100 hypervisors, half of which are nodes of the
//! inventory themselves (so their VMs wait for their virt layer); every
//! seventh node bare metal behind Redfish; the rest existing hosts; every
//! cluster registered into Karmada. The peer is Ansible (ansible-core from
//! PyPI) reading the same fleet as an Ansible inventory and listing a
//! two-play run; it is skipped with a note when Ansible is not installed.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgeforge::inventory::Inventory;
use edgeforge::plan::{self, Selection};

const TARGET_TIME: Duration = Duration::from_secs(1);
const TARGET_RSS_MB: f64 = 200.0;
const HYPERVISORS: usize = 100;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    nodes: usize,
    sites: usize,
    keep: Option<PathBuf>,
    edgeforge: Option<PathBuf>,
}

fn run() -> anyhow::Result<()> {
    let opts = parse_args()?;
    let (yaml, fleet) = generate(opts.nodes, opts.sites);
    let dir = tempfile::tempdir()?;
    let path = opts
        .keep
        .clone()
        .unwrap_or_else(|| dir.path().join("fleet.yaml"));
    std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "edgeforge plan benchmark: {} nodes in {} sites ({} VMs, {} Redfish, {} hypervisor-host nodes), federation karmada; inventory {:.1} MB",
        fleet.nodes,
        fleet.sites,
        fleet.vms,
        fleet.redfish,
        fleet.hypervisor_hosts,
        yaml.len() as f64 / 1e6
    );
    drop(yaml);
    println!(
        "machine: {} CPU(s) available, load average {}; release build: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        !cfg!(debug_assertions)
    );
    println!(
        "(wall time is inflated when other work shares the CPUs; CPU time is this run's own cost)"
    );
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>14}",
        "in process (phase)", "wall", "CPU", "peak RSS"
    );

    let total = Clock::start();
    let t = Clock::start();
    let text = std::fs::read_to_string(&path)?;
    let inventory: Inventory = serde_saphyr::from_str(&text).context("parsing the fleet")?;
    drop(text);
    row("read + parse (serde-saphyr)", &t, self_rss_mb());

    let t = Clock::start();
    let plan = plan::build(&inventory, &Selection::default())?;
    row(
        &format!(
            "plan ({} tasks, {} waves)",
            plan.tasks().len(),
            plan.wave_count()
        ),
        &t,
        self_rss_mb(),
    );
    let planned = total.stop();

    for (name, render) in [
        (
            "render text",
            plan::render_text as fn(&plan::Plan<'_>, &mut dyn io::Write, bool) -> io::Result<()>,
        ),
        ("render json", |p, w, _| plan::render_json(p, w)),
        ("render dot", |p, w, _| plan::render_dot(p, w)),
    ] {
        let t = Clock::start();
        let mut sink = CountingSink(0);
        render(&plan, &mut sink, false)?;
        row(
            &format!("{name} ({:.1} MB)", sink.0 as f64 / 1e6),
            &t,
            self_rss_mb(),
        );
    }
    row("parse + plan", &planned, self_rss_mb());
    row("parse + plan + all renders", &total, self_rss_mb());
    drop(plan);
    let (ansible_inventory, ansible_playbook) = write_ansible_peer(&inventory, dir.path())?;
    drop(inventory);

    let binary = match opts.edgeforge {
        Some(b) => b,
        None => sibling_binary()?,
    };
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>14}   target (on CPU time)",
        "edgeforge binary (whole process)", "wall", "CPU", "max RSS"
    );
    for format in ["text", "json", "dot"] {
        let mut cmd = Command::new(&binary);
        cmd.args(["plan", "--format", format, "-i"]).arg(&path);
        let (wall, cpu, rss) = measure(cmd)?;
        let ok = cpu < TARGET_TIME && rss < TARGET_RSS_MB;
        println!(
            "{:<40} {:>8.3} s {:>8.3} s {:>11.1} MB   < {} s, < {} MB: {}",
            format!("plan -i fleet.yaml --format {format}"),
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            rss,
            TARGET_TIME.as_secs(),
            TARGET_RSS_MB,
            if ok { "met" } else { "MISSED" }
        );
    }

    // The peer: Ansible reading the same fleet and listing a two-play run.
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>14}",
        "peer: Ansible on the same fleet", "wall", "CPU", "max RSS"
    );
    let peer: [(&str, &str, &[&str]); 2] = [
        ("ansible-inventory --list", "ansible-inventory", &["--list"]),
        (
            "ansible-playbook --list-tasks",
            "ansible-playbook",
            &["--list-hosts", "--list-tasks"],
        ),
    ];
    for (label, program, args) in peer {
        let mut cmd = Command::new(program);
        cmd.arg("-i").arg(&ansible_inventory).args(args);
        if program == "ansible-playbook" {
            cmd.arg(&ansible_playbook);
        }
        match measure(cmd) {
            Ok((wall, cpu, rss)) => println!(
                "{label:<40} {:>8.3} s {:>8.3} s {:>11.1} MB",
                wall.as_secs_f64(),
                cpu.as_secs_f64(),
                rss
            ),
            Err(e) => println!("{label:<40} not measured: {e:#}"),
        }
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<Options> {
    let mut opts = Options {
        nodes: 10_000,
        sites: 5_000,
        keep: None,
        edgeforge: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => opts.nodes = value()?.parse().context("--nodes")?,
            "--sites" => opts.sites = value()?.parse().context("--sites")?,
            "--keep" => opts.keep = Some(PathBuf::from(value()?)),
            "--edgeforge" => opts.edgeforge = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other}; usage: plan_bench [--nodes N] [--sites S] [--keep FILE] [--edgeforge PATH]"
            ),
        }
    }
    if opts.sites == 0 || opts.nodes < opts.sites || opts.nodes > opts.sites * 3 {
        bail!("--nodes must be between --sites and 3 × --sites (sites have 1 to 3 nodes)");
    }
    Ok(opts)
}

struct Fleet {
    nodes: usize,
    sites: usize,
    vms: usize,
    redfish: usize,
    hypervisor_hosts: usize,
}

/// The fleet's inventory as YAML, written the way an operator would (block style).
fn generate(nodes: usize, sites: usize) -> (String, Fleet) {
    let mut fleet = Fleet {
        nodes: 0,
        sites,
        vms: 0,
        redfish: 0,
        hypervisor_hosts: 0,
    };
    let mut y = String::with_capacity(nodes * 200);
    y.push_str("apiVersion: edgeforge/v1\nname: bench-fleet\n");
    y.push_str("versions:\n  k3s: v1.31.4+k3s1\n  osImage: debian-12-base\n");
    y.push_str("defaults:\n  ssh:\n    user: edge\n    identityFile: ~/.ssh/id_ed25519\n    sudo:\n      enabled: true\n");
    y.push_str("  k3s:\n    clusterCidr: 10.42.0.0/16\n    serviceCidr: 10.43.0.0/16\n");
    y.push_str("federation:\n  type: karmada\n  kubeconfig: /etc/edgeforge/karmada.kubeconfig\n");
    y.push_str("hypervisors:\n");
    for h in 0..HYPERVISORS {
        // The first half are nodes of the inventory (matched by name).
        let uri = if h < HYPERVISORS / 2 {
            format!("qemu+ssh://root@10.{}.{}.1/system", 1 + h / 250, h % 250)
        } else {
            format!("qemu+ssh://root@192.168.{}.1/system", h)
        };
        let _ = writeln!(y, "  - name: hv-{h:03}\n    uri: {uri}");
    }
    y.push_str("sites:\n");
    // Sizes 1, 3, 2, 2 average 2; the remainder is spread so the total is exact.
    let mut left = nodes;
    for s in 0..sites {
        let sites_after = sites - s - 1;
        let wanted = [1usize, 3, 2, 2][s % 4];
        let size = wanted.clamp(
            left.saturating_sub(sites_after * 3).max(1),
            left - sites_after,
        );
        left -= size;
        let _ = writeln!(
            y,
            "  - name: site-{s:05}\n    region: region-{}\n    zone: zone-{}{}\n    labels:\n      tier: edge\n    nodes:",
            s % 12,
            s % 12,
            ['a', 'b', 'c'][s % 3]
        );
        for i in 0..size {
            let g = fleet.nodes;
            fleet.nodes += 1;
            let hypervisor_host = s < HYPERVISORS / 2 && i == 0;
            let name = if hypervisor_host {
                format!("hv-{s:03}")
            } else {
                format!("s{s:05}-n{}", i + 1)
            };
            let role = match (size, i) {
                (_, 0) => "server",
                (3, _) if s % 8 == 1 => "server",
                _ => "agent",
            };
            let address = if hypervisor_host {
                format!("10.{}.{}.1", 1 + s / 250, s % 250)
            } else {
                format!(
                    "10.{}.{}.{}",
                    100 + g / 62_500,
                    (g / 250) % 250,
                    2 + g % 250
                )
            };
            let _ = write!(
                y,
                "      - name: {name}\n        role: {role}\n        address: {address}\n"
            );
            if hypervisor_host {
                fleet.hypervisor_hosts += 1;
                y.push_str("        hypervisorHost: true\n");
            } else if g % 10 == 3 {
                fleet.vms += 1;
                let _ = write!(
                    y,
                    "        machine:\n          type: libvirt\n          hypervisor: hv-{:03}\n          vm:\n            cpus: 2\n            memoryMib: 2048\n",
                    (g / 10) % HYPERVISORS
                );
            } else if g % 7 == 5 {
                fleet.redfish += 1;
                let _ = write!(
                    y,
                    "        machine:\n          type: redfish\n          endpoint: https://10.{}.{}.{}\n          username: admin\n          password:\n            env: BMC_PASSWORD\n",
                    200 + g / 62_500,
                    (g / 250) % 250,
                    2 + g % 250
                );
            }
        }
    }
    (y, fleet)
}

fn row(name: &str, clock: &Clock, rss_mb: f64) {
    let (wall, cpu) = clock.elapsed();
    println!(
        "{name:<40} {:>8.3} s {:>8.3} s {:>11.1} MB",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        rss_mb
    );
}

/// Wall and CPU (user + system) time since a start, optionally frozen.
struct Clock {
    wall: Instant,
    cpu: Duration,
    frozen: Option<(Duration, Duration)>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: self_usage().1,
            frozen: None,
        }
    }

    fn stop(&self) -> Clock {
        Clock {
            wall: self.wall,
            cpu: self.cpu,
            frozen: Some(self.elapsed()),
        }
    }

    fn elapsed(&self) -> (Duration, Duration) {
        self.frozen
            .unwrap_or_else(|| (self.wall.elapsed(), self_usage().1.saturating_sub(self.cpu)))
    }
}

fn cpu_time(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A writer that only counts bytes, so rendering is measured without I/O.
struct CountingSink(usize);

impl io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Peak resident set size of this process so far, in MB (getrusage maxrss).
fn self_rss_mb() -> f64 {
    self_usage().0
}

/// This process's peak RSS in MB and CPU time so far (getrusage).
fn self_usage() -> (f64, Duration) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to an rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (f64::NAN, Duration::ZERO);
    }
    (usage.ru_maxrss as f64 / 1024.0, cpu_time(&usage))
}

/// Runs a command to the end with stdout discarded: wall time, CPU time and
/// max RSS of that process alone (wait4), or why it failed.
fn measure(mut cmd: Command) -> anyhow::Result<(Duration, Duration, f64)> {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers; the Child handle is
    // never waited on afterwards, so the pid is reaped exactly once.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if rc != pid {
        bail!("wait4 on {what}: {}", io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{what} failed (status {status})");
    }
    Ok((wall, cpu_time(&usage), usage.ru_maxrss as f64 / 1024.0))
}

/// The same fleet as an Ansible inventory (a group per site, `servers` and
/// `agents` groups) and a two-play playbook (servers, then agents).
fn write_ansible_peer(inv: &Inventory, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut y = String::from("all:\n  children:\n");
    let mut servers = String::new();
    let mut agents = String::new();
    for site in &inv.sites {
        let _ = writeln!(
            y,
            "    {}:\n      hosts:",
            site.name.as_str().replace('-', "_")
        );
        for n in &site.nodes {
            let _ = writeln!(
                y,
                "        {}: {{ ansible_host: {}, ansible_user: edge }}",
                n.name.as_str(),
                n.address.as_str()
            );
            let list = match n.role {
                edgeforge::inventory::Role::Server => &mut servers,
                edgeforge::inventory::Role::Agent => &mut agents,
            };
            let _ = writeln!(list, "        {}:", n.name.as_str());
        }
        let _ = writeln!(
            y,
            "      vars: {{ region: {}, zone: {} }}",
            site.region.as_deref().unwrap_or("none"),
            site.zone.as_deref().unwrap_or("none")
        );
    }
    let _ = write!(
        y,
        "    servers:\n      hosts:\n{servers}    agents:\n      hosts:\n{agents}"
    );
    let inventory = dir.join("ansible-fleet.yaml");
    std::fs::write(&inventory, y)?;
    let playbook = dir.join("k3s.yaml");
    std::fs::write(
        &playbook,
        "- hosts: servers\n  gather_facts: false\n  tasks:\n    - name: install k3s server\n      ansible.builtin.command: 'true'\n\
         - hosts: agents\n  gather_facts: false\n  tasks:\n    - name: install k3s agent\n      ansible.builtin.command: 'true'\n",
    )?;
    Ok((inventory, playbook))
}

/// The `edgeforge` binary built next to this one (same profile directory).
fn sibling_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let candidate = me.with_file_name("edgeforge");
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!(
            "no edgeforge binary at {}; build it with `cargo build --release -p edgeforge` or pass --edgeforge PATH",
            candidate.display()
        )
    }
}
