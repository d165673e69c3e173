//! The executor over local shells: the DAG walk (failures stop exactly their
//! dependants, no waves), one connection per host, journal skip and resume,
//! handlers, tags, max-fail, interruption, run-wide outputs and redaction.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::testutil::ShellTransport;
use serde_json::json;

/// Records every event.
#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collect {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Opens a recording local shell per host; no other kind of target.
#[derive(Default)]
struct TestConnector {
    /// Host → fail every request after this many.
    fail_after: Mutex<HashMap<String, usize>>,
    /// Every transport opened, in order, with its host.
    opened: Mutex<Vec<(String, Arc<ShellTransport>)>>,
}

impl Connector for TestConnector {
    fn host<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Transport>, ConnectError>> {
        Box::pin(async move {
            let t = Arc::new(match self.fail_after.lock().unwrap().get(node) {
                Some(n) => ShellTransport::failing_after(*n),
                None => ShellTransport::default(),
            });
            self.opened
                .lock()
                .unwrap()
                .push((node.to_string(), t.clone()));
            Ok(t as Arc<dyn Transport>)
        })
    }
    fn kube<'a>(
        &'a self,
        t: &'a Target,
    ) -> BoxFuture<'a, Result<crate::kube::KubeConn, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(format!("no {t} here"))) })
    }
    fn hypervisor<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<crate::virt::Session>, ConnectError>> {
        Box::pin(async move { Err(ConnectError::NotConfigured(format!("no hypervisor {name}"))) })
    }
}

struct Rig {
    dir: tempfile::TempDir,
    renderer: Arc<Renderer>,
    data: Arc<DataDir>,
    sink: Arc<Collect>,
    connector: Arc<TestConnector>,
}

const PLAYBOOK: &str = r#"
name: demo
vars:
  greeting: hello
steps:
  - name: dir
    file: { path: "{{ root }}/etc", state: directory }
  - name: config
    template: { src: app.conf.j2, dest: "{{ root }}/etc/app.conf" }
    notify: restart app
  - name: marker
    command: { cmd: "echo x >> {{ root }}/marker-runs", creates: "{{ root }}/never" }
    tags: [marker]
  - name: debian only
    command: { cmd: "touch {{ root }}/debian" }
    when: facts.os_family == "no-such-family"
handlers:
  - name: restart app
    command: { cmd: "echo restarted >> {{ root }}/restarts" }
"#;

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/templates")).unwrap();
        std::fs::write(
            dir.path().join("data/templates/app.conf.j2"),
            "greeting={{ vars.greeting }}\nname={{ node.name }}\n{% if secrets.token is defined %}token={{ secrets.token }}\n{% endif %}",
        )
        .unwrap();
        let data = DataDir::new(Some(&dir.path().join("data")));
        Rig {
            renderer: Arc::new(Renderer::new(&data).unwrap()),
            data: Arc::new(data),
            dir,
            sink: Arc::new(Collect::default()),
            connector: Arc::default(),
        }
    }

    fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// A task `layer` of node `name` running `playbook` on its host.
    fn task(&self, name: &str, layer: &str, playbook: &str) -> ExecTask {
        let root = self.root(name);
        std::fs::create_dir_all(&root).unwrap();
        ExecTask {
            key: format!("{name}/{layer}"),
            subject: name.into(),
            site: "lab".into(),
            node: Some(name.into()),
            layer: layer.into(),
            target: Target::Host(name.into()),
            playbook: Arc::new(Playbook::parse("demo.yaml", playbook).unwrap()),
            context: json!({"node": {"name": name}, "root": root.display().to_string()}),
            secrets: BTreeMap::new(),
            data: TaskData::None,
            deps: Vec::new(),
            group: None,
        }
    }

    /// One task per host, no dependencies.
    fn spec(&self, hosts: &[(&str, &str)]) -> RunSpec {
        RunSpec {
            tasks: hosts.iter().map(|(h, pb)| self.task(h, "os", pb)).collect(),
        }
    }

    fn executor(&self) -> Executor {
        Executor::new(
            self.renderer.clone(),
            self.data.clone(),
            self.connector.clone(),
            self.sink.clone(),
        )
    }

    async fn run(&self, spec: RunSpec, opts: &RunOptions) -> RunSummary {
        self.executor().run(spec, opts).await.unwrap()
    }

    fn opts(&self) -> RunOptions {
        RunOptions {
            state_dir: Some(self.dir.path().join("state")),
            ..RunOptions::default()
        }
    }

    /// [`Rig::opts`] with `--force`: every step checks the host.
    fn forced(&self) -> RunOptions {
        RunOptions {
            force: true,
            ..self.opts()
        }
    }

    fn statuses(&self, host: &str) -> Vec<(String, StepStatus)> {
        self.sink
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::StepFinished {
                    subject,
                    step,
                    status,
                    ..
                } if subject == host => Some((step, status)),
                _ => None,
            })
            .collect()
    }

    fn last_transport(&self) -> Arc<ShellTransport> {
        self.connector
            .opened
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .1
            .clone()
    }
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

