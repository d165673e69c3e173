//! Events of a run and where they go.
//!
//! The executor emits [`Event`]s keyed by task (its plan key, e.g.
//! `edge-1/os`), subject (the node, or `site/<name>` for a site's cluster
//! tasks: one row of the summary) and target (`host:edge-1`,
//! `hypervisor:local`, `cluster:lab`, ...). Sinks show them:
//! [`super::progress::ProgressSink`] on a terminal, [`TextSink`] (timestamped
//! lines) otherwise, [`JsonSink`] (one JSON object per line, for machines).
//! Every event passes the run's [`Redactor`] first, so a secret value never
//! reaches a sink — including secrets that only appear during the run.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use super::redact::Redactor;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Already in the desired state.
    Ok,
    /// Changed (or, in check mode, would change).
    Changed,
    /// Not run: `when` false, tags, or already applied per the journal.
    Skipped,
    /// Failed; the task stops, and so do the tasks that need it.
    Failed,
}

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    RunStarted {
        /// Tasks in the run.
        tasks: usize,
        /// Subjects (nodes and sites) in the run.
        subjects: usize,
        /// Check mode.
        check: bool,
    },
    /// A task begins.
    TaskStarted {
        /// The task's plan key.
        task: String,
        /// Its summary row: node name or `site/<name>`.
        subject: String,
        /// What it runs against.
        target: String,
        /// Its layer (or `playbook` for `--playbook` runs).
        layer: String,
    },
    /// A step begins.
    StepStarted {
        /// The task.
        task: String,
        /// Its subject.
        subject: String,
        /// Playbook name.
        playbook: String,
        /// Step name.
        step: String,
    },
    /// A long step says where it is.
    StepProgress {
        /// The task.
        task: String,
        /// Its subject.
        subject: String,
        /// Step name.
        step: String,
        /// What it is doing.
        message: String,
    },
    /// A step ended.
    StepFinished {
        /// The task.
        task: String,
        /// Its subject.
        subject: String,
        /// Playbook name.
        playbook: String,
        /// Step name.
        step: String,
        /// How it ended.
        status: StepStatus,
        /// Seconds it took.
        duration_s: f64,
        /// Why it was skipped, how it failed, or a warning.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// A unified diff of a changed file.
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
    },
    /// A task published an output (its value is never in an event).
    OutputPublished {
        /// The task.
        task: String,
        /// The output's name.
        name: String,
        /// Whether the value is a secret.
        secret: bool,
    },
    /// A task ended.
    TaskFinished {
        /// The task.
        task: String,
        /// Its subject.
        subject: String,
        /// What it ran against.
        target: String,
        /// Its layer.
        layer: String,
        /// Steps already in state.
        ok: usize,
        /// Steps that changed something.
        changed: usize,
        /// Steps that failed (0 or 1).
        failed: usize,
        /// Steps not run.
        skipped: usize,
        /// Seconds it took.
        duration_s: f64,
        /// Why the task failed, if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A task was never started (a task it needs failed, max-fail, or Ctrl-C).
    TaskNotStarted {
        /// The task.
        task: String,
        /// Its subject.
        subject: String,
        /// What it would have run against.
        target: String,
        /// Its layer.
        layer: String,
        /// Why.
        reason: String,
    },
    /// The run ended.
    RunFinished {
        /// Tasks that finished without failure.
        ok_tasks: usize,
        /// Tasks that failed.
        failed_tasks: usize,
        /// Tasks never started.
        not_started: usize,
        /// Subjects with a failed or unstarted task.
        failed_subjects: usize,
        /// Seconds the run took.
        duration_s: f64,
    },
}

/// Receives events. Implementations must be cheap; they are called from task futures.
pub trait EventSink: Send + Sync {
    /// Shows or records one event.
    fn emit(&self, event: &Event);
    /// Flushes buffered output (end of run).
    fn finish(&self) {}
}

impl Redactor {
    /// The event with every free-text field redacted.
    pub fn redact_event(&self, event: Event) -> Event {
        if self.is_empty() {
            return event;
        }
        let r = |s: String| self.redact(&s);
        match event {
            Event::StepStarted {
                task,
                subject,
                playbook,
                step,
            } => Event::StepStarted {
                task,
                subject,
                playbook,
                step: r(step),
            },
            Event::StepProgress {
                task,
                subject,
                step,
                message,
            } => Event::StepProgress {
                task,
                subject,
                step: r(step),
                message: r(message),
            },
            Event::StepFinished {
                task,
                subject,
                playbook,
                step,
                status,
                duration_s,
                message,
                diff,
            } => Event::StepFinished {
                task,
                subject,
                playbook,
                step: r(step),
                status,
                duration_s,
                message: message.map(r),
                diff: diff.map(r),
            },
            Event::TaskFinished {
                task,
                subject,
                target,
                layer,
                ok,
                changed,
                failed,
                skipped,
                duration_s,
                error,
            } => Event::TaskFinished {
                task,
                subject,
                target,
                layer,
                ok,
                changed,
                failed,
                skipped,
                duration_s,
                error: error.map(r),
            },
            Event::TaskNotStarted {
                task,
                subject,
                target,
                layer,
                reason,
            } => Event::TaskNotStarted {
                task,
                subject,
                target,
                layer,
                reason: r(reason),
            },
            other => other,
        }
    }
}

