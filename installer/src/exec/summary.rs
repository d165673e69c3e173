//! The result of a run: one [`TaskSummary`] per task, and the table `apply`
//! prints at the end, one row per subject (a node, or a site's cluster tasks)
//! with its time in each layer, then the wall time of each layer.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ExecTask;

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Every selected step ran without failure.
    Done,
    /// A step (or reaching the target) failed.
    Failed(String),
    /// Stopped by Ctrl-C before its last step.
    Interrupted,
    /// Never started, and why.
    NotStarted(String),
}

/// One task's line in the result.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    /// The task's plan key.
    pub task: String,
    /// Its subject (summary row).
    pub subject: String,
    /// Its site.
    pub site: String,
    /// Its target, as `kind:name`.
    pub target: String,
    /// Its layer.
    pub layer: String,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// Steps already in state.
    pub ok: usize,
    /// Steps that changed something.
    pub changed: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps not run.
    pub skipped: usize,
    /// When it started, from the start of the run.
    pub started: Duration,
    /// Wall time.
    pub duration: Duration,
}

impl TaskSummary {
    /// A summary of `task` with no steps run yet.
    pub fn of(task: &ExecTask, outcome: TaskOutcome) -> TaskSummary {
        TaskSummary {
            task: task.key.clone(),
            subject: task.subject.clone(),
            site: task.site.clone(),
            target: task.target.to_string(),
            layer: task.layer.clone(),
            outcome,
            ok: 0,
            changed: 0,
            failed: 0,
            skipped: 0,
            started: Duration::ZERO,
            duration: Duration::ZERO,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every task, in run-spec order.
    pub tasks: Vec<TaskSummary>,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
    /// Wall time.
    pub duration: Duration,
}

impl RunSummary {
    /// 130 when interrupted, 1 when a task failed or did not start, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.tasks.iter().any(|t| t.outcome != TaskOutcome::Done) {
            1
        } else {
            0
        }
    }

    /// How many tasks ended in an outcome `f` accepts.
    pub fn count(&self, f: impl Fn(&TaskOutcome) -> bool) -> usize {
        self.tasks.iter().filter(|t| f(&t.outcome)).count()
    }

    /// How many subjects have a task that did not end well.
    pub fn failed_subjects(&self) -> usize {
        let mut seen: Vec<&str> = self
            .tasks
            .iter()
            .filter(|t| t.outcome != TaskOutcome::Done)
            .map(|t| t.subject.as_str())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// The tasks of `subject`, in run order.
    pub fn of_subject<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a TaskSummary> {
        self.tasks.iter().filter(move |t| t.subject == subject)
    }

    /// Wall time of each layer: from its first task's start to its last task's end.
    pub fn layer_times(&self) -> Vec<(String, Duration, usize)> {
        let mut layers: Vec<(String, Duration, Duration, usize)> = Vec::new();
        for t in self.tasks.iter().filter(|t| t.duration > Duration::ZERO) {
            let end = t.started + t.duration;
            match layers.iter_mut().find(|l| l.0 == t.layer) {
                Some(l) => {
                    l.1 = l.1.min(t.started);
                    l.2 = l.2.max(end);
                    l.3 += 1;
                }
                None => layers.push((t.layer.clone(), t.started, end, 1)),
            }
        }
        layers
            .into_iter()
            .map(|(name, from, to, n)| (name, to.saturating_sub(from), n))
            .collect()
    }

    /// The table printed at the end of `apply`: one row per subject.
    pub fn table(&self) -> String {
        let mut rows: BTreeMap<usize, (&str, Vec<&TaskSummary>)> = BTreeMap::new();
        let mut order: Vec<&str> = Vec::new();
        for t in &self.tasks {
            let i = match order.iter().position(|s| *s == t.subject) {
                Some(i) => i,
                None => {
                    order.push(&t.subject);
                    order.len() - 1
                }
            };
            rows.entry(i).or_insert((&t.subject, Vec::new())).1.push(t);
        }
        let width = order.iter().map(|s| s.len()).max().unwrap_or(4).max(4);
        let mut out = format!(
            "{:<width$}  {:>4} {:>7} {:>6} {:>7} {:>8}  {:<28} result\n",
            "NODE", "OK", "CHANGED", "FAILED", "SKIPPED", "TIME", "LAYERS"
        );
        for (subject, tasks) in rows.values() {
            let sum = |f: fn(&TaskSummary) -> usize| tasks.iter().map(|t| f(t)).sum::<usize>();
            let time: Duration = tasks.iter().map(|t| t.duration).sum();
            let layers = tasks
                .iter()
                .filter(|t| t.duration > Duration::ZERO)
                .map(|t| format!("{} {:.1}s", t.layer, t.duration.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ");
            // One row per subject, even when an error carries multi-line output.
            let one_line = |e: &str| {
                e.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let result = tasks
                .iter()
                .find_map(|t| match &t.outcome {
                    TaskOutcome::Done => None,
                    TaskOutcome::Failed(e) => {
                        Some(format!("FAILED ({}): {}", t.layer, one_line(e)))
                    }
                    TaskOutcome::Interrupted => Some(format!("interrupted ({})", t.layer)),
                    TaskOutcome::NotStarted(why) => Some(format!("{} not started: {why}", t.layer)),
                })
                .unwrap_or_else(|| "ok".to_string());
            out.push_str(&format!(
                "{:<width$}  {:>4} {:>7} {:>6} {:>7} {:>7.2}s  {:<28} {result}\n",
                subject,
                sum(|t| t.ok),
                sum(|t| t.changed),
                sum(|t| t.failed),
                sum(|t| t.skipped),
                time.as_secs_f64(),
                layers,
            ));
        }
        let layer_line = self
            .layer_times()
            .iter()
            .map(|(l, d, n)| format!("{l} {:.1}s ({n})", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "{} node(s)/site(s), {} not ok, {:.2}s{}\n",
            rows.len(),
            self.failed_subjects(),
            self.duration.as_secs_f64(),
            if layer_line.is_empty() {
                String::new()
            } else {
                format!("; by layer: {layer_line}")
            }
        ));
        out
    }
}
