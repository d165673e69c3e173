//! The executor: walks the plan's tasks as a DAG and runs each against its target.
//!
//! Input is a [`RunSpec`]: the plan's tasks (built by [`prepare`] from the
//! inventory and the plan), each with its [`Target`], playbook, template
//! context and the tasks it requires. A task starts as soon as every task it
//! requires has succeeded — there are no waves, so a fast site never waits
//! for a slow one — bounded by a limit per target kind (`--parallel`). A
//! task that fails, is interrupted or never starts stops exactly the tasks
//! that need it, transitively (a node's own later layers included), and
//! nothing else. `--max-fail` stops starting tasks once too many subjects
//! failed; Ctrl-C ([`Cancel`]) stops starting steps and lets running ones
//! finish within a grace period.
//!
//! Targets are opened lazily by [`targets::Targets`], once per run each: a
//! host's SSH connection when its first task starts (so a machine-layer task
//! can create the machine first) and closed after its last. Steps of one task
//! run in order; a failing step fails its task. A step may publish outputs
//! ([`outputs`]), persisted in the state directory and visible to later
//! tasks; secret ones are redacted from everything the run prints. Every
//! step outcome is an [`events::Event`] and, unless in check mode, a
//! [`journal`] record of its subject.
//!
//! A task may belong to a [`TaskGroup`] (prepare puts a site's k3s servers in
//! one and its agents in another): a rolling change. Its members run as the
//! DAG allows, but a step that takes a node out of service first takes one of
//! the group's slots ([`Reach::rollout_slot`], at most `limit` at once, held
//! until the task ends). Once a member fails, every later request for a slot
//! fails, so the rollout stops at the first node that did not come back and
//! leaves the rest untouched; a group `after` another waits for every member
//! of that one to finish (servers before agents) and stops if any failed.
//! Steps run in order; `flush_handlers` runs the handlers notified so far at
//! that point (e.g. restart k3s, then wait for its Node), the rest run at the
//! end of the playbook.

pub mod events;
pub mod journal;
pub mod lock;
pub mod outputs;
pub mod prepare;
pub mod progress;
mod redact;
pub mod select;
pub mod summary;
pub mod targets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::data::DataDir;
use crate::facts::Facts;
use crate::playbook::kinds::artifact::ArtifactParams;
use crate::playbook::kinds::flow::FlushHandlersParams;
use crate::playbook::kinds::{Conn, Prepared, Reach, StepEnv, StepError, StepReport, TaskData};
use crate::playbook::{Playbook, Step, TargetKind};
use crate::render::Renderer;
use crate::transport::{Transport, TransportError, probe_files};
use events::{Event, EventSink, Redactor, StepStatus};
use journal::{Journal, JournalError, Record};
use outputs::{Outputs, OutputsError};
use select::MaxFail;
pub use summary::{RunSummary, TaskOutcome, TaskSummary};
pub use targets::{ConnectError, Connector, Target};

/// One task of a run.
#[derive(Debug, Clone)]
pub struct ExecTask {
    /// The plan key, unique in the run: `<node>/<layer>` or `site/<site>/<action>`.
    pub key: String,
    /// The summary row it counts in: the node, or `site/<site>`.
    pub subject: String,
    /// The site.
    pub site: String,
    /// The node the task is about, if any (its SSH connection is reachable from the task's steps).
    pub node: Option<String>,
    /// The layer (`machine`, `os`, ... or `playbook` for `--playbook`).
    pub layer: String,
    /// What the task runs against.
    pub target: Target,
    /// Its steps.
    pub playbook: Arc<Playbook>,
    /// The inventory part of its template context ([`crate::context`]).
    pub context: Value,
    /// Secret values read from references, visible as `secrets.*`, redacted everywhere.
    pub secrets: BTreeMap<String, String>,
    /// Data from the plan beyond the context (a VM's spec).
    pub data: TaskData,
    /// Indices (in [`RunSpec::tasks`]) of the tasks that must succeed first.
    pub deps: Vec<usize>,
    /// The rolling group the task belongs to, if any.
    pub group: Option<TaskGroup>,
}

/// Tasks that roll a change through nodes together: at most `limit` of them
/// out of service at once, and none after the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGroup {
    /// The group's name, e.g. `site/lab/k3s-agents`.
    pub name: String,
    /// Slots: members out of service at once (at least 1).
    pub limit: usize,
    /// A group every member of which must have finished before this one takes a slot.
    pub after: Option<String>,
}

/// The tasks of a run, dependencies before dependants.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// Every task; `deps` index into this list.
    pub tasks: Vec<ExecTask>,
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tasks run at once per target kind (hosts, clusters, hypervisors, ...).
    pub parallel: usize,
    /// Stop starting tasks past this many failed subjects.
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
    /// Rebuild machines whose spec drifted.
    pub recreate: bool,
    /// Replace federation registrations that hold another cluster's id (`--reregister`).
    pub reregister: bool,
    /// The inventory's state directory: journals and outputs (none: neither is kept).
    pub state_dir: Option<PathBuf>,
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
            recreate: false,
            reregister: false,
            state_dir: None,
        }
    }
}