use StepStatus::{Changed, Failed, Ok as Fine, Skipped};

fn st(list: &[(&str, StepStatus)]) -> Vec<(String, StepStatus)> {
    list.iter().map(|(s, x)| (s.to_string(), *x)).collect()
}

#[tokio::test]
async fn first_run_changes_second_is_skipped_by_the_journal_and_force_reruns() {
    let rig = Rig::new();
    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &rig.opts()).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Changed),
            ("config", Changed),
            ("marker", Changed),
            ("debian only", Skipped),
            ("restart app", Changed)
        ])
    );
    assert_eq!(
        read(rig.root("n1").join("etc/app.conf")),
        "greeting=hello\nname=n1\n"
    );
    assert_eq!(read(rig.root("n1").join("restarts")), "restarted\n");

    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &rig.opts()).await;
    assert_eq!(s.tasks[0].skipped, 4);
    assert_eq!(s.tasks[0].changed, 0);
    assert_eq!(read(rig.root("n1").join("marker-runs")), "x\n");

    let forced = rig.forced();
    rig.sink.take();
    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &forced).await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("config", Fine),
            ("marker", Changed),
            ("debian only", Skipped)
        ]),
        "forced: idempotent steps report ok, the handler is not notified"
    );
    assert_eq!(s.tasks[0].changed, 1);
}

#[tokio::test]
async fn a_changed_input_reruns_that_step_and_its_handler() {
    let rig = Rig::new();
    rig.run(rig.spec(&[("n1", PLAYBOOK)]), &rig.opts()).await;
    rig.sink.take();
    let edited = PLAYBOOK.replace("greeting: hello", "greeting: bonjour");
    rig.run(rig.spec(&[("n1", &edited)]), &rig.opts()).await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Changed),
            ("marker", Skipped),
            ("debian only", Skipped),
            ("restart app", Changed)
        ])
    );
    assert_eq!(
        read(rig.root("n1").join("restarts")),
        "restarted\nrestarted\n"
    );
}

const PLACEMENTS: &str = r#"
name: files
vars:
  greeting: hi
steps:
  - name: dir
    file: { path: "{{ root }}/etc", state: directory }
  - name: a.conf
    template: { src: app.conf.j2, dest: "{{ root }}/etc/a.conf" }
  - name: b.conf
    copy: { content: "b\n", dest: "{{ root }}/etc/b.conf", mode: "0600" }
  - name: c.conf
    copy: { content: "c\n", dest: "{{ root }}/etc/c.conf" }
"#;

#[tokio::test]
async fn placements_in_state_are_confirmed_by_one_probe() {
    let rig = Rig::new();
    let forced = rig.forced();
    rig.run(rig.spec(&[("n1", PLACEMENTS)]), &forced).await;
    rig.sink.take();
    let s = rig.run(rig.spec(&[("n1", PLACEMENTS)]), &forced).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("b.conf", Fine),
            ("c.conf", Fine)
        ])
    );
    let warm = rig.last_transport();
    let scripts = warm.scripts.lock().unwrap().clone();
    // Facts, the probe of the three files, the dir step: nothing per file.
    assert_eq!(scripts.len(), 3, "{scripts:#?}");
    assert!(scripts[1].contains("sha256sum --"), "{}", scripts[1]);

    // A file that drifted (other mode) is found by the probe and put back.
    let b = rig.root("n1").join("etc/b.conf");
    std::fs::set_permissions(&b, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    rig.run(rig.spec(&[("n1", PLACEMENTS)]), &forced).await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("b.conf", Changed),
            ("c.conf", Fine)
        ])
    );
    let mode = std::fs::metadata(&b).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[tokio::test]
