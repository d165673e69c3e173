//! The terminal view of a real `edgeforge apply` on 40 hosts, on an 80x30
//! pseudo-terminal read back through a terminal emulator (vt100): the live
//! part of the screen never holds more than the bounded task rows plus the
//! one overall bar, and a host's failure is printed above the bars while the
//! rest of the run is still going.

use std::time::Duration;

use edgeforge_tests::SshdFleet;
use edgeforge_tests::apply::{InventoryOpts, NODE_ROOT as R, Scenario};

/// Most task rows the view shows (`exec::progress::MAX_ROWS`).
const MAX_ROWS: usize = 8;

/// A task row: `  12s node3 · playbook · work a while`.
fn is_row(line: &str) -> bool {
    let t = line.trim_start();
    line.starts_with("  ")
        && t.split_whitespace().next().is_some_and(|d| {
            d.ends_with('s')
                && d.trim_end_matches('s')
                    .split('m')
                    .all(|p| p.parse::<u32>().is_ok())
        })
        && t.contains(" · ")
}

/// The overall bar: `00:00:03 [=====>   ] 12/40 tasks, 1 failed, 27 running ETA 2s`.
fn is_bar(line: &str) -> bool {
    line.contains(" tasks") && line.contains('[') && line.contains("ETA")
}

#[test]
fn forty_hosts_on_an_80x30_terminal_stay_in_bounds_and_show_failures_at_once() {
    let fleet = SshdFleet::start(40).unwrap();
    let sc = Scenario::new(
        &fleet,
        &InventoryOpts {
            per_site: 2,
            ..InventoryOpts::default()
        },
    );
    // node7 fails at once; every other host works for a while.
    let pb = sc.playbook(
        "work",
        &format!(
            r#"  - name: quick
    command: {{ cmd: "touch {R}/quick" }}
  - name: fail fast
    command: {{ cmd: "echo broken >&2; exit 3" }}
    when: node.name == "node7"
  - name: work a while
    command: {{ cmd: "sleep 6; touch {R}/done" }}
"#
        ),
    );
    let cmd = sc.apply_cmd(&pb, "pty.jsonl", &["--force"]);
    let mut pty = edgeforge_tests::pty::spawn(cmd, 30, 80).unwrap();
    let mut term = vt100::Parser::new(30, 80, 0);
    let (mut most_rows, mut most_bars) = (0, 0);
    let mut failure_while_running = None;
    let mut screens = 0;
    while let Ok((_, chunk)) = pty.output.recv_timeout(Duration::from_secs(180)) {
        term.process(&chunk);
        let lines: Vec<String> = term.screen().rows(0, 80).collect();
        let screen = lines.join("\n");
        let rows = lines.iter().filter(|l| is_row(l)).count();
        let bars = lines.iter().filter(|l| is_bar(l)).count();
        most_rows = most_rows.max(rows);
        most_bars = most_bars.max(bars);
        screens += 1;
        if failure_while_running.is_none() && screen.contains("node7: playbook FAILED") {
            failure_while_running = Some(rows > 0 && bars == 1);
        }
    }
    let status = pty.child.wait().unwrap();
    let screen = term.screen().rows(0, 80).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(screens > 10, "the view was drawn ({screens} updates)");
    assert!(most_rows > 0, "task rows were shown\n{screen}");
    assert!(
        most_rows <= MAX_ROWS,
        "at most {MAX_ROWS} rows at once, saw {most_rows}\n{screen}"
    );
    assert_eq!(most_bars, 1, "one overall bar\n{screen}");
    assert_eq!(
        failure_while_running,
        Some(true),
        "node7's failure is printed while the other hosts still run\n{screen}"
    );
    // The bars are gone at the end; the summary table is there.
    assert!(!screen.lines().any(is_bar), "{screen}");
    assert!(
        screen.contains("40 node(s)/site(s), 1 not ok"),
        "the summary table ends the output\n{screen}"
    );
    for i in (0..40).filter(|i| *i != 7) {
        assert!(
            fleet.node(i).root().join("done").exists(),
            "node{i} finished"
        );
    }
}