/// Errors that keep a run from starting.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Another run holds the lock, or the lock cannot be taken.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The outputs of earlier runs cannot be read.
    #[error(transparent)]
    Outputs(#[from] OutputsError),
    /// The run could not be prepared from the inventory and plan.
    #[error(transparent)]
    Prepare(#[from] prepare::PrepareError),
    /// The async runtime could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl ExecError {
    /// 2 for problems the input causes, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Prepare(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Outputs(#[from] OutputsError),
    #[error("{playbook} / {step}: {message}")]
    Step {
        playbook: String,
        step: String,
        message: String,
    },
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

    /// Running steps are abandoned too (their tasks are reported interrupted).
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

/// Runs the tasks of one run.
pub struct Executor {
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    connector: Arc<dyn Connector>,
    sink: Arc<dyn EventSink>,
    cancel: Cancel,
    redactor: Redactor,
}

impl Executor {
    /// An executor rendering with `renderer`, reading data from `data`, reaching targets through `connector`.
    pub fn new(
        renderer: Arc<Renderer>,
        data: Arc<DataDir>,
        connector: Arc<dyn Connector>,
        sink: Arc<dyn EventSink>,
    ) -> Executor {
        Executor {
            renderer,
            data,
            connector,
            sink,
            cancel: Cancel::default(),
            redactor: Redactor::default(),
        }
    }

    /// The handle that stops this executor (wire it to Ctrl-C).
    pub fn cancel_handle(&self) -> Cancel {
        self.cancel.clone()
    }

    /// The run's redactor: everything printed about the run goes through it.
    pub fn redactor(&self) -> Redactor {
        self.redactor.clone()
    }

    /// Runs every task of `spec`, each as soon as the tasks it requires succeeded.
    pub async fn run(&self, spec: RunSpec, opts: &RunOptions) -> Result<RunSummary, ExecError> {
        let start = Instant::now();
        for task in &spec.tasks {
            for v in task.secrets.values() {
                self.redactor.add(v);
            }
        }
        let stored = opts.state_dir.as_ref().map(|d| d.join("outputs"));
        let mut outputs = Outputs::load(stored.as_deref(), self.redactor.clone())?;
        if opts.check {
            // Check mode sees what earlier runs published and keeps its own in memory.
            outputs = outputs.in_memory();
        }
        let tasks: Vec<Arc<ExecTask>> = spec.tasks.into_iter().map(Arc::new).collect();
        let mut host_users: HashMap<String, usize> = HashMap::new();
        for t in &tasks {
            if let Some(n) = host_user(t) {
                *host_users.entry(n.to_string()).or_default() += 1;
            }
        }
        let subjects: HashSet<&str> = tasks.iter().map(|t| t.subject.as_str()).collect();
        let mut groups: HashMap<String, GroupState> = HashMap::new();
        for g in tasks.iter().filter_map(|t| t.group.as_ref()) {
            let state = groups.entry(g.name.clone()).or_insert_with(|| GroupState {
                slots: Arc::new(Semaphore::new(g.limit.max(1))),
                remaining: Mutex::new(0),
                failed: Mutex::new(None),
                finished: Notify::new(),
            });
            *state.remaining.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
        let shared = Arc::new(Shared {
            renderer: self.renderer.clone(),
            data: self.data.clone(),
            targets: targets::Targets::new(self.connector.clone(), host_users),
            sink: self.sink.clone(),
            cancel: self.cancel.clone(),
            redactor: self.redactor.clone(),
            outputs,
            opts: opts.clone(),
            failed_subjects: Mutex::new(HashSet::new()),
            subjects: subjects.len(),
            journals: Mutex::new(HashMap::new()),
            limits: TargetKind::ALL
                .iter()
                .map(|k| (*k, Semaphore::new(opts.parallel.max(1))))
                .collect(),
            groups,
            start,
        });
        shared.emit(Event::RunStarted {
            tasks: tasks.len(),
            subjects: subjects.len(),
            check: opts.check,
        });

        let n = tasks.len();
        let mut pending: Vec<usize> = tasks.iter().map(|t| t.deps.len()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, t) in tasks.iter().enumerate() {
            for &d in &t.deps {
                if let Some(list) = dependents.get_mut(d) {
                    list.push(i);
                }
            }
        }
        let mut results: Vec<Option<TaskSummary>> = vec![None; n];
        let mut running = futures_util::stream::FuturesUnordered::new();
        let spawn = |i: usize| {
            let shared = shared.clone();
            let task = tasks[i].clone();
            let handle = tokio::spawn(async move { shared.run_task(&task).await });
            async move { (i, handle.await) }
        };
        for i in (0..n).filter(|&i| pending[i] == 0) {
            running.push(spawn(i));
        }
        use futures_util::StreamExt;
        while let Some((i, joined)) = running.next().await {
            // A task that panicked is a bug; it counts as failed so its dependants stop.
            // (A task that ran counted itself in its group already.)
            let joined_failed = joined.is_err();
            let summary = joined.unwrap_or_else(|e| {
                TaskSummary::of(
                    &tasks[i],
                    TaskOutcome::Failed(format!("internal error: {e}")),
                )
            });
            let succeeded = summary.outcome == TaskOutcome::Done;
            if joined_failed {
                shared.group_finished(&tasks[i], &summary.outcome);
            }
            let reason = match &summary.outcome {
                TaskOutcome::Done => String::new(),
                TaskOutcome::Failed(_) => "which failed".to_string(),
                TaskOutcome::Interrupted => "which was interrupted".to_string(),
                TaskOutcome::NotStarted(_) => "which did not start".to_string(),
            };
            results[i] = Some(summary);
            if succeeded {
                for &d in &dependents[i] {
                    pending[d] -= 1;
                    if pending[d] == 0 && results[d].is_none() {
                        running.push(spawn(d));
                    }
                }
                continue;
            }
            // Everything that needs this task, directly or not, cannot run;
            // each says which task it needed.
            let mut stack: Vec<(usize, usize, String)> = dependents[i]
                .iter()
                .map(|&d| (d, i, reason.clone()))
                .collect();
            while let Some((d, parent, why)) = stack.pop() {
                if results[d].is_some() {
                    continue;
                }
                let why = format!("it needs {}, {why}", tasks[parent].key);
                let summary = shared.not_started(&tasks[d], why);
                shared.group_finished(&tasks[d], &summary.outcome);
                results[d] = Some(summary);
                stack.extend(
                    dependents[d]
                        .iter()
                        .map(|&dd| (dd, d, "which did not start".to_string())),
                );
            }
        }
        shared.targets.close_all().await;
        let summary = RunSummary {
            interrupted: self.cancel.is_stopped(),
            duration: start.elapsed(),
            tasks: results
                .into_iter()
                .zip(&tasks)
                .map(|(r, t)| {
                    r.unwrap_or_else(|| {
                        TaskSummary::of(t, TaskOutcome::NotStarted("never became ready".into()))
                    })
                })
                .collect(),
        };
        shared.emit(Event::RunFinished {
            ok_tasks: summary.count(|o| *o == TaskOutcome::Done),
            failed_tasks: summary.count(|o| matches!(o, TaskOutcome::Failed(_))),
            not_started: summary.count(|o| matches!(o, TaskOutcome::NotStarted(_))),
            failed_subjects: summary.failed_subjects(),
            duration_s: summary.duration.as_secs_f64(),
        });
        self.sink.finish();
        Ok(summary)
    }
}

/// The node whose SSH connection a task uses: its host target, or the node
/// a machine task brings up (it waits for cloud-init over SSH).
fn host_user(t: &ExecTask) -> Option<&str> {
    match &t.target {
        Target::Host(n) => Some(n),
        Target::Hypervisor(_) | Target::Bmc(_) => t.node.as_deref(),
        Target::Cluster(_) | Target::Federation => None,
    }
}

/// What every task of a run shares.
struct Shared {
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    targets: targets::Targets,
    sink: Arc<dyn EventSink>,
    cancel: Cancel,
    redactor: Redactor,
    outputs: Outputs,
    opts: RunOptions,
    failed_subjects: Mutex<HashSet<String>>,
    subjects: usize,
    journals: Mutex<HashMap<String, Arc<Mutex<Journal>>>>,
    limits: HashMap<TargetKind, Semaphore>,
    groups: HashMap<String, GroupState>,
    start: Instant,
}

/// A [`TaskGroup`] while the run goes.
struct GroupState {
    slots: Arc<Semaphore>,
    /// Members not finished yet.
    remaining: Mutex<usize>,
    /// The first member that failed, and how.
    failed: Mutex<Option<String>>,
    /// Woken when a member finishes.
    finished: Notify,
}

/// A task's state while its steps run.
struct TaskRun<'a> {
    task: &'a ExecTask,
    conn: Conn<'a>,
    /// Facts of a host target (the journal's salt and `facts.*`).
    facts: Option<&'a Facts>,
    journal: Option<Arc<Mutex<Journal>>>,
    /// The template context of the playbook: inventory, `facts`, `vars`, `secrets`, `outputs`.
    ctx: Value,
    summary: &'a mut TaskSummary,
    reach: &'a TaskReach<'a>,
}

/// What the connected target of a task holds for the task's duration.
enum Held {
    Host(Arc<targets::HostLink>, Facts),
    Kube(crate::kube::KubeConn),
    Hypervisor(Arc<crate::virt::Session>),
    Bmc(Arc<crate::bmc::RedfishClient>),
}

impl Shared {
    fn emit(&self, event: Event) {
        self.sink.emit(&self.redactor.redact_event(event));
    }

    /// A member of a group finished: count it, and stop the group if it did not succeed.
    fn group_finished(&self, task: &ExecTask, outcome: &TaskOutcome) {
        let Some(state) = task.group.as_ref().and_then(|g| self.groups.get(&g.name)) else {
            return;
        };
        if *outcome != TaskOutcome::Done {
            let how = match outcome {
                TaskOutcome::Failed(e) => format!("{} failed: {e}", task.key),
                TaskOutcome::Interrupted => format!("{} was interrupted", task.key),
                TaskOutcome::NotStarted(why) => format!("{} did not start ({why})", task.key),
                TaskOutcome::Done => String::new(),
            };
            state
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(how);
        }
        let mut remaining = state.remaining.lock().unwrap_or_else(|p| p.into_inner());
        *remaining = remaining.saturating_sub(1);
        drop(remaining);
        state.finished.notify_waiters();
    }

    /// Takes a slot of `task`'s group: waits for the group it comes after to
    /// finish, then for a free slot; fails once either group has a failure.
    async fn group_slot(
        &self,
        task: &ExecTask,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, StepError> {
        let Some(group) = &task.group else {
            return Ok(None);
        };
        let stopped = |why: &str| {
            StepError::Invalid(format!(
                "{} was left untouched: the rollout of {} stopped because {why}",
                task.subject, group.name
            ))
        };
        let failed = |state: &GroupState| {
            state
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        if let Some(before) = group.after.as_ref().and_then(|a| self.groups.get(a)) {
            loop {
                let notified = before.finished.notified();
                if *before.remaining.lock().unwrap_or_else(|p| p.into_inner()) == 0 {
                    break;
                }
                tokio::select! {
                    () = notified => {}
                    () = self.cancel.aborted() => return Err(StepError::Invalid("interrupted".into())),
                }
            }
            if let Some(why) = failed(before) {
                return Err(stopped(&why));
            }
        }
        let Some(state) = self.groups.get(&group.name) else {
            return Ok(None);
        };
        if let Some(why) = failed(state) {
            return Err(stopped(&why));
        }
        let permit = tokio::select! {
            p = state.slots.clone().acquire_owned() => p.map_err(|_| stopped("the run is shutting down"))?,
            () = self.cancel.aborted() => return Err(StepError::Invalid("interrupted".into())),
        };
        // A member may have failed while this one waited for its slot.
        if let Some(why) = failed(state) {
            return Err(stopped(&why));
        }
        Ok(Some(permit))
    }

    fn not_started(&self, task: &ExecTask, why: String) -> TaskSummary {
        self.emit(Event::TaskNotStarted {
            task: task.key.clone(),
            subject: task.subject.clone(),
            target: task.target.to_string(),
            layer: task.layer.clone(),
            reason: why.clone(),
        });
        self.failed_subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.subject.clone());
        TaskSummary::of(task, TaskOutcome::NotStarted(why))
    }

    async fn run_task(&self, task: &ExecTask) -> TaskSummary {
        let slot = Mutex::new(None);
        let summary = self.run_task_inner(task, &slot).await;
        // The group learns how the task ended before its slot is free again,
        // so a waiting member never takes the slot of a failed one unaware.
        self.group_finished(task, &summary.outcome);
        drop(slot);
        if let Some(node) = host_user(task) {
            self.targets.release_host(node).await;
        }
        summary
    }

    async fn run_task_inner(&self, task: &ExecTask, slot: &GroupSlot) -> TaskSummary {
        let Some(limit) = self.limits.get(&task.target.kind()) else {
            return self.not_started(task, "no limit for its target kind".into());
        };
        let Ok(_permit) = limit.acquire().await else {
            return self.not_started(task, "the run is shutting down".into());
        };
        if self.cancel.is_stopped() {
            return self.not_started(task, "the run was interrupted".into());
        }
        if let Some(m) = self.opts.max_fail {
            let failed = self
                .failed_subjects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            if m.exceeded(failed, self.subjects) {
                return self.not_started(task, "--max-fail was exceeded".into());
            }
        }
        self.emit(Event::TaskStarted {
            task: task.key.clone(),
            subject: task.subject.clone(),
            target: task.target.to_string(),
            layer: task.layer.clone(),
        });
        let mut summary = TaskSummary::of(task, TaskOutcome::Done);
        summary.started = self.start.elapsed();
        let t0 = Instant::now();
        let outcome = match self.execute(task, &mut summary, slot).await {
            Ok(o) => o,
            Err(e) => TaskOutcome::Failed(self.redactor.redact(&crate::error::chain(&e))),
        };
        summary.outcome = outcome;
        summary.duration = t0.elapsed();
        if !matches!(summary.outcome, TaskOutcome::Done) {
            self.failed_subjects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task.subject.clone());
        }
        self.emit(Event::TaskFinished {
            task: task.key.clone(),
            subject: task.subject.clone(),
            target: task.target.to_string(),
            layer: task.layer.clone(),
            ok: summary.ok,
            changed: summary.changed,
            failed: summary.failed,
            skipped: summary.skipped,
            duration_s: summary.duration.as_secs_f64(),
            error: match &summary.outcome {
                TaskOutcome::Failed(e) => Some(e.clone()),
                TaskOutcome::Interrupted => Some("interrupted".into()),
                _ => None,
            },
        });
        summary
    }

    /// Connects the task's target and runs its playbook.
    async fn execute(
        &self,
        task: &ExecTask,
        summary: &mut TaskSummary,
        slot: &GroupSlot,
    ) -> Result<TaskOutcome, TaskError> {
        let held = match &task.target {
            Target::Host(node) => {
                let (link, facts) = self.targets.host_with_facts(node).await?;
                Held::Host(link, facts)
            }
            Target::Cluster(_) | Target::Federation => {
                Held::Kube(self.targets.kube(&task.target).await?)
            }
            Target::Hypervisor(name) => Held::Hypervisor(self.targets.hypervisor(name).await?),
            Target::Bmc(node) => Held::Bmc(self.targets.bmc(node).await?),
        };
        let (conn, facts) = match &held {
            Held::Host(link, facts) => (
                Conn::Host {
                    transport: &**link as &dyn Transport,
                    facts,
                },
                Some(facts),
            ),
            Held::Kube(conn) => (Conn::Kube(conn), None),
            Held::Hypervisor(session) => (Conn::Hypervisor(session), None),
            Held::Bmc(client) => (Conn::Bmc(client), None),
        };
        let journal = match (&self.opts.state_dir, self.opts.check) {
            (Some(dir), false) => Some(self.journal(&dir.join("journal"), &task.subject)?),
            _ => None,
        };
        let reach = TaskReach {
            shared: self,
            task,
            step: Mutex::new(String::new()),
            slot,
            journal: journal.clone(),
        };
        let mut run = TaskRun {
            task,
            conn,
            facts,
            journal,
            ctx: Value::Null,
            summary,
            reach: &reach,
        };
        let outcome = self.run_playbook(&mut run).await;
        if let Some(j) = &run.journal {
            j.lock().unwrap_or_else(|p| p.into_inner()).sync()?;
        }
        outcome
    }

    /// The journal of `subject`, opened once per run and shared by its tasks.
    fn journal(
        &self,
        dir: &std::path::Path,
        subject: &str,
    ) -> Result<Arc<Mutex<Journal>>, JournalError> {
        let mut journals = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = journals.get(subject) {
            return Ok(j.clone());
        }
        let j = Arc::new(Mutex::new(Journal::open(dir, subject)?));
        journals.insert(subject.to_string(), j.clone());
        Ok(j)
    }

    async fn run_playbook(&self, run: &mut TaskRun<'_>) -> Result<TaskOutcome, TaskError> {
        let pb = run.task.playbook.clone();
        run.ctx = run.task.context.clone();
        if let Some(map) = run.ctx.as_object_mut() {
            if let Some(facts) = run.facts {
                map.insert("facts".into(), json!(facts));
            }
            map.insert("vars".into(), Value::Object(pb.vars.clone()));
            map.insert("secrets".into(), json!(run.task.secrets));
            map.insert("outputs".into(), self.outputs.context(&run.task.site));
        }
        let mut notified: Vec<String> = run
            .journal
            .as_ref()
            .map(|j| {
                j.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pending_handlers(&pb.name)
            })
            .unwrap_or_default();
        if let Some(i) = self.missing_artifact(run, &pb) {
            // Run (and fail) that step first, with its usual events and message.
            self.run_step(run, &pb, &pb.steps[i], false, None).await?;
        }
        let mut probed = self.probe_placements(run, &pb).await;
        // A probe is only true until a step changes something.
        let mut dirty = false;
        for (i, step) in pb.steps.iter().enumerate() {
            if self.cancel.is_stopped() {
                return Ok(TaskOutcome::Interrupted);
            }
            let pre = probed
                .get_mut(i)
                .and_then(Option::take)
                .map(|(prepared, in_state)| (prepared, in_state && !dirty));
            if step.kind.as_any().is::<FlushHandlersParams>()
                && step.selected(&self.opts.tags, &self.opts.skip_tags)
            {
                let now = std::mem::take(&mut notified);
                dirty |= !now.is_empty();
                if self.run_handlers(run, &pb, &now).await? == TaskOutcome::Interrupted {
                    return Ok(TaskOutcome::Interrupted);
                }
            }
            let changed = self.run_step(run, &pb, step, false, pre).await?;
            dirty |= changed;
            if changed {
                for h in &step.notify {
                    if !notified.contains(h) {
                        notified.push(h.clone());
                        self.record(
                            run,
                            Record::Notify {
                                playbook: pb.name.clone(),
                                handler: h.clone(),
                            },
                        )?;
                    }
                }
            }
        }
        self.run_handlers(run, &pb, &notified).await
    }

    /// Runs the handlers named in `notified`, in the playbook's order of handlers.
    async fn run_handlers(
        &self,
        run: &mut TaskRun<'_>,
        pb: &Playbook,
        notified: &[String],
    ) -> Result<TaskOutcome, TaskError> {
        for handler in pb.handlers.iter().filter(|h| notified.contains(&h.name)) {
            if self.cancel.is_stopped() {
                return Ok(TaskOutcome::Interrupted);
            }
            self.run_step(run, pb, handler, true, None).await?;
            self.record(
                run,
                Record::Handled {
                    playbook: pb.name.clone(),
                    handler: handler.name.clone(),
                },
            )?;
        }
        Ok(TaskOutcome::Done)
    }

    fn record(&self, run: &TaskRun<'_>, record: Record) -> Result<(), JournalError> {
        match &run.journal {
            Some(j) => j.lock().unwrap_or_else(|p| p.into_inner()).append(record),
            None => Ok(()),
        }
    }

    /// The first selected `artifact` step whose file the controller's cache
    /// lacks, found before the task's first step runs: a missing k3s binary
    /// then fails the task before it has placed any of the node's other k3s
    /// files. Steps whose `when` or parameters depend on what earlier steps
    /// record cannot be judged yet and are left to the walk.
    fn missing_artifact(&self, run: &TaskRun<'_>, pb: &Playbook) -> Option<usize> {
        pb.steps.iter().position(|step| {
            if !step.kind.as_any().is::<ArtifactParams>()
                || !step.selected(&self.opts.tags, &self.opts.skip_tags)
            {
                return false;
            }
            let env = self.step_env(run, pb, step);
            if let Some(w) = &step.when
                && !matches!(self.renderer.eval_when(&env.origin, w, &run.ctx), Ok(true))
            {
                return false;
            }
            let origin = env.origin.clone();
            let Ok(kind) = step.kind.render(
                &mut |v| env.renderer.render_value(&origin, v, env.ctx),
                &env.origin,
            ) else {
                return false;
            };
            kind.content(&env).is_err()
        })
    }

    /// Renders the steps of a host playbook that place files and learns, in
    /// one round trip per privilege level, which destinations already hold
    /// the wanted content, mode and owner. Index `i` of the result is step
    /// `i`'s rendered form and whether it is in state; steps left `None`
    /// (not a placement, not selected, `when` false, skipped by the journal,
    /// failing to render) are prepared in the walk as usual, where their
    /// errors show. Only the steps before the first `register` or `publish`
    /// take part: later ones may depend on what it records.
    async fn probe_placements(
        &self,
        run: &TaskRun<'_>,
        pb: &Playbook,
    ) -> Vec<Option<(Prepared, bool)>> {
        let mut pre: Vec<Option<(Prepared, bool)>> = pb.steps.iter().map(|_| None).collect();
        let Conn::Host { transport, .. } = run.conn else {
            return pre;
        };
        if self.opts.check {
            return pre;
        }
        // Step index, privileged, and what its destination must hold.
        let mut places: Vec<(usize, bool, String, u32, Option<String>, String)> = Vec::new();
        for (i, step) in pb.steps.iter().enumerate() {
            if step.register.is_some() || step.publish.is_some() {
                break;
            }
            if step.kind.placement().is_none()
                || !step.selected(&self.opts.tags, &self.opts.skip_tags)
            {
                continue;
            }
            let env = self.step_env(run, pb, step);
            if let Some(w) = &step.when
                && !matches!(self.renderer.eval_when(&env.origin, w, &run.ctx), Ok(true))
            {
                continue;
            }
            let Ok(prepared) = Prepared::new(&*step.kind, &env) else {
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
            let Ok(probe) = probe_files(transport, &dests, privileged).await else {
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

    fn step_env<'a>(&'a self, run: &'a TaskRun<'_>, pb: &Playbook, step: &Step) -> StepEnv<'a> {
        StepEnv {
            conn: run.conn,
            reach: run.reach,
            task_data: &run.task.data,
            task: &run.task.key,
            renderer: &self.renderer,
            data: &self.data,
            ctx: &run.ctx,
            check: self.opts.check,
            diff: self.opts.diff,
            recreate: self.opts.recreate,
            reregister: self.opts.reregister,
            state_dir: self.opts.state_dir.as_deref().filter(|_| !self.opts.check),
            privileged: step.privileged,
            origin: format!("{} step '{}'", pb.source, step.name),
        }
    }

    /// The journal hash of a rendered step: its inputs plus what its result
    /// depends on (a host's installation, and its boot for runtime state; the
    /// target otherwise).
    fn journal_hash(run: &TaskRun<'_>, step: &Step, prepared: &Prepared) -> String {
        let salt = match run.facts {
            Some(f) if step.kind.runtime_state() => format!("{}/{}", f.machine_id, f.boot_id),
            Some(f) => f.machine_id.clone(),
            None => run.task.target.to_string(),
        };
        prepared.input_hash(&salt)
    }

    /// Whether the journal says this rendered step was already applied (and may be trusted).
    fn journal_skips(
        &self,
        run: &TaskRun<'_>,
        pb: &Playbook,
        step: &Step,
        prepared: &Prepared,
        handler: bool,
    ) -> bool {
        !self.opts.force
            && !handler
            && step.register.is_none()
            && step.publish.is_none()
            && step.kind.journaled()
            && run.journal.as_ref().is_some_and(|j| {
                j.lock().unwrap_or_else(|p| p.into_inner()).is_applied(
                    &pb.name,
                    &step.name,
                    &Self::journal_hash(run, step, prepared),
                )
            })
    }

    /// Runs one step; `Ok(changed)`, or the error that fails the task.
    /// `pre` is the step already rendered by [`Shared::probe_placements`], and whether it is in state.
    async fn run_step(
        &self,
        run: &mut TaskRun<'_>,
        pb: &Playbook,
        step: &Step,
        handler: bool,
        pre: Option<(Prepared, bool)>,
    ) -> Result<bool, TaskError> {
        let task = run.task;
        *run.reach.step.lock().unwrap_or_else(|p| p.into_inner()) = step.name.clone();
        self.emit(Event::StepStarted {
            task: task.key.clone(),
            subject: task.subject.clone(),
            playbook: pb.name.clone(),
            step: step.name.clone(),
        });
        let t0 = Instant::now();
        let result = self.step_result(run, pb, step, handler, pre).await;
        let (status, message, diff, changed) = match result {
            Ok(StepOutcome::Skipped(why)) => (StepStatus::Skipped, Some(why), None, false),
            Ok(StepOutcome::Ran {
                changed,
                diff,
                warning,
            }) => (
                if changed {
                    StepStatus::Changed
                } else {
                    StepStatus::Ok
                },
                warning,
                diff,
                changed,
            ),
            Err(e) => (
                StepStatus::Failed,
                Some(self.redactor.redact(&crate::error::chain(&e))),
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
            task: task.key.clone(),
            subject: task.subject.clone(),
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
            StepStatus::Failed => Err(TaskError::Step {
                playbook: pb.name.clone(),
                step: step.name.clone(),
                message: message.unwrap_or_default(),
            }),
            _ => Ok(changed),
        }
    }

    async fn step_result(
        &self,
        run: &mut TaskRun<'_>,
        pb: &Playbook,
        step: &Step,
        handler: bool,
        pre: Option<(Prepared, bool)>,
    ) -> Result<StepOutcome, StepFailure> {
        if !handler && !step.selected(&self.opts.tags, &self.opts.skip_tags) {
            return Ok(StepOutcome::Skipped("not selected by tags".into()));
        }
        let env = self.step_env(run, pb, step);
        if let Some(w) = &step.when {
            let yes = self
                .renderer
                .eval_when(&env.origin, w, &run.ctx)
                .map_err(|e| StepFailure::Step(e.into()))?;
            if !yes {
                return Ok(StepOutcome::Skipped("`when` is false".into()));
            }
        }
        let (prepared, in_state) = match pre {
            Some(pre) => pre,
            None => (Prepared::new(&*step.kind, &env)?, false),
        };
        if self.journal_skips(run, pb, step, &prepared, handler) {
            return Ok(StepOutcome::Skipped("already applied (journal)".into()));
        }
        let hash = Self::journal_hash(run, step, &prepared);
        let report = if in_state {
            StepReport::default()
        } else {
            // A step that converges runs once more, on a new connection, when
            // the host's connection dies under it (a host stalled past its
            // keepalives, a NAT that dropped the flow); others fail the task.
            let mut rerun =
                prepared.kind.rerunnable() && matches!(run.task.target, Target::Host(_));
            loop {
                let r = tokio::select! {
                    r = prepared.apply(&env) => r,
                    () = self.cancel.aborted() => return Err(StepFailure::Interrupted),
                };
                match r {
                    Err(StepError::Transport(e @ TransportError::Connect { .. })) if rerun => {
                        rerun = false;
                        env.reach
                            .progress(&format!("{e}; connecting again to run the step once more"));
                        env.reach.reconnect_host().await?;
                    }
                    r => break r?,
                }
            }
        };
        drop(env);
        let mut published = report.outputs.clone();
        if let Some(p) = &step.publish {
            published.push(crate::playbook::kinds::Published {
                name: p.name.clone(),
                value: report.stdout.trim().to_string(),
                secret: p.secret,
            });
        }
        let items: Vec<(&str, &str, bool)> = published
            .iter()
            .map(|o| (o.name.as_str(), o.value.as_str(), o.secret))
            .collect();
        self.outputs
            .publish_all(&run.task.key, &run.task.site, &items)
            .map_err(StepFailure::Outputs)?;
        for o in published {
            if let Some(outputs) = run.ctx.get_mut("outputs").and_then(Value::as_object_mut) {
                let mine = outputs
                    .entry(run.task.key.clone())
                    .or_insert_with(|| json!({}));
                if let Some(map) = mine.as_object_mut() {
                    map.insert(o.name.clone(), Value::String(o.value.clone()));
                }
            }
            self.emit(Event::OutputPublished {
                task: run.task.key.clone(),
                name: o.name,
                secret: o.secret,
            });
        }
        if step.kind.journaled() {
            self.record(
                run,
                Record::Step {
                    playbook: pb.name.clone(),
                    step: step.name.clone(),
                    hash,
                    status: if report.changed { "changed" } else { "ok" }.into(),
                    ts: events::utc_now(),
                },
            )
            .map_err(StepFailure::Journal)?;
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
            warning: report.warning,
        })
    }
}

/// How a step that did not fail ended.
enum StepOutcome {
    Skipped(String),
    Ran {
        changed: bool,
        diff: Option<String>,
        warning: Option<String>,
    },
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
enum StepFailure {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Journal(JournalError),
    #[error(transparent)]
    Outputs(OutputsError),
    #[error("interrupted while running")]
    Interrupted,
}

/// The [`Reach`] of one task: its node's connection, its site's cluster, its
/// group slot, its subject's journal memos, and progress events.
struct TaskReach<'a> {
    shared: &'a Shared,
    task: &'a ExecTask,
    step: Mutex<String>,
    /// The group slot the task holds until it ends.
    slot: &'a GroupSlot,
    /// The subject's journal, for step memos.
    journal: Option<Arc<Mutex<Journal>>>,
}

/// Where a task keeps the slot of its group it took (until it ends).
type GroupSlot = Mutex<Option<tokio::sync::OwnedSemaphorePermit>>;

impl TaskReach<'_> {
    fn node(&self) -> Result<&str, StepError> {
        self.task.node.as_deref().ok_or_else(|| {
            StepError::Invalid(format!(
                "task {} is not about a node, so it has no node to connect to",
                self.task.key
            ))
        })
    }
}

impl Reach for TaskReach<'_> {
    fn node_host(&self) -> BoxFuture<'_, Result<Arc<dyn Transport>, StepError>> {
        async move {
            let node = self.node()?;
            let link = self
                .shared
                .targets
                .host(node)
                .await
                .map_err(|e| StepError::Invalid(crate::error::chain(&e)))?;
            Ok(link as Arc<dyn Transport>)
        }
        .boxed()
    }

    fn reconnect_host(&self) -> BoxFuture<'_, Result<(), StepError>> {
        async move {
            let node = self.node()?;
            self.shared
                .targets
                .reconnect_host(node)
                .await
                .map_err(|e| StepError::Invalid(crate::error::chain(&e)))
        }
        .boxed()
    }

    fn site_cluster(&self) -> BoxFuture<'_, Result<crate::kube::KubeConn, StepError>> {
        async move {
            self.shared
                .targets
                .kube(&Target::Cluster(self.task.site.clone()))
                .await
                .map_err(|e| StepError::Invalid(crate::error::chain(&e)))
        }
        .boxed()
    }

    fn rollout_slot(&self) -> BoxFuture<'_, Result<(), StepError>> {
        async move {
            if self
                .slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                return Ok(());
            }
            let permit = self.shared.group_slot(self.task).await?;
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = permit;
            Ok(())
        }
        .boxed()
    }

    fn recall(&self, key: &str) -> Option<String> {
        if self.shared.opts.force {
            return None;
        }
        self.journal.as_ref().and_then(|j| {
            j.lock()
                .unwrap_or_else(|p| p.into_inner())
                .memo(key)
                .map(str::to_string)
        })
    }

    fn remember(&self, key: &str, value: &str) {
        if let Some(j) = &self.journal {
            // A memo that cannot be written only costs a full check next time.
            let _ = j
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(Record::Memo {
                    key: key.to_string(),
                    value: value.to_string(),
                });
        }
    }

    fn progress(&self, message: &str) {
        self.shared.emit(Event::StepProgress {
            task: self.task.key.clone(),
            subject: self.task.subject.clone(),
            step: self.step.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            message: message.to_string(),
        });
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