async fn a_change_before_a_probed_file_makes_it_check_again() {
    let rig = Rig::new();
    let forced = rig.forced();
    // The command spoils b.conf after the probe found it in state.
    let playbook = PLACEMENTS.replace(
        "  - name: b.conf\n",
        "  - name: spoil b\n    command: { cmd: \"echo spoiled > {{ root }}/etc/b.conf\" }\n  - name: b.conf\n",
    );
    rig.run(rig.spec(&[("n1", &playbook)]), &forced).await;
    rig.sink.take();
    let s = rig.run(rig.spec(&[("n1", &playbook)]), &forced).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Fine),
            ("a.conf", Fine),
            ("spoil b", Changed),
            ("b.conf", Changed),
            ("c.conf", Fine)
        ])
    );
    assert_eq!(read(rig.root("n1").join("etc/b.conf")), "b\n");
}

#[tokio::test]
async fn tags_select_steps() {
    let rig = Rig::new();
    let opts = RunOptions {
        tags: vec!["marker".into()],
        state_dir: None,
        ..RunOptions::default()
    };
    rig.run(rig.spec(&[("n1", PLAYBOOK)]), &opts).await;
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Skipped),
            ("marker", Changed),
            ("debian only", Skipped)
        ])
    );
    let opts = RunOptions {
        skip_tags: vec!["marker".into()],
        state_dir: None,
        ..RunOptions::default()
    };
    rig.run(rig.spec(&[("n2", PLAYBOOK)]), &opts).await;
    assert!(!rig.root("n2").join("marker-runs").exists());
}

#[tokio::test]
async fn check_mode_changes_nothing_and_writes_no_journal() {
    let rig = Rig::new();
    let opts = RunOptions {
        check: true,
        ..rig.opts()
    };
    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &opts).await;
    assert_eq!(s.tasks[0].changed, 4, "{}", s.table());
    let events = rig.sink.take();
    let diff = events.iter().find_map(|e| match e {
        Event::StepFinished { diff: Some(d), .. } => Some(d.clone()),
        _ => None,
    });
    assert!(diff.unwrap().contains("+greeting=hello"));
    assert!(!rig.root("n1").join("etc").exists());
    assert!(!rig.dir.path().join("state/journal/n1.jsonl").exists());
}

#[tokio::test]
async fn a_failing_host_stops_its_chain_and_others_go_on() {
    let rig = Rig::new();
    let bad = PLAYBOOK.replace(
        "state: directory }",
        "state: directory }\n  - name: boom\n    command: { cmd: 'echo broken >&2; exit 4' }",
    );
    let s = rig
        .run(rig.spec(&[("bad", &bad), ("good", PLAYBOOK)]), &rig.opts())
        .await;
    assert_eq!(s.exit_code(), 1);
    assert_eq!(
        s.tasks[0].outcome,
        TaskOutcome::Failed("demo / boom: exited with status 4: broken".into())
    );
    assert_eq!((s.tasks[0].changed, s.tasks[0].failed), (1, 1));
    assert_eq!(s.tasks[1].outcome, TaskOutcome::Done);
    assert!(!rig.root("bad").join("etc/app.conf").exists());
    assert!(rig.root("good").join("etc/app.conf").exists());
    assert!(
        s.table().contains("FAILED (os): demo / boom"),
        "{}",
        s.table()
    );
}

#[tokio::test]
async fn max_fail_stops_starting_new_hosts() {
    let rig = Rig::new();
    let bad = "name: demo\nsteps:\n  - name: boom\n    command: { cmd: 'exit 1' }\n";
    let opts = RunOptions {
        parallel: 1,
        max_fail: Some(MaxFail::Count(0)),
        ..rig.opts()
    };
    let s = rig
        .run(
            rig.spec(&[("a", bad), ("b", PLAYBOOK), ("c", PLAYBOOK)]),
            &opts,
        )
        .await;
    let outcomes: Vec<_> = s.tasks.iter().map(|h| h.outcome.clone()).collect();
    assert!(matches!(outcomes[0], TaskOutcome::Failed(_)));
    for o in &outcomes[1..] {
        assert_eq!(
            *o,
            TaskOutcome::NotStarted("--max-fail was exceeded".into())
        );
    }
    assert_eq!(s.exit_code(), 1);
}