/// Sends each event to several sinks.
pub struct Fanout(pub Vec<Box<dyn EventSink>>);

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for s in &self.0 {
            s.emit(event);
        }
    }
    fn finish(&self) {
        for s in &self.0 {
            s.finish();
        }
    }
}

/// One JSON object per event and line, with a `ts` field.
pub struct JsonSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonSink {
    /// Writes to `out` (a log file).
    pub fn new(out: Box<dyn Write + Send>) -> JsonSink {
        JsonSink {
            out: Mutex::new(out),
        }
    }
}

impl EventSink for JsonSink {
    fn emit(&self, event: &Event) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("ts".into(), utc_now().into());
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{value}");
    }
    fn finish(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// Timestamped lines for logs and non-terminals.
pub struct TextSink {
    out: Mutex<Box<dyn Write + Send>>,
    /// Print step lines for `ok` and `skipped` too (else only changes and failures).
    pub verbose: bool,
}

impl TextSink {
    /// Writes to `out` (usually stderr).
    pub fn new(out: Box<dyn Write + Send>, verbose: bool) -> TextSink {
        TextSink {
            out: Mutex::new(out),
            verbose,
        }
    }
}

impl EventSink for TextSink {
    fn emit(&self, event: &Event) {
        let Some(line) = text_line(event, self.verbose) else {
            return;
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{} {line}", utc_now());
        if let Event::StepFinished { diff: Some(d), .. } = event {
            let _ = write!(out, "{d}");
        }
    }
    fn finish(&self) {
        let _ = self.out.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}

/// The one-line description of an event (None: not worth a line).
pub fn text_line(event: &Event, verbose: bool) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            tasks,
            subjects,
            check,
        } => format!(
            "run started: {tasks} task(s) on {subjects} node(s) and site(s){}",
            if *check { ", check mode" } else { "" }
        ),
        Event::TaskStarted {
            subject,
            target,
            layer,
            ..
        } => {
            if !verbose {
                return None;
            }
            format!("{subject}: {layer} started on {target}")
        }
        Event::StepStarted { .. } => return None,
        Event::StepProgress {
            subject,
            step,
            message,
            ..
        } => {
            if !verbose {
                return None;
            }
            format!("{subject}: {step}: {message}")
        }
        Event::StepFinished {
            subject,
            playbook,
            step,
            status,
            duration_s,
            message,
            ..
        } => {
            let warned = *status != StepStatus::Skipped && message.is_some();
            if !verbose && !warned && matches!(status, StepStatus::Ok | StepStatus::Skipped) {
                return None;
            }
            let status = match status {
                StepStatus::Ok => "ok",
                StepStatus::Changed => "changed",
                StepStatus::Skipped => "skipped",
                StepStatus::Failed => "FAILED",
            };
            let msg = message
                .as_ref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            format!("{subject}: {playbook} / {step}: {status} in {duration_s:.2}s{msg}")
        }
        Event::OutputPublished { .. } => return None,
        Event::TaskFinished {
            subject,
            layer,
            ok,
            changed,
            failed,
            skipped,
            duration_s,
            error,
            ..
        } => {
            let err = error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
            format!(
                "{subject}: {layer} {} ok={ok} changed={changed} failed={failed} skipped={skipped} in {duration_s:.2}s{err}",
                if *failed > 0 || error.is_some() {
                    "FAILED"
                } else {
                    "done"
                }
            )
        }
        Event::TaskNotStarted {
            subject,
            layer,
            reason,
            ..
        } => format!("{subject}: {layer} not started ({reason})"),
        Event::RunFinished {
            ok_tasks,
            failed_tasks,
            not_started,
            duration_s,
            ..
        } => format!(
            "run finished in {duration_s:.2}s: {ok_tasks} task(s) ok, {failed_tasks} failed, {not_started} not started"
        ),
    })
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T01:40:00.123Z`.
pub fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_every_text_field_even_when_added_late() {
        let r = Redactor::new(["s3cr3t".to_string(), String::new()]);
        let shared = r.clone();
        shared.add("late-token-42");
        let ev = r.redact_event(Event::StepFinished {
            task: "h/os".into(),
            subject: "h".into(),
            playbook: "p".into(),
            step: "s".into(),
            status: StepStatus::Failed,
            duration_s: 0.0,
            message: Some("token s3cr3t rejected, late-token-42 too".into()),
            diff: Some("+token: s3cr3t\n".into()),
        });
        let json = serde_json::to_string(&ev).unwrap();
        assert!(
            !json.contains("s3cr3t") && !json.contains("late-token-42"),
            "{json}"
        );
        assert!(json.contains("token ******** rejected"), "{json}");
        let ev = r.redact_event(Event::TaskNotStarted {
            task: "h/k3s".into(),
            subject: "h".into(),
            target: "host:h".into(),
            layer: "k3s".into(),
            reason: "bad s3cr3t".into(),
        });
        assert!(!serde_json::to_string(&ev).unwrap().contains("s3cr3t"));
    }

    #[test]
    fn json_lines_have_event_and_timestamp() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = JsonSink::new(Box::new(buf.clone()));
        sink.emit(&Event::TaskStarted {
            task: "n1/os".into(),
            subject: "n1".into(),
            target: "host:n1".into(),
            layer: "os".into(),
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "task_started");
        assert_eq!(v["subject"], "n1");
        assert_eq!(v["target"], "host:n1");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn utc_now_is_rfc3339() {
        let t = utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        let year: i32 = t[..4].parse().unwrap();
        assert!(year >= 2024);
    }
}
