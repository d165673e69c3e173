//! Events of a run and where they go.
//!
//! The executor emits [`Event`]s; sinks show them: [`ProgressSink`]
//! (indicatif: an overall bar and one line per active host) on a terminal,
//! [`TextSink`] (timestamped lines) otherwise, [`JsonSink`] (one JSON object
//! per line, for machines). Every event passes a [`Redactor`] first, so a
//! secret value never reaches a sink.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

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
    /// Failed; the host's chain stops.
    Failed,
}

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    RunStarted {
        /// Hosts in the run.
        hosts: usize,
        /// Check mode.
        check: bool,
    },
    /// A host's work begins.
    HostStarted {
        /// Node name.
        host: String,
    },
    /// A step begins.
    StepStarted {
        /// Node name.
        host: String,
        /// Playbook name.
        playbook: String,
        /// Step name.
        step: String,
    },
    /// A step ended.
    StepFinished {
        /// Node name.
        host: String,
        /// Playbook name.
        playbook: String,
        /// Step name.
        step: String,
        /// How it ended.
        status: StepStatus,
        /// Seconds it took.
        duration_s: f64,
        /// Why it was skipped or how it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// A unified diff of a changed file.
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
    },
    /// A host's work ended.
    HostFinished {
        /// Node name.
        host: String,
        /// Steps per status.
        ok: usize,
        /// Steps that changed something.
        changed: usize,
        /// Steps that failed (0 or 1).
        failed: usize,
        /// Steps not run.
        skipped: usize,
        /// Seconds it took.
        duration_s: f64,
        /// Why the host failed, if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A host was never started (max-fail reached or the run interrupted).
    HostNotStarted {
        /// Node name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The run ended.
    RunFinished {
        /// Hosts that finished without failure.
        ok_hosts: usize,
        /// Hosts that failed.
        failed_hosts: usize,
        /// Hosts never started.
        not_started: usize,
        /// Seconds the run took.
        duration_s: f64,
    },
}

/// Receives events. Implementations must be cheap; they are called from host tasks.
pub trait EventSink: Send + Sync {
    /// Shows or records one event.
    fn emit(&self, event: &Event);
    /// Flushes buffered output (end of run).
    fn finish(&self) {}
}

/// Replaces every known secret value in event text with `********`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (empty ones are ignored).
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "********");
            }
        }
        out
    }

    /// The event with every text field redacted.
    pub fn redact_event(&self, event: Event) -> Event {
        if self.secrets.is_empty() {
            return event;
        }
        let r = |s: String| self.redact(&s);
        match event {
            Event::StepFinished {
                host,
                playbook,
                step,
                status,
                duration_s,
                message,
                diff,
            } => Event::StepFinished {
                host,
                playbook,
                step: r(step),
                status,
                duration_s,
                message: message.map(r),
                diff: diff.map(r),
            },
            Event::StepStarted {
                host,
                playbook,
                step,
            } => Event::StepStarted {
                host,
                playbook,
                step: r(step),
            },
            Event::HostFinished {
                host,
                ok,
                changed,
                failed,
                skipped,
                duration_s,
                error,
            } => Event::HostFinished {
                host,
                ok,
                changed,
                failed,
                skipped,
                duration_s,
                error: error.map(r),
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
        Event::RunStarted { hosts, check } => {
            format!(
                "run started: {hosts} host(s){}",
                if *check { ", check mode" } else { "" }
            )
        }
        Event::HostStarted { host } => format!("{host}: started"),
        Event::StepStarted { .. } => return None,
        Event::StepFinished {
            host,
            playbook,
            step,
            status,
            duration_s,
            message,
            ..
        } => {
            if !verbose && matches!(status, StepStatus::Ok | StepStatus::Skipped) {
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
            format!("{host}: {playbook} / {step}: {status} in {duration_s:.2}s{msg}")
        }
        Event::HostFinished {
            host,
            ok,
            changed,
            failed,
            skipped,
            duration_s,
            error,
        } => {
            let err = error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
            format!(
                "{host}: {} ok={ok} changed={changed} failed={failed} skipped={skipped} in {duration_s:.2}s{err}",
                if *failed > 0 || error.is_some() {
                    "FAILED"
                } else {
                    "done"
                }
            )
        }
        Event::HostNotStarted { host, reason } => format!("{host}: not started ({reason})"),
        Event::RunFinished {
            ok_hosts,
            failed_hosts,
            not_started,
            duration_s,
        } => format!(
            "run finished in {duration_s:.2}s: {ok_hosts} ok, {failed_hosts} failed, {not_started} not started"
        ),
    })
}

/// indicatif bars: one overall bar, one spinner line per active host.
pub struct ProgressSink {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: Mutex<std::collections::HashMap<String, ProgressBar>>,
    diff: bool,
}

impl ProgressSink {
    /// Bars for `total` hosts on stderr; diffs printed above the bars when `diff`.
    pub fn new(total: usize, diff: bool) -> ProgressSink {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} hosts {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        ProgressSink {
            multi,
            overall,
            hosts: Mutex::new(Default::default()),
            diff,
        }
    }
}

impl EventSink for ProgressSink {
    fn emit(&self, event: &Event) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::HostStarted { host } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(host.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                hosts.insert(host.clone(), bar);
            }
            Event::StepStarted { host, step, .. } => {
                if let Some(bar) = hosts.get(host) {
                    bar.set_message(step.clone());
                }
            }
            Event::StepFinished { diff, status, .. } => {
                if (self.diff && diff.is_some()) || *status == StepStatus::Failed {
                    if let Some(line) = text_line(event, true) {
                        let _ = self.multi.println(line);
                    }
                    if let Some(d) = diff.as_ref().filter(|_| self.diff) {
                        let _ = self.multi.println(d.trim_end());
                    }
                }
            }
            Event::HostFinished { host, .. } | Event::HostNotStarted { host, .. } => {
                if let Some(bar) = hosts.remove(host) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(line) = text_line(event, true).filter(|_| {
                    matches!(event, Event::HostNotStarted { .. }) || is_failed_host(event)
                }) {
                    let _ = self.multi.println(line);
                }
                self.overall.inc(1);
            }
            Event::RunFinished { .. } => self.overall.finish_and_clear(),
            Event::RunStarted { .. } => {}
        }
    }
}

fn is_failed_host(event: &Event) -> bool {
    matches!(event, Event::HostFinished { failed, error, .. } if *failed > 0 || error.is_some())
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
    fn secrets_are_redacted_from_every_text_field() {
        let r = Redactor::new(["s3cr3t".to_string(), String::new()]);
        let ev = r.redact_event(Event::StepFinished {
            host: "h".into(),
            playbook: "p".into(),
            step: "s".into(),
            status: StepStatus::Failed,
            duration_s: 0.0,
            message: Some("token s3cr3t rejected".into()),
            diff: Some("+token: s3cr3t\n".into()),
        });
        let json = serde_json::to_string(&ev).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
        assert!(json.contains("token ******** rejected"), "{json}");
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
        sink.emit(&Event::HostStarted { host: "n1".into() });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "host_started");
        assert_eq!(v["host"], "n1");
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