#[tokio::test]
async fn a_failed_layer_stops_its_own_later_layers_and_nothing_else() {
    let rig = Rig::new();
    let mark = |file: &str| {
        format!(
            "name: demo\nsteps:\n  - name: mark\n    command: {{ cmd: 'touch {{{{ root }}}}/{file}' }}\n"
        )
    };
    let b_done = rig.root("b").join("k3s-done");
    // a's os layer waits until b has finished *both* its layers, then fails: with
    // wave barriers b's k3s layer could not start before a's os layer ended.
    let a_os = format!(
        "name: demo\nsteps:\n  - name: wait for b then fail\n    command: {{ cmd: 'for i in $(seq 300); do [ -e {} ] && break; sleep 0.1; done; [ -e {} ] && echo saw-b > {{{{ root }}}}/saw; exit 3' }}\n",
        b_done.display(),
        b_done.display()
    );
    let mut tasks = vec![
        rig.task("a", "os", &a_os),
        rig.task("a", "k3s", &mark("a-k3s")),
        rig.task("b", "os", &mark("b-os")),
        rig.task("b", "k3s", &mark("k3s-done")),
        rig.task("a", "federation", &mark("a-fed")),
    ];
    tasks[1].deps = vec![0];
    tasks[3].deps = vec![2];
    tasks[4].deps = vec![1];
    let s = rig.run(RunSpec { tasks }, &rig.opts()).await;
    assert_eq!(read(rig.root("a").join("saw")), "saw-b\n", "{}", s.table());
    assert!(matches!(s.tasks[0].outcome, TaskOutcome::Failed(_)));
    assert_eq!(
        s.tasks[1].outcome,
        TaskOutcome::NotStarted("it needs a/os, which failed".into())
    );
    assert_eq!(
        s.tasks[4].outcome,
        TaskOutcome::NotStarted("it needs a/k3s, which did not start".into()),
        "dependants of dependants stop too"
    );
    assert!(!rig.root("a").join("a-k3s").exists());
    assert_eq!(s.tasks[2].outcome, TaskOutcome::Done);
    assert_eq!(s.tasks[3].outcome, TaskOutcome::Done);
    assert_eq!(s.failed_subjects(), 1);
    let table = s.table();
    assert!(table.contains("FAILED (os)"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b ") && l.ends_with(" ok")),
        "{table}"
    );
}

#[tokio::test]
async fn a_host_with_several_layers_is_connected_to_once() {
    let rig = Rig::new();
    let mut tasks = vec![
        rig.task("n1", "machine", "name: machine/existing\nsteps: []\n"),
        rig.task("n1", "os", PLAYBOOK),
        rig.task("n2", "os", PLAYBOOK),
    ];
    tasks[1].deps = vec![0];
    let s = rig.run(RunSpec { tasks }, &rig.opts()).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    let opened: Vec<String> = rig
        .connector
        .opened
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h.clone())
        .collect();
    assert_eq!(opened, ["n1", "n2"]);
    let facts_trips = rig.connector.opened.lock().unwrap()[0]
        .1
        .scripts
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.contains("machine_id="))
        .count();
    assert_eq!(facts_trips, 1, "facts are gathered once per host");
}

#[tokio::test]
async fn a_file_step_whose_connection_dies_runs_once_more_on_a_new_one() {
    let rig = Rig::new();
    // Each connection dies after two requests, in the middle of the steps.
    rig.connector
        .fail_after
        .lock()
        .unwrap()
        .insert("n1".into(), 2);
    let pb = r#"
name: files
vars: { greeting: hi }
steps:
  - name: dir
    file: { path: "{{ root }}/etc", state: directory }
  - name: config
    template: { src: app.conf.j2, dest: "{{ root }}/etc/app.conf" }
  - name: copy
    copy: { content: "x", dest: "{{ root }}/etc/x" }
"#;
    let s = rig.run(rig.spec(&[("n1", pb)]), &rig.opts()).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    // Every step whose connection died ran once more on a new one, which
    // was reported with its cause.
    let events = rig.sink.take();
    let reruns: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepProgress { step, message, .. }
                if message.contains("simulated") && message.contains("once more") =>
            {
                Some(step.clone())
            }
            _ => None,
        })
        .collect();
    assert!(!reruns.is_empty(), "no step was run again");
    assert_eq!(rig.connector.opened.lock().unwrap().len(), reruns.len() + 1);
    let statuses: Vec<(String, StepStatus)> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::StepFinished { step, status, .. } => Some((step, status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        st(&[("dir", Changed), ("config", Changed), ("copy", Changed)])
    );
    assert!(rig.root("n1").join("etc/app.conf").exists());
}

