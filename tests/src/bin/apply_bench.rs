//! Benchmark: `edgeforge apply` of the 20-step must-show playbook (8
//! templates, 4 guarded commands, 4 lineinfile, 2 dirs, 2 uploads of 1 MB)
//! on N loopback sshd nodes: a cold run, a warm run that the journal skips,
//! and a warm run with `--force` that re-checks every step on the host.
//! Prints wall times and the per-step overhead (wall / (nodes × steps));
//! asserts nothing beyond each run succeeding.
//!
//! Usage: `cargo build [--release] -p edgeforge && cargo run [--release] -p edgeforge-tests --bin apply_bench [NODES] [ROUNDS]`

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{FLEET_STEPS, InventoryOpts, Scenario};
use edgeforge_tests::edgeforge_bin;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let fleet = SshdFleet::start(nodes)?;
    let bin = edgeforge_bin();
    let profile = bin
        .parent()
        .and_then(|p| p.file_name())
        .map_or("?".into(), |s| s.to_string_lossy().into_owned());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "edgeforge apply ({profile} build), {nodes} loopback sshd nodes x {FLEET_STEPS} steps, {rounds} round(s); load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>14}",
        "run", "min", "median", "max", "per step"
    );
    let mut breakdown = Vec::new();
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        ("cold (all change)", Vec::new()),
        ("warm, journal skip", Vec::new()),
        ("warm, --force (re-check)", Vec::new()),
    ];
    let mut setups: [Vec<f64>; 3] = Default::default();
    let mut step_times: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        // A fresh state directory and empty node roots for each round.
        let sc = Scenario::new(
            &fleet,
            &InventoryOpts {
                per_site: 4,
                ..Default::default()
            },
        );
        for n in fleet.nodes() {
            for e in std::fs::read_dir(n.root())?.flatten() {
                std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()))?;
            }
        }
        let pb = sc.fleet_playbook();
        for (k, extra) in [&[][..], &[][..], &["--force"][..]].into_iter().enumerate() {
            let log = format!("r{round}-{k}.jsonl");
            let started = Instant::now();
            let run = sc.apply(&pb, &log, extra);
            let wall = started.elapsed();
            let changed = run.count("changed");
            let want = if k == 0 { nodes * FLEET_STEPS } else { 0 };
            if run.code != 0 || changed != want {
                bail!(
                    "run {k} of round {round}: exit {}, {changed} changed (want {want})\n{}",
                    run.code,
                    run.dump()
                );
            }
            rows[k].1.push(wall);
            setups[k].extend(host_setup(&run));
            step_times[k].extend(run.steps(None).filter_map(|e| e["duration_s"].as_f64()));
        }
    }
    for (k, (name, mut walls)) in rows.into_iter().enumerate() {
        walls.sort();
        let median = walls[walls.len() / 2];
        let per_step = median / u32::try_from(nodes * FLEET_STEPS)?;
        println!(
            "{name:<26} {:>10.3?} {:>10.3?} {:>10.3?} {:>14.3?}",
            walls[0],
            median,
            walls[walls.len() - 1],
            per_step
        );
        breakdown.push(format!(
            "{name:<26} connect+facts per host: median {:.3}s; step time per step (on its host): median {:.2}ms, total {:.1}s",
            median_of(&mut setups[k]),
            median_of(&mut step_times[k]) * 1e3,
            step_times[k].iter().sum::<f64>() / rounds as f64,
        ));
    }
    for line in breakdown {
        println!("{line}");
    }
    println!("per step = median wall / (nodes x steps); hosts run in parallel (--parallel 50)");
    Ok(())
}

/// Per host: seconds from `task_started` to its first `step_started` (connect, auth, facts).
fn host_setup(run: &edgeforge_tests::apply::Run) -> Vec<f64> {
    let ts = |e: &serde_json::Value| {
        e["ts"].as_str().and_then(|t| {
            // `…THH:MM:SS.mmmZ`: seconds of the day are enough within one run.
            let (_, time) = t.split_once('T')?;
            let mut f = time.trim_end_matches('Z').split(':');
            let h: f64 = f.next()?.parse().ok()?;
            let m: f64 = f.next()?.parse().ok()?;
            let s: f64 = f.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
    };
    let mut out = Vec::new();
    for started in run.events.iter().filter(|e| e["event"] == "task_started") {
        let first = run
            .events
            .iter()
            .find(|e| e["event"] == "step_started" && e["subject"] == started["subject"]);
        if let (Some(a), Some(b)) = (ts(started), first.and_then(ts)) {
            out.push(b - a);
        }
    }
    out
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
