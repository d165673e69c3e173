//! The executor: runs playbook steps on many hosts.
//!
//! Input is a list of waves, each a set of [`HostWork`] (a host and the
//! ordered playbooks it gets). Hosts of a wave run in parallel, bounded by
//! `--parallel`; the next wave starts when the previous one is done (the plan
//! uses waves for "first server before joiners"). Steps of one host run in
//! order; a failing step stops that host only. `--max-fail` stops starting
//! new hosts; Ctrl-C ([`Cancel`]) stops starting steps and lets running ones
//! finish within a grace period. Every step outcome is an [`events::Event`]
//! and, unless in check mode, a [`journal`] record.

pub mod events;
pub mod journal;
pub mod lock;
pub mod select;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::facts::{self, Facts};
use crate::playbook::steps::{Prepared, StepEnv, StepKind, StepReport};
use crate::playbook::{Playbook, Step};
use crate::render::{DataDir, Renderer};
use crate::transport::{Transport, TransportError, probe_files};
use events::{Event, EventSink, Redactor, StepStatus};
use journal::{HostJournal, Record};
use select::MaxFail;

/// One host's share of a run.
#[derive(Debug, Clone)]
pub struct HostWork {
    /// Node name (unique; names the journal file).
    pub name: String,
    /// Site name.
    pub site: String,
    /// The inventory part of the template context ([`crate::render::inventory_context`]).
    pub context: Value,
    /// Playbooks to run, in order (already filtered by their `hosts`).
    pub playbooks: Vec<Arc<Playbook>>,
    /// Secret values, visible to templates as `secrets.*` and redacted from every event.
    pub secrets: BTreeMap<String, String>,
    /// Hosts of earlier waves that must have succeeded for this one to start.
    pub requires: Vec<String>,
}

/// Opens the transport for a host (the SSH connection in production).
pub type Connector = Arc<
    dyn Fn(&HostWork) -> BoxFuture<'static, Result<Arc<dyn Transport>, TransportError>>
        + Send
        + Sync,
>;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Stop starting hosts past this many failures.
    pub max_fail: Option<MaxFail>,
    /// Change nothing; report what would change.
    pub check: bool,
    /// Show unified diffs of changed files.
    pub diff: bool,
    /// Only steps with one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Never steps with one of these tags.
    pub skip_tags: Vec<String>,
    /// Ignore the journal: run every step.
    pub force: bool,
    /// Where host journals live (none: no journal).
    pub journal_dir: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            parallel: 50,
            max_fail: None,
            check: false,
            diff: false,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            force: false,
            journal_dir: None,
        }
    }
}