#[tokio::test]
async fn an_interrupted_run_resumes_where_it_stopped() {
    let rig = Rig::new();
    // Facts (1) + dir (1) + config put (1) succeed, then the connection dies.
    rig.connector
        .fail_after
        .lock()
        .unwrap()
        .insert("n1".into(), 3);
    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &rig.opts()).await;
    assert!(
        matches!(&s.tasks[0].outcome, TaskOutcome::Failed(m) if m.contains("simulated")),
        "{}",
        s.table()
    );
    assert_eq!(
        rig.statuses("n1"),
        st(&[("dir", Changed), ("config", Changed), ("marker", Failed)])
    );
    assert!(
        !rig.root("n1").join("restarts").exists(),
        "the handler never ran"
    );

    rig.connector.fail_after.lock().unwrap().clear();
    let s = rig.run(rig.spec(&[("n1", PLAYBOOK)]), &rig.opts()).await;
    assert_eq!(s.exit_code(), 0);
    assert_eq!(
        rig.statuses("n1"),
        st(&[
            ("dir", Skipped),
            ("config", Skipped),
            ("marker", Changed),
            ("debian only", Skipped),
            ("restart app", Changed)
        ]),
        "applied steps are skipped; the handler notified before the failure runs"
    );
    assert_eq!(read(rig.root("n1").join("restarts")), "restarted\n");
}

