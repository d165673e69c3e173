//! The terminal view of a run: one overall bar and a bounded set of rows.
//!
//! A view with one row per host is useless past a screenful (with 40 hosts on
//! an 80x30 terminal the top scrolls away and there is no overall count), so
//! the view has exactly one overall line (tasks done of total, failed
//! subjects, running, elapsed, ETA) and at most [`ProgressSink::rows`] rows:
//! the tasks that have been running longest, each with its subject, layer,
//! current step and what the step last reported. Failures and warnings are
//! printed as lines above the bars the moment they happen; rows are cut to
//! the terminal's width so none wraps. A background tick refreshes the
//! elapsed times twice a second.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{Event, EventSink, StepStatus, text_line};

/// Most rows shown, whatever the terminal's height.
pub const MAX_ROWS: usize = 8;

/// indicatif bars on stderr: an overall bar and the longest-running tasks.
pub struct ProgressSink {
    multi: MultiProgress,
    overall: ProgressBar,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    diff: bool,
}

struct State {
    running: HashMap<String, Running>,
    rows: Vec<ProgressBar>,
    max_rows: usize,
    width: usize,
    failed: HashSet<String>,
}

struct Running {
    subject: String,
    layer: String,
    step: String,
    note: String,
    started: Instant,
}

impl ProgressSink {
    /// Bars for `total` tasks on stderr; diffs printed above the bars when `diff`.
    pub fn new(total: usize, diff: bool) -> ProgressSink {
        let (height, width) = console::Term::stderr().size();
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:24}] {pos}/{len} tasks{msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let state = Arc::new(Mutex::new(State {
            running: HashMap::new(),
            rows: Vec::new(),
            max_rows: ProgressSink::rows(usize::from(height)),
            width: usize::from(width).max(20),
            failed: HashSet::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, stop, multi) = (state.clone(), stop.clone(), multi.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    if let Ok(mut s) = state.lock() {
                        s.render(&multi);
                    }
                }
            });
        }
        ProgressSink {
            multi,
            overall,
            state,
            stop,
            diff,
        }
    }

    /// How many task rows a terminal `height` lines tall gets.
    pub fn rows(height: usize) -> usize {
        height.saturating_sub(4).clamp(1, MAX_ROWS)
    }

    fn print(&self, line: &str, width: usize) {
        for l in line.lines() {
            let _ = self.multi.println(cut(l, width));
        }
    }
}

impl State {
    /// Shows the longest-running tasks, adding and removing row bars so the
    /// view holds exactly one row per shown task.
    fn render(&mut self, multi: &MultiProgress) {
        let mut tasks: Vec<&Running> = self.running.values().collect();
        tasks.sort_by_key(|r| r.started);
        tasks.truncate(self.max_rows);
        let lines: Vec<String> = tasks
            .iter()
            .map(|r| {
                let note = if r.note.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", r.note)
                };
                cut(
                    &format!(
                        "  {:>6} {} · {} · {}{note}",
                        short_duration(r.started.elapsed()),
                        r.subject,
                        r.layer,
                        r.step
                    ),
                    self.width,
                )
            })
            .collect();
        while self.rows.len() > lines.len() {
            if let Some(bar) = self.rows.pop() {
                bar.finish_and_clear();
                multi.remove(&bar);
            }
        }
        while self.rows.len() < lines.len() {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            self.rows.push(bar);
        }
        for (bar, line) in self.rows.iter().zip(lines) {
            bar.set_message(line);
        }
    }
}

impl EventSink for ProgressSink {
    fn emit(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let width = state.width;
        match event {
            Event::TaskStarted {
                task,
                subject,
                layer,
                ..
            } => {
                state.running.insert(
                    task.clone(),
                    Running {
                        subject: subject.clone(),
                        layer: layer.clone(),
                        step: "connecting".into(),
                        note: String::new(),
                        started: Instant::now(),
                    },
                );
            }
            Event::StepStarted { task, step, .. } => {
                if let Some(r) = state.running.get_mut(task) {
                    r.step.clone_from(step);
                    r.note.clear();
                }
            }
            Event::StepProgress { task, message, .. } => {
                if let Some(r) = state.running.get_mut(task) {
                    r.note.clone_from(message);
                }
            }
            Event::StepFinished {
                diff,
                status,
                message,
                ..
            } => {
                if self.diff
                    && let Some(d) = diff
                {
                    self.print(&text_line(event, true).unwrap_or_default(), width);
                    let _ = self.multi.println(d.trim_end());
                } else if *status != StepStatus::Skipped
                    && *status != StepStatus::Failed
                    && message.is_some()
                {
                    self.print(
                        &format!("warning: {}", text_line(event, true).unwrap_or_default()),
                        width,
                    );
                }
            }
            Event::TaskFinished {
                task,
                subject,
                error,
                ..
            } => {
                state.running.remove(task);
                if error.is_some() {
                    state.failed.insert(subject.clone());
                    self.print(&text_line(event, true).unwrap_or_default(), width);
                }
                self.overall.inc(1);
            }
            Event::TaskNotStarted { subject, .. } => {
                state.failed.insert(subject.clone());
                self.overall.inc(1);
            }
            Event::RunFinished { .. } => {
                self.stop.store(true, Ordering::Relaxed);
                for bar in state.rows.drain(..) {
                    bar.finish_and_clear();
                }
                self.overall.finish_and_clear();
                return;
            }
            Event::RunStarted { .. } | Event::OutputPublished { .. } => {}
        }
        let failed = state.failed.len();
        let running = state.running.len();
        self.overall.set_message(format!(
            "{}{}",
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            if running > 0 {
                format!(", {running} running")
            } else {
                String::new()
            }
        ));
        state.render(&self.multi);
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for ProgressSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `line` cut to `width` columns (counting characters), so it never wraps.
fn cut(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1);
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `73 s` as `1m13s`, `5 s` as `5s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_bounded_by_the_terminal_and_a_maximum() {
        assert_eq!(ProgressSink::rows(30), MAX_ROWS);
        assert_eq!(ProgressSink::rows(8), 4);
        assert_eq!(ProgressSink::rows(2), 1);
    }

    #[test]
    fn lines_are_cut_to_the_width() {
        assert_eq!(cut("abcdef", 80), "abcdef");
        assert_eq!(cut("abcdef", 5), "abc…");
        assert_eq!(short_duration(Duration::from_secs(73)), "1m13s");
    }
}