/// Stops a run: [`Cancel::stop`] lets running steps finish, [`Cancel::abort`] drops them.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    stopped: AtomicBool,
    aborted: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// No new steps start; running steps finish.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
    }

    /// Running steps are abandoned too (their hosts are reported interrupted).
    pub fn abort(&self) {
        self.stop();
        self.inner.aborted.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`Cancel::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    async fn aborted(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.inner.aborted.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// How a host's work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOutcome {
    /// Every selected step ran without failure.
    Done,
    /// A step (or connecting, or facts) failed.
    Failed(String),
    /// Stopped by Ctrl-C before its last step.
    Interrupted,
    /// Never started.
    NotStarted(String),
}

/// One host's line in the summary.
#[derive(Debug, Clone)]
pub struct HostSummary {
    /// Node name.
    pub host: String,
    /// Site name.
    pub site: String,
    /// How it ended.
    pub outcome: HostOutcome,
    /// Steps already in state.
    pub ok: usize,
    /// Steps that changed something.
    pub changed: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps not run.
    pub skipped: usize,
    /// Wall time.
    pub duration: Duration,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every host, in input order.
    pub hosts: Vec<HostSummary>,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
    /// Wall time.
    pub duration: Duration,
}

impl RunSummary {
    /// 130 when interrupted, 1 when a host failed or did not start, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.hosts.iter().any(|h| h.outcome != HostOutcome::Done) {
            1
        } else {
            0
        }
    }

    /// The per-host table printed at the end of `apply`.
    pub fn table(&self) -> String {
        let width = self
            .hosts
            .iter()
            .map(|h| h.host.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "{:<width$}  {:>4} {:>7} {:>6} {:>7} {:>8}  result\n",
            "HOST", "OK", "CHANGED", "FAILED", "SKIPPED", "TIME"
        );
        for h in &self.hosts {
            let result = match &h.outcome {
                HostOutcome::Done => "ok".to_string(),
                // One row per host, even when the error carries a command's multi-line output.
                HostOutcome::Failed(e) => format!(
                    "FAILED: {}",
                    e.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join(" | ")
                ),
                HostOutcome::Interrupted => "interrupted".to_string(),
                HostOutcome::NotStarted(why) => format!("not started: {why}"),
            };
            out.push_str(&format!(
                "{:<width$}  {:>4} {:>7} {:>6} {:>7} {:>7.2}s  {result}\n",
                h.host,
                h.ok,
                h.changed,
                h.failed,
                h.skipped,
                h.duration.as_secs_f64()
            ));
        }
        let failed = self
            .hosts
            .iter()
            .filter(|h| h.outcome != HostOutcome::Done)
            .count();
        out.push_str(&format!(
            "{} host(s), {} not ok, {:.2}s\n",
            self.hosts.len(),
            failed,
            self.duration.as_secs_f64()
        ));
        out
    }
}

/// Runs waves of host work; one per run.
pub struct Executor {
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    connector: Connector,
    sink: Arc<dyn EventSink>,
    cancel: Cancel,
}

impl Executor {
    /// An executor rendering with `renderer`, reading data from `data`, reaching hosts through `connector`.
    pub fn new(
        renderer: Arc<Renderer>,
        data: Arc<DataDir>,
        connector: Connector,
        sink: Arc<dyn EventSink>,
    ) -> Executor {
        Executor {
            renderer,
            data,
            connector,
            sink,
            cancel: Cancel::default(),
        }
    }

    /// The handle that stops this executor (wire it to Ctrl-C).
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// Runs the waves one after another, the hosts of a wave in parallel.
    pub async fn run(&self, waves: Vec<Vec<HostWork>>, opts: &RunOptions) -> RunSummary {
        let start = Instant::now();
        let total: usize = waves.iter().map(Vec::len).sum();
        let redactor = Redactor::new(
            waves
                .iter()
                .flatten()
                .flat_map(|h| h.secrets.values().cloned()),
        );
        let shared = Arc::new(Shared {
            renderer: self.renderer.clone(),
            data: self.data.clone(),
            connector: self.connector.clone(),
            sink: self.sink.clone(),
            cancel: self.cancel.clone(),
            redactor,
            opts: opts.clone(),
            failed: AtomicUsize::new(0),
            total,
            semaphore: Semaphore::new(opts.parallel.max(1)),
        });
        shared.emit(Event::RunStarted {
            hosts: total,
            check: opts.check,
        });
        let mut summaries: Vec<HostSummary> = Vec::with_capacity(total);
        for wave in waves {
            let mut set = tokio::task::JoinSet::new();
            for (i, host) in wave.into_iter().enumerate() {
                let blocked = host
                    .requires
                    .iter()
                    .find(|r| {
                        summaries
                            .iter()
                            .any(|s| &s.host == *r && s.outcome != HostOutcome::Done)
                    })
                    .cloned();
                let shared = shared.clone();
                set.spawn(async move { (i, shared.start_host(host, blocked).await) });
            }
            let mut wave_results = Vec::new();
            while let Some(joined) = set.join_next().await {
                // A panicking host task is a bug; its host is simply missing from the wave.
                if let Ok(r) = joined {
                    wave_results.push(r);
                }
            }
            wave_results.sort_by_key(|(i, _)| *i);
            summaries.extend(wave_results.into_iter().map(|(_, s)| s));
        }
        let summary = RunSummary {
            interrupted: self.cancel.is_stopped(),
            duration: start.elapsed(),
            hosts: summaries,
        };
        shared.emit(Event::RunFinished {
            ok_hosts: summary
                .hosts
                .iter()
                .filter(|h| h.outcome == HostOutcome::Done)
                .count(),
            failed_hosts: summary
                .hosts
                .iter()
                .filter(|h| matches!(h.outcome, HostOutcome::Failed(_)))
                .count(),
            not_started: summary
                .hosts
                .iter()
                .filter(|h| matches!(h.outcome, HostOutcome::NotStarted(_)))
                .count(),
            duration_s: summary.duration.as_secs_f64(),
        });
        self.sink.finish();
        summary
    }
}

/// What every host task of a run shares.
struct Shared {
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    connector: Connector,
    sink: Arc<dyn EventSink>,
    cancel: Cancel,
    redactor: Redactor,
    opts: RunOptions,
    failed: AtomicUsize,
    total: usize,
    semaphore: Semaphore,
}

/// A host's state while its steps run.
struct HostRun<'a> {
    work: &'a HostWork,
    transport: &'a dyn Transport,
    facts: &'a Facts,
    journal: Option<HostJournal>,
    /// The template context of the playbook being run: inventory, `facts`, `vars`, `secrets`.
    ctx: Value,
    summary: &'a mut HostSummary,
}

impl Shared {
    fn emit(&self, event: Event) {
        self.sink.emit(&self.redactor.redact_event(event));
    }

    async fn start_host(&self, host: HostWork, blocked_by: Option<String>) -> HostSummary {
        let not_started = |why: String| {
            self.emit(Event::HostNotStarted {
                host: host.name.clone(),
                reason: why.clone(),
            });
            HostSummary {
                host: host.name.clone(),
                site: host.site.clone(),
                outcome: HostOutcome::NotStarted(why),
                ok: 0,
                changed: 0,
                failed: 0,
                skipped: 0,
                duration: Duration::ZERO,
            }
        };
        if let Some(r) = blocked_by {
            return not_started(format!("it requires {r}, which did not succeed"));
        }
        let Ok(_permit) = self.semaphore.acquire().await else {
            return not_started("the run is shutting down".into());
        };
        if self.cancel.is_stopped() {
            return not_started("the run was interrupted".into());
        }
        if let Some(m) = self.opts.max_fail
            && m.exceeded(self.failed.load(Ordering::SeqCst), self.total)
        {
            return not_started("--max-fail was exceeded".into());
        }
        let summary = self.run_host(&host).await;
        if matches!(summary.outcome, HostOutcome::Failed(_)) {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        summary
    }

    async fn run_host(&self, work: &HostWork) -> HostSummary {
        let start = Instant::now();
        self.emit(Event::HostStarted {
            host: work.name.clone(),
        });
        let mut summary = HostSummary {
            host: work.name.clone(),
            site: work.site.clone(),
            outcome: HostOutcome::Done,
            ok: 0,
            changed: 0,
            failed: 0,
            skipped: 0,
            duration: Duration::ZERO,
        };
        let outcome = match self.connect_and_run(work, &mut summary).await {
            Ok(o) => o,
            Err(message) => HostOutcome::Failed(self.redactor.redact(&message)),
        };
        summary.outcome = outcome;
        summary.duration = start.elapsed();
        self.emit(Event::HostFinished {
            host: work.name.clone(),
            ok: summary.ok,
            changed: summary.changed,
            failed: summary.failed,
            skipped: summary.skipped,
            duration_s: summary.duration.as_secs_f64(),
            error: match &summary.outcome {
                HostOutcome::Failed(e) => Some(e.clone()),
                HostOutcome::Interrupted => Some("interrupted".into()),
                _ => None,
            },
        });
        summary
    }

    async fn connect_and_run(
        &self,
        work: &HostWork,
        summary: &mut HostSummary,
    ) -> Result<HostOutcome, String> {
        let transport = (self.connector)(work).await.map_err(|e| error_chain(&e))?;
        let facts = facts::gather(&*transport)
            .await
            .map_err(|e| error_chain(&e))?;
        let journal = match (&self.opts.journal_dir, self.opts.check) {
            (Some(dir), false) => {
                Some(HostJournal::open(dir, &work.name).map_err(|e| error_chain(&e))?)
            }
            _ => None,
        };
        let mut run = HostRun {
            work,
            transport: &*transport,
            facts: &facts,
            journal,
            ctx: Value::Null,
            summary,
        };
        let outcome = self.run_playbooks(&mut run).await;
        if let Some(j) = &run.journal {
            j.sync().map_err(|e| error_chain(&e))?;
        }
        // Closing is best effort: the work is done (or failed) either way.
        let _ = transport.close().await;
        outcome
    }

    async fn run_playbooks(&self, run: &mut HostRun<'_>) -> Result<HostOutcome, String> {
        for pb in &run.work.playbooks {
            run.ctx = run.work.context.clone();
            if let Some(map) = run.ctx.as_object_mut() {
                map.insert("facts".into(), json!(run.facts));
                map.insert("vars".into(), Value::Object(pb.vars.clone()));
                map.insert("secrets".into(), json!(run.work.secrets));
            }
            let mut notified: Vec<String> = run
                .journal
                .as_ref()
                .map(|j| j.pending_handlers(&pb.name))
                .unwrap_or_default();
            let mut probed = self.probe_placements(run, pb).await;
            // A probe is only true until a step changes something.
            let mut dirty = false;
            for (i, step) in pb.steps.iter().enumerate() {
                if self.cancel.is_stopped() {
                    return Ok(HostOutcome::Interrupted);
                }
                let pre = probed
                    .get_mut(i)
                    .and_then(Option::take)
                    .map(|(prepared, in_state)| (prepared, in_state && !dirty));
                let changed = self.run_step(run, pb, step, false, pre).await?;
                dirty |= changed;
                if changed {
                    for h in &step.notify {
                        if !notified.contains(h) {
                            notified.push(h.clone());
                            if let Some(j) = run.journal.as_mut() {
                                j.append(Record::Notify {
                                    playbook: pb.name.clone(),
                                    handler: h.clone(),
                                })
                                .map_err(|e| error_chain(&e))?;
                            }
                        }
                    }
                }
            }
            for handler in pb.handlers.iter().filter(|h| notified.contains(&h.name)) {
                if self.cancel.is_stopped() {
                    return Ok(HostOutcome::Interrupted);
                }
                self.run_step(run, pb, handler, true, None).await?;
                if let Some(j) = run.journal.as_mut() {
                    j.append(Record::Handled {
                        playbook: pb.name.clone(),
                        handler: handler.name.clone(),
                    })
                    .map_err(|e| error_chain(&e))?;
                }
            }
        }
        Ok(HostOutcome::Done)
    }

    /// Renders the steps of a playbook that place files and learns, in one
    /// round trip per privilege level, which destinations already hold the
    /// wanted content, mode and owner. Index `i` of the result is step `i`'s
    /// rendered form and whether it is in state; steps left `None` (not a
    /// placement, not selected, `when` false, skipped by the journal, failing
    /// to render) are prepared in the walk as usual, where their errors show.
    /// Only the steps before the first `register` take part: later ones may
    /// depend on what it records.
    async fn probe_placements(
        &self,
        run: &HostRun<'_>,
        pb: &Playbook,
    ) -> Vec<Option<(Prepared, bool)>> {
        let mut pre: Vec<Option<(Prepared, bool)>> = pb.steps.iter().map(|_| None).collect();
        if self.opts.check {
            return pre;
        }
        // Step index, privileged, and what its destination must hold.
        let mut places: Vec<(usize, bool, String, u32, Option<String>, String)> = Vec::new();
        for (i, step) in pb.steps.iter().enumerate() {
            if step.register.is_some() {
                break;
            }
            if !matches!(
                step.kind,
                StepKind::Template(_) | StepKind::Copy(_) | StepKind::Artifact(_)
            ) || !step.selected(&self.opts.tags, &self.opts.skip_tags)
            {
                continue;
            }
            let env = self.step_env(run, pb, step);
            if let Some(w) = &step.when
                && !matches!(self.renderer.eval_when(&env.origin, w, &run.ctx), Ok(true))
            {
                continue;
            }
            let Ok(prepared) = step.kind.prepare(&env) else {
                continue;
            };
            if self.journal_skips(run, pb, step, &prepared, false) {
                continue;
            }
            if let Some((dest, mode, owner, sha)) = prepared.placement() {
                places.push((
                    i,
                    step.privileged,
                    dest.to_string(),
                    mode,
                    owner.map(str::to_string),
                    sha,
                ));
            }
            pre[i] = Some((prepared, false));
        }
        // One placement is checked as cheaply by its own put.
        if places.len() < 2 {
            return pre;
        }
        for privileged in [false, true] {
            let group: Vec<_> = places.iter().filter(|p| p.1 == privileged).collect();
            if group.is_empty() {
                continue;
            }
            let dests: Vec<&str> = group.iter().map(|p| p.2.as_str()).collect();
            // A failed probe only means each step checks for itself.
            let Ok(probe) = probe_files(run.transport, &dests, privileged).await else {
                continue;
            };
            for (i, _, dest, mode, owner, sha) in group {
                if let Some((_, in_state)) = pre[*i].as_mut() {
                    *in_state = probe.unchanged(dest, sha, *mode, owner.as_deref());
                }
            }
        }
        pre
    }

    fn step_env<'a>(&'a self, run: &'a HostRun<'_>, pb: &Playbook, step: &Step) -> StepEnv<'a> {
        StepEnv {
            transport: run.transport,
            renderer: &self.renderer,
            data: &self.data,
            facts: run.facts,
            ctx: &run.ctx,
            check: self.opts.check,
            diff: self.opts.diff,
            privileged: step.privileged,
            origin: format!("{} step '{}'", pb.source, step.name),
        }
    }

    /// The journal hash of a rendered step: its inputs plus the facts its
    /// result depends on (the installation, and the boot for runtime state).
    fn journal_hash(run: &HostRun<'_>, step: &Step, prepared: &Prepared) -> String {
        let salt = if step.kind.runtime_state() {
            format!("{}/{}", run.facts.machine_id, run.facts.boot_id)
        } else {
            run.facts.machine_id.clone()
        };
        prepared.input_hash(&salt)
    }

    /// Whether the journal says this rendered step was already applied (and may be trusted).
    fn journal_skips(
        &self,
        run: &HostRun<'_>,
        pb: &Playbook,
        step: &Step,
        prepared: &Prepared,
        handler: bool,
    ) -> bool {
        !self.opts.force
            && !handler
            && step.register.is_none()
            && run.journal.as_ref().is_some_and(|j| {
                j.is_applied(
                    &pb.name,
                    &step.name,
                    &Self::journal_hash(run, step, prepared),
                )
            })
    }

    /// Runs one step; `Ok(changed)`, or `Err(message)` when it failed (the host stops).
    /// `pre` is the step already rendered by [`Shared::probe_placements`], and whether it is in state.
    async fn run_step(
        &self,
        run: &mut HostRun<'_>,
        pb: &Playbook,
        step: &Step,
        handler: bool,
        pre: Option<(Prepared, bool)>,
    ) -> Result<bool, String> {
        let host = run.work.name.clone();
        self.emit(Event::StepStarted {
            host: host.clone(),
            playbook: pb.name.clone(),
            step: step.name.clone(),
        });
        let t0 = Instant::now();
        let result = self.step_result(run, pb, step, handler, pre).await;
        let (status, message, diff, changed) = match result {
            Ok(StepOutcome::Skipped(why)) => (StepStatus::Skipped, Some(why), None, false),
            Ok(StepOutcome::Ran { changed, diff }) => (
                if changed {
                    StepStatus::Changed
                } else {
                    StepStatus::Ok
                },
                None,
                diff,
                changed,
            ),
            Err(msg) => (
                StepStatus::Failed,
                Some(self.redactor.redact(&msg)),
                None,
                false,
            ),
        };
        match status {
            StepStatus::Ok => run.summary.ok += 1,
            StepStatus::Changed => run.summary.changed += 1,
            StepStatus::Skipped => run.summary.skipped += 1,
            StepStatus::Failed => run.summary.failed += 1,
        }
        self.emit(Event::StepFinished {
            host,
            playbook: pb.name.clone(),
            step: step.name.clone(),
            status,
            duration_s: t0.elapsed().as_secs_f64(),
            message: message.clone(),
            diff: if self.opts.diff || self.opts.check {
                diff
            } else {
                None
            },
        });
        match status {
            StepStatus::Failed => Err(format!(
                "{} / {}: {}",
                pb.name,
                step.name,
                message.unwrap_or_default()
            )),
            _ => Ok(changed),
        }
    }

    async fn step_result(
        &self,
        run: &mut HostRun<'_>,
        pb: &Playbook,
        step: &Step,
        handler: bool,
        pre: Option<(Prepared, bool)>,
    ) -> Result<StepOutcome, String> {
        if !handler && !step.selected(&self.opts.tags, &self.opts.skip_tags) {
            return Ok(StepOutcome::Skipped("not selected by tags".into()));
        }
        let env = self.step_env(run, pb, step);
        if let Some(w) = &step.when {
            let yes = self
                .renderer
                .eval_when(&env.origin, w, &run.ctx)
                .map_err(|e| error_chain(&e))?;
            if !yes {
                return Ok(StepOutcome::Skipped("`when` is false".into()));
            }
        }
        let (prepared, in_state) = match pre {
            Some(pre) => pre,
            None => (step.kind.prepare(&env).map_err(|e| error_chain(&e))?, false),
        };
        if self.journal_skips(run, pb, step, &prepared, handler) {
            return Ok(StepOutcome::Skipped("already applied (journal)".into()));
        }
        let hash = Self::journal_hash(run, step, &prepared);
        let report = if in_state {
            StepReport::default()
        } else {
            tokio::select! {
                r = prepared.apply(&env) => r.map_err(|e| error_chain(&e))?,
                () = self.cancel.aborted() => return Err("interrupted while running".into()),
            }
        };
        drop(env);
        if let Some(j) = run.journal.as_mut() {
            j.append(Record::Step {
                playbook: pb.name.clone(),
                step: step.name.clone(),
                hash,
                status: if report.changed { "changed" } else { "ok" }.into(),
                ts: events::utc_now(),
            })
            .map_err(|e| error_chain(&e))?;
        }
        if let Some(name) = &step.register
            && let Some(vars) = run.ctx.get_mut("vars").and_then(Value::as_object_mut)
        {
            vars.insert(
                name.clone(),
                json!({"stdout": report.stdout, "changed": report.changed}),
            );
        }
        Ok(StepOutcome::Ran {
            changed: report.changed,
            diff: report.diff,
        })
    }
}

enum StepOutcome {
    Skipped(String),
    Ran { changed: bool, diff: Option<String> },
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