#[tokio::test]
async fn stop_lets_the_running_step_finish_and_starts_nothing_new() {
    let rig = Rig::new();
    let slow = "name: demo\nsteps:\n  - name: slow\n    command: { cmd: 'sleep 0.5; touch {{ root }}/slow-done' }\n  - name: after\n    command: { cmd: 'touch {{ root }}/after' }\n";
    let ex = rig.executor();
    let cancel = ex.cancel_handle();
    let opts = RunOptions {
        parallel: 1,
        ..rig.opts()
    };
    // Stop (as Ctrl-C does) once the slow step is under way on host a.
    let sink = rig.sink.clone();
    let stopper = tokio::spawn(async move {
        loop {
            let started = sink.0.lock().unwrap().iter().any(
                |e| matches!(e, Event::StepStarted { subject, step, .. } if subject == "a" && step == "slow"),
            );
            if started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.stop();
    });
    let s = ex
        .run(rig.spec(&[("a", slow), ("b", slow)]), &opts)
        .await
        .unwrap();
    stopper.await.unwrap();
    assert_eq!(s.exit_code(), 130);
    assert!(
        rig.root("a").join("slow-done").exists(),
        "the running step finished"
    );
    assert!(!rig.root("a").join("after").exists());
    assert_eq!(s.tasks[0].outcome, TaskOutcome::Interrupted);
    assert_eq!(
        s.tasks[1].outcome,
        TaskOutcome::NotStarted("the run was interrupted".into())
    );
    let journal = read(rig.dir.path().join("state/journal/a.jsonl"));
    assert!(
        journal.contains("\"step\":\"slow\""),
        "the finished step is journalled: {journal}"
    );
}

#[tokio::test]
async fn secrets_never_reach_events() {
    let rig = Rig::new();
    let token = "K10-very-secret-token";
    let leaky = PLAYBOOK.replace(
        "handlers:",
        "  - name: leak\n    command: { cmd: 'echo \"bad {{ secrets.token }}\" >&2; exit 1' }\nhandlers:",
    );
    let mut spec = rig.spec(&[("n1", &leaky)]);
    spec.tasks[0].secrets.insert("token".into(), token.into());
    let opts = RunOptions {
        diff: true,
        ..rig.opts()
    };
    let s = rig.run(spec, &opts).await;
    assert!(
        read(rig.root("n1").join("etc/app.conf")).contains(token),
        "the secret is used on the host"
    );
    let events = serde_json::to_string(&rig.sink.take()).unwrap();
    assert!(
        events.contains("+token=********"),
        "the diff is shown, redacted: {events}"
    );
    assert!(
        events.contains("bad ********"),
        "the failure is shown, redacted: {events}"
    );
    assert!(!events.contains(token), "{events}");
    assert!(!s.table().contains(token));
}

#[tokio::test]
async fn the_os_playbook_in_check_mode_on_this_machine_fails_nothing_and_changes_nothing() {
    let data = DataDir::Embedded;
    let renderer = Arc::new(Renderer::new(&data).unwrap());
    let text = data.read_text("playbooks/os.yaml").unwrap();
    let pb = Arc::new(Playbook::parse("playbooks/os.yaml", &text).unwrap());
    let hosts_before = std::fs::read("/etc/hosts").ok();
    let sink = Arc::new(Collect::default());
    let ex = Executor::new(
        renderer,
        Arc::new(data),
        Arc::new(TestConnector::default()),
        sink.clone(),
    );
    let task = ExecTask {
        key: "edge-1/os".into(),
        subject: "edge-1".into(),
        site: "store-1".into(),
        node: Some("edge-1".into()),
        layer: "os".into(),
        target: Target::Host("edge-1".into()),
        playbook: pb,
        context: json!({
            "node": {"name": "edge-1", "role": "server", "address": "10.0.0.5"},
            "cluster": {"name": "store-1", "nodes": [
                {"name": "edge-1", "address": "10.0.0.5"}, {"name": "edge-2", "address": "10.0.0.6"}
            ]},
        }),
        secrets: BTreeMap::new(),
        data: TaskData::None,
        deps: Vec::new(),
        group: None,
    };
    let opts = RunOptions {
        check: true,
        diff: true,
        ..RunOptions::default()
    };
    let s = ex.run(RunSpec { tasks: vec![task] }, &opts).await.unwrap();
    let events = sink.take();
    assert_eq!(s.exit_code(), 0, "{}\n{events:#?}", s.table());
    assert_eq!(std::fs::read("/etc/hosts").ok(), hosts_before);
    let diff = events
        .iter()
        .find_map(|e| match e {
            Event::StepFinished { step, diff, .. }
                if step == "/etc/hosts with the cluster's nodes" =>
            {
                diff.clone()
            }
            _ => None,
        })
        .unwrap_or_default();
    assert!(diff.contains("+10.0.0.6\tedge-2"), "{diff}");
    let status = |name: &str| {
        events.iter().find_map(|e| match e {
            Event::StepFinished { step, status, .. } if step == name => Some(*status),
            _ => None,
        })
    };
    assert_eq!(
        status("hostname"),
        Some(StepStatus::Changed),
        "this machine is not edge-1"
    );
    assert_eq!(
        status("service account"),
        Some(StepStatus::Skipped),
        "not asked for"
    );
}

#[tokio::test]
async fn a_registered_output_is_visible_to_later_steps() {
    let rig = Rig::new();
    let pb = "name: demo\nsteps:\n  - name: ask\n    command: { cmd: 'echo 42' }\n    register: answer\n  - name: use\n    copy: { content: \"{{ vars.answer.stdout }}\", dest: \"{{ root }}/answer\" }\n";
    let s = rig.run(rig.spec(&[("n1", pb)]), &rig.opts()).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(read(rig.root("n1").join("answer")), "42");
    // A step with `register` always runs, so its output exists on every run.
    let s = rig.run(rig.spec(&[("n1", pb)]), &rig.opts()).await;
    assert_eq!(
        (s.tasks[0].changed, s.tasks[0].skipped),
        (1, 1),
        "{}",
        s.table()
    );
}

const TOKEN_FIRST: &str = r#"
name: first
steps:
  - name: cluster token
    secret: { name: token }
  - name: ca hash
    command: { cmd: "echo abc123" }
    publish: ca_hash
  - name: token file
    copy: { content: "{{ outputs[\"n1/k3s\"].token }}", dest: "{{ root }}/token", mode: "0600" }
"#;

const TOKEN_JOINER: &str = r#"
name: joiner
steps:
  - name: join config
    copy:
      content: "server-token: {{ outputs[\"n1/k3s\"].token }}\nca: {{ outputs[\"n1/k3s\"].ca_hash }}\n"
      dest: "{{ root }}/join.conf"
"#;

#[tokio::test]
async fn a_secret_output_reaches_a_later_task_and_nothing_else_and_survives_the_run() {
    let rig = Rig::new();
    let mut tasks = vec![
        rig.task("n1", "k3s", TOKEN_FIRST),
        rig.task("n2", "k3s", TOKEN_JOINER),
    ];
    tasks[1].deps = vec![0];
    let s = rig.run(RunSpec { tasks }, &rig.opts()).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    let token = read(rig.root("n1").join("token"));
    assert_eq!(token.len(), 64, "32 random bytes, hex: {token}");
    assert_eq!(
        read(rig.root("n2").join("join.conf")),
        format!("server-token: {token}\nca: abc123\n")
    );
    let events = serde_json::to_string(&rig.sink.take()).unwrap();
    assert!(!events.contains(&token), "{events}");
    assert!(
        events.contains("\"event\":\"output_published\""),
        "{events}"
    );
    let state = rig.dir.path().join("state");
    for journal in std::fs::read_dir(state.join("journal")).unwrap() {
        let text = read(journal.unwrap().path());
        assert!(!text.is_empty() && !text.contains(&token), "{text}");
    }
    let mode = std::fs::metadata(state.join("outputs/n1_k3s.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    // A later run of the joiner alone (as after an interruption, or with
    // --limit) still gets the token, and the first server keeps its token.
    std::fs::remove_file(rig.root("n2").join("join.conf")).unwrap();
    let s = rig
        .run(
            RunSpec {
                tasks: vec![rig.task("n2", "k3s", TOKEN_JOINER)],
            },
            &rig.forced(),
        )
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert!(read(rig.root("n2").join("join.conf")).contains(&token));
    let s = rig
        .run(
            RunSpec {
                tasks: vec![rig.task("n1", "k3s", TOKEN_FIRST)],
            },
            &rig.opts(),
        )
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(
        read(rig.root("n1").join("token")),
        token,
        "the token is generated once"
    );
}

#[tokio::test]
async fn an_undefined_output_is_an_error_naming_it() {
    let rig = Rig::new();
    let s = rig
        .run(
            RunSpec {
                tasks: vec![rig.task("n2", "k3s", TOKEN_JOINER)],
            },
            &rig.opts(),
        )
        .await;
    let TaskOutcome::Failed(e) = &s.tasks[0].outcome else {
        panic!("{}", s.table());
    };
    assert!(
        e.contains("outputs[\"n1/k3s\"]") || e.contains("n1/k3s"),
        "{e}"
    );
}

#[tokio::test]
async fn flush_handlers_runs_notified_handlers_at_its_place_and_only_once() {
    let rig = Rig::new();
    let pb = r#"
name: flush
steps:
  - name: config
    copy: { content: "a=1\n", dest: "{{ root }}/app.conf" }
    notify: restart app
  - name: flush
    flush_handlers: {}
  - name: after the restart
    command: { cmd: "echo after >> {{ root }}/log" }
handlers:
  - name: restart app
    command: { cmd: "echo restart >> {{ root }}/log" }
"#;
    let s = rig.run(rig.spec(&[("n1", pb)]), &rig.opts()).await;
    assert_eq!(s.exit_code(), 0);
    // The handler ran before the step after the flush, and not again at the end.
    assert_eq!(read(rig.root("n1").join("log")), "restart\nafter\n");
    // Nothing changed: the handler is not notified, so nothing restarts.
    let s = rig.run(rig.spec(&[("n1", pb)]), &rig.forced()).await;
    assert_eq!(s.exit_code(), 0);
    assert_eq!(read(rig.root("n1").join("log")), "restart\nafter\nafter\n");
}

/// A task in group `group` whose steps are `steps` (YAML), on its own host.
fn grouped(
    rig: &Rig,
    name: &str,
    steps: &str,
    group: &str,
    limit: usize,
    after: Option<&str>,
) -> ExecTask {
    let mut t = rig.task(name, "k3s", &format!("name: roll\nsteps:\n{steps}"));
    t.group = Some(TaskGroup {
        name: group.into(),
        limit,
        after: after.map(str::to_string),
    });
    t
}

/// Takes the group slot (cordon, in check mode it touches no cluster), then
/// proves that no other member holds one: the lock directory is its own.
const HOLD_SLOT: &str = r#"  - name: cordon
    node_cordon: { name: "{{ node.name }}" }
  - name: alone
    probe: { cmd: "mkdir {{ root }}/../slot && sleep 0.2 && rmdir {{ root }}/../slot" }
"#;

#[tokio::test]
async fn a_group_lets_limit_members_out_of_service_at_once() {
    let rig = Rig::new();
    let tasks = ["n1", "n2", "n3"]
        .iter()
        .map(|n| grouped(&rig, n, HOLD_SLOT, "site/s/agents", 1, None))
        .collect();
    let opts = RunOptions {
        check: true,
        ..rig.opts()
    };
    let s = rig.run(RunSpec { tasks }, &opts).await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
}

#[tokio::test]
async fn a_group_stops_at_its_first_failure_and_leaves_the_rest_untouched() {
    let rig = Rig::new();
    let has_slot = rig.dir.path().join("n1-has-slot");
    let flag = rig.dir.path().join("n2-queued");
    // n1 takes the slot, waits until n2 comes for one, then fails; n2 must
    // then refuse to go on, without touching its node.
    let n1 = grouped(
        &rig,
        "n1",
        &format!(
            "  - name: cordon\n    node_cordon: {{ name: n1 }}\n  - name: holds it\n    \
             probe: {{ cmd: \"touch {h}\" }}\n  - name: does not come back\n    \
             probe: {{ cmd: \"while [ ! -e {f} ]; do sleep 0.05; done; exit 3\" }}\n",
            h = has_slot.display(),
            f = flag.display()
        ),
        "site/s/servers",
        1,
        None,
    );
    let n2 = grouped(
        &rig,
        "n2",
        &format!(
            "  - name: queue\n    probe: {{ cmd: \"while [ ! -e {h} ]; do sleep 0.05; done; touch {f}\" }}\n  \
             - name: cordon\n    node_cordon: {{ name: n2 }}\n  - name: upgrade\n    \
             probe: {{ cmd: \"touch {{{{ root }}}}/upgraded\" }}\n",
            h = has_slot.display(),
            f = flag.display()
        ),
        "site/s/servers",
        1,
        None,
    );
    // An agent group after the servers: it stops too, before its slot.
    let a1 = grouped(
        &rig,
        "a1",
        "  - name: cordon\n    node_cordon: { name: a1 }\n  - name: upgrade\n    probe: { cmd: \"touch {{ root }}/upgraded\" }\n",
        "site/s/agents",
        1,
        Some("site/s/servers"),
    );
    let opts = RunOptions {
        check: true,
        ..rig.opts()
    };
    let s = rig
        .run(
            RunSpec {
                tasks: vec![n1, n2, a1],
            },
            &opts,
        )
        .await;
    let outcome = |i: usize| match &s.tasks[i].outcome {
        TaskOutcome::Failed(e) => e.clone(),
        other => panic!("task {i}: {other:?}"),
    };
    assert!(
        outcome(0).contains("exited with status 3"),
        "{}",
        outcome(0)
    );
    let n2_err = outcome(1);
    assert!(
        n2_err.contains(
            "n2 was left untouched: the rollout of site/s/servers stopped because n1/k3s failed"
        ),
        "{n2_err}"
    );
    let a1_err = outcome(2);
    assert!(
        a1_err.contains(
            "a1 was left untouched: the rollout of site/s/agents stopped because n1/k3s failed"
        ),
        "{a1_err}"
    );
    assert!(!rig.root("n2").join("upgraded").exists());
    assert!(!rig.root("a1").join("upgraded").exists());
}

#[tokio::test]
async fn a_group_after_another_waits_for_all_of_it() {
    let rig = Rig::new();
    let log = rig.dir.path().join("order");
    let step = |what: &str| {
        format!(
            "  - name: cordon\n    node_cordon: {{ name: x }}\n  - name: log\n    probe: {{ cmd: \"echo {what} >> {l}\" }}\n",
            l = log.display()
        )
    };
    // The agent is listed first and has no dependency: only the group order holds it.
    let a1 = grouped(&rig, "a1", &step("agent"), "g/agents", 5, Some("g/servers"));
    let s1 = grouped(&rig, "s1", &step("server-1"), "g/servers", 1, None);
    let mut s2 = grouped(&rig, "s2", &step("server-2"), "g/servers", 1, None);
    s2.deps = vec![1];
    let opts = RunOptions {
        check: true,
        ..rig.opts()
    };
    let s = rig
        .run(
            RunSpec {
                tasks: vec![a1, s1, s2],
            },
            &opts,
        )
        .await;
    assert_eq!(s.exit_code(), 0, "{}", s.table());
    assert_eq!(read(log), "server-1\nserver-2\nagent\n");
}
